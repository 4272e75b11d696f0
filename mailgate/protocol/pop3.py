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
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final

from mailgate.protocol import sasl
from mailgate.protocol.base import (
    Authenticate,
    Close,
    Credentials,
    Event,
    LineBuffer,
    Log,
    Send,
    StartTLS,
    text,
    wire,
)
from mailgate.protocol.capabilities import Pop3Lists, pop3_lists
from mailgate.protocol.pop3_parse import (
    APOP,
    AUTH,
    CAPA,
    NOOP,
    PASS,
    QUIT,
    STLS,
    USER,
    Args,
    parse_command,
    parse_sasl_response,
)
from mailgate.protocol.pop3_upstream import DEFAULT_PROXY_BUFFER, Pop3UpstreamLogin

__all__ = ["Pop3Session", "Pop3Settings", "Pop3UpstreamLogin"]

# --- limits -----------------------------------------------------------------

# pop3_client_buffer default. nginx's fixed 128 bytes cannot hold long SASL
# tokens (nginx PR 1590); mailgate makes it a directive (SPEC "Do better").
DEFAULT_CLIENT_BUFFER: Final = 4096
# Bytes of a too long command quoted in the log. nginx quotes its whole
# 128-byte buffer; a 4k line would be cut by the 2048-byte log line limit
# (SPEC 10.1) anyway, so quote a readable head only.
LOGGED_COMMAND_MAX: Final = 256

# --- replies (SPEC Appendix A) ------------------------------------------------

GREETING: Final = b"+OK POP3 ready"
OK: Final = b"+OK\r\n"
INVALID_COMMAND: Final = b"-ERR invalid command\r\n"
INTERNAL_ERROR: Final = b"-ERR internal server error\r\n"
CONTINUATION: Final = b"+ "  # RFC 5034 section 4: "+" SP base64 CRLF

# --- settings ---------------------------------------------------------------------

STARTTLS_MODES: Final = ("off", "on", "only")
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
        if self.starttls not in STARTTLS_MODES:
            raise ValueError(f"starttls must be one of {STARTTLS_MODES}, not {self.starttls!r}")
        unknown = [method for method in self.auth_methods if method not in AUTH_METHODS]
        if unknown:
            raise ValueError(f"unknown pop3_auth methods {unknown}")
        if self.max_errors < 0:
            raise ValueError(f"max_errors must not be negative, not {self.max_errors}")
        if self.client_buffer < 1 or self.proxy_buffer < 1:
            raise ValueError("client_buffer and proxy_buffer must be positive")

    @property
    def uses_salt(self) -> bool:
        """APOP and CRAM-MD5 need the salt, shown in the greeting (SPEC 3.4)."""
        return "apop" in self.auth_methods or "cram-md5" in self.auth_methods


@functools.lru_cache(maxsize=64)
def _lists_for(settings: Pop3Settings) -> Pop3Lists:
    # Built once per settings object, as nginx builds them at config time.
    return pop3_lists(settings.capabilities, settings.auth_methods)


# --- client states ------------------------------------------------------------------

START: Final = "start"  # the initial auth state
USER_STATE: Final = "user"  # after a successful USER
SASL: Final = "sasl"  # the next line is a SASL response
AUTHENTICATING: Final = "authenticating"  # Authenticate sent; the driver decides
STARTTLS: Final = "starttls"  # StartTLS sent; waiting for tls_started()
CLOSED: Final = "closed"

# States in which client lines are handled; in the others input waits
# (authenticating), is dropped (starttls) or is ignored (closed).
_READING: Final = frozenset({START, USER_STATE, SASL})

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
    s._authenticate(Credentials(sasl.PLAIN, s._login, text(args[0])))


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
    selected = sasl.select_mechanism(args, s.settings.auth_methods)
    if selected is None:
        s._reject()
        return
    mechanism, initial_response = selected
    s._exchange = sasl.SaslExchange(mechanism, s._salt)
    s._sasl_step(lambda exchange: exchange.start(initial_response))


def _capa(s: Pop3Session, args: Args) -> None:
    s._send(s._capa_list())


