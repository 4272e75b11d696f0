"""POP3 before login: the client-side session.

SPEC 5; RFC 1939 (POP3), RFC 2449 (CAPA), RFC 5034 (POP3 SASL), RFC 2595
(STLS). A sans-IO state machine following the driver contract in
``mailgate.protocol.base``; the backend side is ``Pop3UpstreamLogin``
(``pop3_upstream``), re-exported here.

Client states (SPEC 5.2)::

    start --USER--> user --PASS--> authenticating --auth_failed()--> start
    start --APOP, AUTH PLAIN <ir>, ...--> authenticating
    start --AUTH <mechanism>--> sasl --response--> sasl | authenticating
    user, sasl --invalid command or SASL failure--> start
    start --STLS--> starttls --tls_started()--> start
    any --QUIT, too many errors, too long command, auth_rejected()--> closed

In ``start`` and ``user`` a line is a command dispatched through ``_COMMANDS``
(state -> verb -> handler); in ``sasl`` it is the client's SASL response.
What POP3 shares with IMAP and SMTP (the driver interface, SASL stepping,
error counting, STLS) is ``session.LineSession``; this module holds its
state table, replies and settings.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final

from mailgate.protocol.base import Credentials, Event, Send, text, wire
from mailgate.protocol.capabilities import Pop3Lists, pop3_lists
from mailgate.protocol.line_parse import Args
from mailgate.protocol.pop3_parse import (
    APOP,
    AUTH,
    CAPA,
    NOOP,
    PASS,
    QUIT,
    STLS,
    USER,
    parse_command,
    parse_sasl_response,
)
from mailgate.protocol.pop3_upstream import Pop3UpstreamLogin
from mailgate.protocol.sasl import PLAIN
from mailgate.protocol.session import (
    LOGGED_COMMAND_MAX,
    SASL,
    START,
    LineSession,
    check_settings,
    loggable_head,
    refuse,
)
from mailgate.protocol.upstream_login import DEFAULT_PROXY_BUFFER

__all__ = ["Pop3Session", "Pop3Settings", "Pop3UpstreamLogin"]

# --- limits -----------------------------------------------------------------

# pop3_client_buffer default. nginx's fixed 128 bytes cannot hold long SASL
# tokens (nginx PR 1590); mailgate makes it a directive (SPEC "Do better").
DEFAULT_CLIENT_BUFFER: Final = 4096

# --- replies (SPEC Appendix A) ------------------------------------------------

GREETING: Final = b"+OK POP3 ready"
OK: Final = b"+OK\r\n"
INVALID_COMMAND: Final = b"-ERR invalid command\r\n"
INTERNAL_ERROR: Final = b"-ERR internal server error\r\n"
CONTINUATION: Final = b"+ "  # RFC 5034 section 4: "+" SP base64 CRLF

# --- settings ---------------------------------------------------------------------

AUTH_METHODS: Final = ("plain", "apop", "cram-md5", "external")


@dataclass(frozen=True, slots=True)
class Pop3Settings:
    """What a POP3 session needs from its server's configuration.

    ``auth_methods`` are pop3_auth values in lower case; ``capabilities`` the
    pop3_capabilities values as written; ``tls_active`` is True on a
    ``listen ... ssl`` connection; ``client_buffer`` is pop3_client_buffer,
    the longest command line accepted, CRLF included; ``proxy_buffer`` is the
    longest backend response line during the backend login.
    """

    auth_methods: tuple[str, ...] = ("plain",)
    capabilities: tuple[str, ...] = ("TOP", "USER", "UIDL")
    starttls: str = "off"
    tls_active: bool = False
    max_errors: int = 5
    client_buffer: int = DEFAULT_CLIENT_BUFFER
    server_name: str = "localhost"
    proxy_buffer: int = DEFAULT_PROXY_BUFFER

    def __post_init__(self) -> None:
        check_settings(self, AUTH_METHODS, "pop3_auth")

    @property
    def uses_salt(self) -> bool:
        """APOP and CRAM-MD5 need the salt, shown in the greeting (SPEC 3.4)."""
        return "apop" in self.auth_methods or "cram-md5" in self.auth_methods


@functools.lru_cache(maxsize=64)
def _lists_for(settings: Pop3Settings) -> Pop3Lists:
    # Built once per settings object, as nginx builds them at config time.
    return pop3_lists(settings.capabilities, settings.auth_methods)


# --- client states (the others are in session) ------------------------------------

USER_STATE: Final = "user"  # after a successful USER

Handler = Callable[["Pop3Session", Args], None]


# --- command handlers (SPEC 5.2) ------------------------------------------------------


def _user(s: Pop3Session, args: Args) -> None:
    if s._starttls_only() or len(args) != 1:
        s._reject()
        return
    s._login = text(args[0])
    s._state = USER_STATE
    s._send(OK)


def _pass(s: Pop3Session, args: Args) -> None:
    if len(args) != 1:
        s._reject()
        return
    s._authenticate(Credentials(PLAIN, s._login, text(args[0])))


def _apop(s: Pop3Session, args: Args) -> None:
    # RFC 1939 section 7: APOP name digest, the digest keyed by the greeting's salt.
    if s._starttls_only() or len(args) != 2 or "apop" not in s.settings.auth_methods:
        s._reject()
        return
    s._login = text(args[0])
    s._authenticate(Credentials("apop", s._login, text(args[1]), salt=s._salt))


def _auth(s: Pop3Session, args: Args) -> None:
    if s._starttls_only():
        s._reject()
        return
    if not args:
        s._send(s._lists.auth)
        return
    s._start_sasl(args)


def _capa(s: Pop3Session, args: Args) -> None:
    s._send(s._advertised(s._lists.capa, s._lists.capa_starttls, s._lists.capa_starttls_only))


def _capa_user_state(s: Pop3Session, args: Args) -> None:
    # Never the STLS variants after USER, even before TLS (Appendix B 9).
    s._send(s._lists.capa)


def _noop(s: Pop3Session, args: Args) -> None:
    s._send(OK)


def _quit(s: Pop3Session, args: Args) -> None:
    s._send(OK)
    s._close()


def _stls(s: Pop3Session, args: Args) -> None:
    s._start_tls(OK)


# state -> verb -> handler. A verb the tokenizer knows but the state lacks is
# refused with the invalid-command reply (not counted as an error) and, in the
# USER state, sends the session back to the initial state (Appendix B 9).
_COMMANDS: Final[dict[str, dict[bytes, Handler]]] = {
    START: {
        USER: _user,
        PASS: refuse,
        APOP: _apop,
        AUTH: _auth,
        CAPA: _capa,
        NOOP: _noop,
        QUIT: _quit,
        STLS: _stls,
    },
    USER_STATE: {
        PASS: _pass,
        CAPA: _capa_user_state,
        NOOP: _noop,
        QUIT: _quit,
    },
}

_SECRET_VERB = re.compile(rb"(?i)(PASS|APOP) ")
_AUTH_MECHANISM = re.compile(rb"(?i)AUTH +[^ ]+(?= )")


# --- the client session ---------------------------------------------------------------


class Pop3Session(LineSession[Pop3Settings]):
    """A POP3 client before login (see the module docstring for the states).

    ``salt_random`` and ``clock`` feed the greeting's salt (SPEC 3.4); tests
    pass fixed ones.
    """

    protocol: ClassVar[str] = "pop3"
    _continuation: ClassVar[bytes] = CONTINUATION
    _internal_error_reply: ClassVar[bytes] = INTERNAL_ERROR
    # After USER the next line is a command too (PASS, or any other).
    _reading: ClassVar[frozenset[str]] = frozenset({START, USER_STATE, SASL})

    def __init__(
        self,
        settings: Pop3Settings,
        salt_random: Callable[[], int] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(settings, salt_random, clock)
        self._lists = _lists_for(settings)

    # --- driver interface ---

    def start(self) -> list[Event]:
        """The greeting, with the salt when APOP or CRAM-MD5 is enabled."""
        if not self.settings.uses_salt:
            return [Send(GREETING + b"\r\n")]
        self._salt = self._make_salt()
        return [Send(GREETING + b" " + wire(self._salt))]

    def upstream_login(
        self, login: str, password: str, *, client_ip: str = "", client_host: str = ""
    ) -> Pop3UpstreamLogin:
        return Pop3UpstreamLogin(login, password, self.settings.proxy_buffer)

    # --- hooks of LineSession ---

    def _command_line(self, line: bytes) -> None:
        command = parse_command(line)
        if command is None:
            self._parse_error()
            return
        handler: Handler = _COMMANDS[self._state].get(command.verb, refuse)
        handler(self, command.args)

    def _parse_sasl_response(self, line: bytes) -> bytes | None:
        return parse_sasl_response(line)

    def _loggable_command(self, head: bytes) -> str:
        secret = _SECRET_VERB.match(head)
        if secret:
            return text(secret.group(1)) + " ..."
        mechanism = _AUTH_MECHANISM.match(head[:LOGGED_COMMAND_MAX])
        if mechanism:
            return text(mechanism.group()) + " ..."
        return loggable_head(head)

    def _invalid_command(self) -> bytes:
        return INVALID_COMMAND

    def _auth_failure(self, message: str, error_code: str) -> bytes:
        return b"-ERR " + wire(message) + b"\r\n"

    def _salt_for(self, mechanism: str) -> str:
        # POP3 shows its salt in the greeting (made in start()), and the
        # CRAM-MD5 challenge carries the same one (SPEC 3.4).
        return self._salt
