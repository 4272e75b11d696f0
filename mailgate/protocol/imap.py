"""IMAP before login: the client-side session.

SPEC 6; RFC 9051 / RFC 3501 (IMAP), RFC 4959 (SASL-IR), RFC 7888
(LITERAL+), RFC 2971 (ID). A sans-IO state machine following the driver
contract in ``mailgate.protocol.base``; the tokenizer is ``imap_parse``, the
backend side ``ImapUpstreamLogin`` (``imap_upstream``) and the settings
``ImapSettings`` (``imap_settings``), both re-exported here.

Client states (SPEC 6.3)::

    start --LOGIN, AUTHENTICATE PLAIN <ir>, ...--> authenticating
    start --AUTHENTICATE <mechanism>--> sasl --response--> sasl | authenticating
    sasl --SASL failure or parse error--> start
    authenticating --auth_failed()--> start
    start --STARTTLS--> starttls --tls_started()--> start
    any --LOGOUT, too many errors, too long command, auth_rejected()--> closed

In ``start`` a command is dispatched through ``_COMMANDS`` (state -> verb ->
handler); in ``sasl`` a line is the client's SASL response. Every reply but
continuations carries the tag of the command it answers; the tag of
AUTHENTICATE is kept through the SASL exchange and for the final NO. What
IMAP shares with POP3 and SMTP (the driver interface, SASL stepping, error
counting, STARTTLS) is ``session.PreAuthSession``.

Where nginx trips clients, mailgate does better (SPEC "Do better", PEERS.md):
``ID`` before login is answered (``* ID NIL``) instead of being a parse
error; a bad base64 user name in AUTHENTICATE LOGIN gets the normal tagged
BAD, not nginx's untagged ``BAD invalid command``; an unparsable tag after a
failed login is answered with ``*``, not with a stale tag length; ``{0}``
and unterminated quoted strings do not break later commands (``imap_parse``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import ClassVar, Final

from mailgate.protocol.base import Credentials, Event, Log, Send, text, wire
from mailgate.protocol.imap_parse import (
    AUTHENTICATE,
    CAPABILITY,
    ID,
    LOGIN,
    LOGOUT,
    NOOP,
    STARTTLS,
    Command,
    CommandReader,
    IdParams,
    LiteralContinuation,
    ParseError,
    TooLong,
)
from mailgate.protocol.imap_settings import ImapSettings, capabilities_for
from mailgate.protocol.imap_upstream import ImapUpstreamLogin
from mailgate.protocol.pop3_parse import parse_sasl_response
from mailgate.protocol.sasl import PLAIN
from mailgate.protocol.session import CLOSED, SASL, START, PreAuthSession, loggable_head, refuse

__all__ = ["ImapSession", "ImapSettings", "ImapUpstreamLogin"]

# --- replies (SPEC Appendix A) ------------------------------------------------

GREETING: Final = b"* OK IMAP4 ready\r\n"
OK: Final = b"OK completed\r\n"
INVALID_COMMAND: Final = b"BAD invalid command\r\n"
INTERNAL_ERROR: Final = b"* BAD internal server error\r\n"
BYE: Final = b"* BYE\r\n"
LITERAL_CONTINUATION: Final = b"+ OK\r\n"
CONTINUATION: Final = b"+ "  # RFC 9051 section 7.5: "+" SP base64 CRLF
UNTAGGED: Final = b"*"  # the tag of replies to a command whose tag is unknown
# RFC 2971 section 3.2: a server with nothing to tell answers NIL.
ID_RESPONSE: Final = b"* ID NIL\r\n"

Handler = Callable[["ImapSession", Command], None]


# --- command handlers (SPEC 6.3) ------------------------------------------------------


def _capability(s: ImapSession, command: Command) -> None:
    line = s._advertised(
        s._capabilities.normal, s._capabilities.starttls, s._capabilities.starttls_only
    )
    s._send(line + s._tagged(OK))


def _noop(s: ImapSession, command: Command) -> None:
    s._send(s._tagged(OK))


def _logout(s: ImapSession, command: Command) -> None:
    s._send(BYE + s._tagged(OK))
    s._close()


def _starttls(s: ImapSession, command: Command) -> None:
    s._start_tls(s._tagged(OK))


def _login(s: ImapSession, command: Command) -> None:
    # RFC 3501 section 6.2.3: refused before TLS when LOGINDISABLED is shown.
    if s._starttls_only() or len(command.args) != 2 or not command.args[0]:
        s._reject()
        return
    login, password = command.args
    for value, what in ((login, "login"), (password, "password")):
        if b"\r" in value or b"\n" in value:
            # Only a literal can carry them. Refused as sasl.py refuses them
            # in decoded SASL data, so that no credential mailgate accepts
            # holds a line break, whatever command carried it: the login is
            # written into log lines, and LOGIN and AUTHENTICATE PLAIN must
            # accept the same credentials.
            s._emit(Log("info", f"client sent invalid {what} in LOGIN command"))
            s._reject()
            return
    s._authenticate(Credentials(PLAIN, text(login), text(password)))


def _authenticate(s: ImapSession, command: Command) -> None:
    if s._starttls_only():
        s._reject()
        return
    # An initial response is accepted whether or not SASL-IR (RFC 4959) is
    # advertised: mutt and others send it regardless (PEERS.md).
    s._start_sasl(command.args)


def _id(s: ImapSession, command: Command) -> None:
    # RFC 2971: allowed in any state; the client's fields are kept.
    s._client_id = command.params
    s._send(ID_RESPONSE + s._tagged(OK))


# state -> verb -> handler. A verb the tokenizer knows but the state lacks is
# refused with the invalid-command reply (not counted as an error). SASL
# responses are lines, not commands.
_COMMANDS: Final[dict[str, dict[bytes, Handler]]] = {
    START: {
        CAPABILITY: _capability,
        NOOP: _noop,
        LOGOUT: _logout,
        STARTTLS: _starttls,
        LOGIN: _login,
        AUTHENTICATE: _authenticate,
        ID: _id,
    },
}

# What a too long command may show in the log: never LOGIN's arguments or a
# SASL token, so only the tag and verb (and mechanism) of those commands.
_SECRET_COMMAND: Final = re.compile(
    rb"(?i)[^ \r\n]* +(?:LOGIN|AUTHENTICATE(?: +[A-Z0-9_-]{1,20}(?= ))?)(?=[ \r\n]|\Z)"
)


# --- the client session ---------------------------------------------------------------


class ImapSession(PreAuthSession[ImapSettings, CommandReader]):
    """An IMAP client before login (see the module docstring for the states).

    ``salt_random`` and ``clock`` feed the CRAM-MD5 salt (SPEC 3.4); tests
    pass fixed ones.
    """

    protocol: ClassVar[str] = "imap"
    _continuation: ClassVar[bytes] = CONTINUATION
    _internal_error_reply: ClassVar[bytes] = INTERNAL_ERROR

    def __init__(
        self,
        settings: ImapSettings,
        salt_random: Callable[[], int] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(settings, CommandReader(settings.client_buffer), salt_random, clock)
        self._capabilities = capabilities_for(settings)
        self._tag: bytes | None = None  # of the command being answered
        self._client_id: IdParams = ()

    # --- driver interface ---

    @property
    def client_id(self) -> IdParams:
        """The (field, value) pairs of the client's last ID command."""
        return self._client_id

    def start(self) -> list[Event]:
        """The greeting; server_name is not shown (SPEC 3.4)."""
        return [Send(GREETING)]

    def upstream_login(
        self, login: str, password: str, *, client_ip: str = "", client_host: str = ""
    ) -> ImapUpstreamLogin:
        """The backend login, with the tag of the client's login command."""
        if self._tag is None:
            raise RuntimeError("upstream_login() before a login command")
        return ImapUpstreamLogin(text(self._tag), login, password, self.settings.proxy_buffer)

    # --- input handling ---

    def _handle_next(self) -> bool:
        if self._state == SASL:
            line = self._input.read_line()
            if line is None:
                return False
            if isinstance(line, TooLong):
                self._too_long(line.head)
            else:
                self._sasl_line(line)
            return True
        reading = self._input.read_command()
        if reading is None:
            return False
        self._handle(reading)
        return True

    def _handle(self, reading: Command | LiteralContinuation | ParseError | TooLong) -> None:
        if isinstance(reading, LiteralContinuation):
            # Sent untagged as soon as the literal is announced (SPEC 6.1).
            self._send(LITERAL_CONTINUATION)
        elif isinstance(reading, Command):
            self._tag = reading.tag
            handler: Handler = _COMMANDS[self._state].get(reading.verb, refuse)
            handler(self, reading)
        elif isinstance(reading, ParseError):
            self._tag = reading.tag
            self._parse_error(close=reading.close)
        else:
            self._tag = reading.tag
            self._too_long(reading.head)

    def _parse_sasl_response(self, line: bytes) -> bytes | None:
        # The first token, and at most three as in POP3 (SPEC 4.4).
        return parse_sasl_response(line)

    def _parse_error(self, close: bool = False) -> None:
        super()._parse_error()
        if close and self._state != CLOSED:
            # The bad line announced a non-synchronising literal: its bytes
            # cannot be told from commands, so nginx closes (SPEC 6.1).
            self._close()

    def _loggable_command(self, head: bytes) -> str:
        secret = _SECRET_COMMAND.match(head)
        if secret:
            return text(secret.group()) + " ..."
        return loggable_head(head)

    # --- replies ---

    def _tagged(self, reply: bytes) -> bytes:
        """``reply`` after the current command's tag, or ``*`` (SPEC 6.2)."""
        return (self._tag if self._tag is not None else UNTAGGED) + b" " + reply

    def _invalid_command(self) -> bytes:
        # Tagged, also for a bad AUTHENTICATE LOGIN user name, where nginx
        # sends a bare "BAD invalid command" (Appendix B item 6).
        return self._tagged(INVALID_COMMAND)

    def _auth_failure(self, message: str, error_code: str) -> bytes:
        return self._tagged(b"NO " + wire(message) + b"\r\n")