def _capa_user_state(s: Pop3Session, args: Args) -> None:
    # Never the STLS variants after USER, even before TLS (Appendix B 9).
    s._send(s._lists.capa)


def _noop(s: Pop3Session, args: Args) -> None:
    s._send(OK)


def _quit(s: Pop3Session, args: Args) -> None:
    s._send(OK)
    s._close()


def _stls(s: Pop3Session, args: Args) -> None:
    if s._tls or s.settings.starttls == "off":
        s._reject()
        return
    s._send(OK)
    # Commands pipelined after STLS must not survive into the TLS session
    # (RFC 2595 section 4, CVE-2014-3556, SPEC 4.3).
    s._buffer.clear()
    s._state = STARTTLS
    s._emit(StartTLS())


def _reject(s: Pop3Session, args: Args) -> None:
    s._reject()


# state -> verb -> handler. A verb the tokenizer knows but the state lacks is
# refused with the invalid-command reply (not counted as an error) and, in the
# USER state, sends the session back to the initial state (Appendix B 9).
_COMMANDS: Final[dict[str, dict[bytes, Handler]]] = {
    START: {
        USER: _user,
        PASS: _reject,
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


class Pop3Session:
    """A POP3 client before login (see the module docstring for the states).

    ``salt_random`` and ``clock`` feed the greeting's salt (SPEC 3.4); tests
    pass fixed ones.
    """

    protocol: ClassVar[str] = "pop3"

    def __init__(
        self,
        settings: Pop3Settings,
        salt_random: Callable[[], int] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self._lists = _lists_for(settings)
        self._salt_random = salt_random
        self._clock = clock
        self._buffer = LineBuffer(settings.client_buffer)
        self._state: str = START
        self._tls = settings.tls_active
        self._errors = 0
        self._login = ""
        self._salt = ""
        self._exchange: sasl.SaslExchange | None = None
        self._events: list[Event] = []

    # --- driver interface ---

    @property
    def login(self) -> str:
        """The login known so far, kept after failed attempts (SPEC 4.4)."""
        return self._login

    @property
    def state(self) -> str:
        return self._state

    @property
    def tls_active(self) -> bool:
        return self._tls

    def start(self) -> list[Event]:
        """The greeting, with the salt when APOP or CRAM-MD5 is enabled."""
        if not self.settings.uses_salt:
            return [Send(GREETING + b"\r\n")]
        self._salt = sasl.make_salt(self.settings.server_name, self._salt_random, self._clock)
        return [Send(GREETING + b" " + wire(self._salt))]

    def receive_data(self, data: bytes) -> list[Event]:
        if self._state == STARTTLS:
            # Plaintext that followed STLS: dropped, never handled after TLS.
            return []
        if self._state != CLOSED:
            self._buffer.feed(data)
        return self._run()

    def tls_started(self) -> list[Event]:
        """The STLS handshake is done: back to the initial state with no new
        greeting (SPEC 5.2); CAPA now shows the normal list."""
        self._tls = True
        if self._state == STARTTLS:
            self._state = START
        return self._run()

    def auth_failed(self, message: str, error_code: str = "") -> list[Event]:
        """The auth server refused, the client may try again (SPEC 8.5)."""
        if self._state != AUTHENTICATING:
            raise RuntimeError(f"auth_failed() in state {self._state!r}")
        self._state = START
        self._send(b"-ERR " + wire(message) + b"\r\n")
        return self._run()

    def auth_rejected(self, message: str, error_code: str = "") -> list[Event]:
        """Send the auth server's error, then close (SPEC 8.5)."""
        self._send(b"-ERR " + wire(message) + b"\r\n")
        self._close()
        return self._flush()

    def internal_error(self) -> list[Event]:
        """``-ERR internal server error``, then close (SPEC 8.6)."""
        self._send(INTERNAL_ERROR)
        self._close()
        return self._flush()

    def pending_input(self) -> bytes:
        """Client bytes received after the login command, to be forwarded to
        the backend verbatim (SPEC 4.3). The buffer is left empty."""
        return self._buffer.take()

    def upstream_login(
        self, login: str, password: str, *, client_ip: str = "", client_host: str = ""
    ) -> Pop3UpstreamLogin:
        return Pop3UpstreamLogin(login, password, self.settings.proxy_buffer)

    # --- line handling ---

    def _run(self) -> list[Event]:
        while self._state in _READING:
            line = self._buffer.pop_line()
            if line is None:
                if self._buffer.too_long:
                    self._too_long()
                break
            if self._state == SASL:
                self._sasl_line(line)
            else:
                self._command_line(line)
        return self._flush()

    def _command_line(self, line: bytes) -> None:
        command = parse_command(line)
        if command is None:
            self._parse_error()
            return
        handler = _COMMANDS[self._state].get(command.verb, _reject)
        handler(self, command.args)

    def _sasl_line(self, line: bytes) -> None:
        response = parse_sasl_response(line)
        if response is None:
            self._parse_error()
            return
        self._sasl_step(lambda exchange: exchange.respond(response))

    def _sasl_step(self, step: Callable[[sasl.SaslExchange], sasl.Step]) -> None:
        exchange = self._exchange
        assert exchange is not None
        try:
            result = step(exchange)
        except sasl.SaslFailure as failure:
            self._remember_login(exchange)
            self._emit(Log("info", failure.message))
            self._reject()
            return
        self._remember_login(exchange)
        if isinstance(result, sasl.Challenge):
            self._state = SASL
            self._send(CONTINUATION + result.data + b"\r\n")
        else:
            self._authenticate(result)

    def _remember_login(self, exchange: sasl.SaslExchange) -> None:
        if exchange.login is not None:
            self._login = exchange.login

    def _parse_error(self) -> None:
        # Only tokenizer errors count towards max_errors; the one reaching the
        # limit is still answered, then the session closes (SPEC 4.5).
        self._errors += 1
        if self._errors >= self.settings.max_errors:
            self._emit(Log("info", "client sent too many invalid commands"))
            self._send(INVALID_COMMAND)
            self._close()
            return
        self._reject()

    def _too_long(self) -> None:
        # Not counted as an error; always fatal (SPEC 4.1).
        shown = self._loggable_command(self._buffer.peek(self._buffer.limit))
        self._emit(Log("info", f'client sent too long command "{shown}"'))
        self._send(INVALID_COMMAND)
        self._close()

    def _loggable_command(self, line: bytes) -> str:
        """The head of a too long line for the log, with anything that may
        hold a password or a SASL token left out."""
        if self._state == SASL:
            return "..."
        secret = _SECRET_VERB.match(line)
        if secret:
            return text(secret.group(1)) + " ..."
        mechanism = _AUTH_MECHANISM.match(line[:LOGGED_COMMAND_MAX])
        if mechanism:
            return text(mechanism.group()) + " ..."
        if len(line) > LOGGED_COMMAND_MAX:
            return text(line[:LOGGED_COMMAND_MAX]) + "..."
        return text(line)

    # --- used by the handlers ---

    def _starttls_only(self) -> bool:
        return self.settings.starttls == "only" and not self._tls

    def _capa_list(self) -> bytes:
        if self._tls or self.settings.starttls == "off":
            return self._lists.capa
        if self.settings.starttls == "on":
            return self._lists.capa_starttls
        return self._lists.capa_starttls_only

    def _reject(self) -> None:
        """The invalid-command reply; the USER state is left and any SASL
        exchange aborted (SPEC 4.5)."""
        self._state = START
        self._exchange = None
        self._send(INVALID_COMMAND)

    def _authenticate(self, credentials: Credentials) -> None:
        self._login = credentials.login
        self._exchange = None
        self._state = AUTHENTICATING
        self._emit(Authenticate(credentials))

    def _close(self) -> None:
        self._state = CLOSED
        self._exchange = None
        self._buffer.clear()
        self._emit(Close())

    def _send(self, data: bytes) -> None:
        self._events.append(Send(data))

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _flush(self) -> list[Event]:
        events, self._events = self._events, []
        return events
