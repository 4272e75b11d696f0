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
AUTHENTICATE is kept through the SASL exchange and for the final NO.

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

from mailgate.protocol import sasl
from mailgate.protocol.base import (
    Authenticate,
    Close,
    Credentials,
    Event,
    Log,
    Send,
    StartTLS,
    text,
    wire,
)
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

__all__ = ["ImapSession", "ImapSettings", "ImapUpstreamLogin"]

# --- limits -----------------------------------------------------------------

# Bytes of a too long command quoted in the log (SPEC 10.1 cuts log lines at
# 2048 bytes anyway).
LOGGED_COMMAND_MAX: Final = 256

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

# --- client states ------------------------------------------------------------------

START: Final = "start"  # the initial auth state
SASL: Final = "sasl"  # the next line is a SASL response
AUTHENTICATING: Final = "authenticating"  # Authenticate sent; the driver decides
STARTTLS_STATE: Final = "starttls"  # StartTLS sent; waiting for tls_started()
CLOSED: Final = "closed"

# States in which client input is handled; in the others it waits
# (authenticating), is dropped (starttls) or is ignored (closed).
_READING: Final = frozenset({START, SASL})

Handler = Callable[["ImapSession", Command], None]


# --- command handlers (SPEC 6.3) ------------------------------------------------------


def _capability(s: ImapSession, command: Command) -> None:
    s._send(s._capability_line() + s._tagged(OK))


def _noop(s: ImapSession, command: Command) -> None:
    s._send(s._tagged(OK))


def _logout(s: ImapSession, command: Command) -> None:
    s._send(BYE + s._tagged(OK))
    s._close()


def _starttls(s: ImapSession, command: Command) -> None:
    if s._tls or s.settings.starttls == "off":
        s._reject()
        return
    s._send(s._tagged(OK))
    # Commands pipelined after STARTTLS must not survive into the TLS
    # session (RFC 9051 section 6.2.1, CVE-2014-3556, SPEC 4.3).
    s._reader.clear()
    s._state = STARTTLS_STATE
    s._emit(StartTLS())


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
    s._authenticate(Credentials(sasl.PLAIN, text(login), text(password)))


def _authenticate(s: ImapSession, command: Command) -> None:
    if s._starttls_only():
        s._reject()
        return
    # An initial response is accepted whether or not SASL-IR (RFC 4959) is
    # advertised: mutt and others send it regardless (PEERS.md).
    selected = sasl.select_mechanism(command.args, s.settings.auth_methods)
    if selected is None:
        s._reject()
        return
    mechanism, initial_response = selected
    if mechanism == sasl.CRAM_MD5 and not s._salt:
        # Made at the first CRAM-MD5 attempt and reused (SPEC 3.4).
        s._salt = sasl.make_salt(s.settings.server_name, s._salt_random, s._clock)
    s._exchange = sasl.SaslExchange(mechanism, s._salt)
    s._sasl_step(lambda exchange: exchange.start(initial_response))


def _id(s: ImapSession, command: Command) -> None:
    # RFC 2971: allowed in any state; the client's fields are kept.
    s._client_id = command.params
    s._send(ID_RESPONSE + s._tagged(OK))


def _refuse(s: ImapSession, command: Command) -> None:
    s._reject()


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


class ImapSession:
    """An IMAP client before login (see the module docstring for the states).

    ``salt_random`` and ``clock`` feed the CRAM-MD5 salt (SPEC 3.4); tests
    pass fixed ones.
    """

    protocol: ClassVar[str] = "imap"

    def __init__(
        self,
        settings: ImapSettings,
        salt_random: Callable[[], int] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self._capabilities = capabilities_for(settings)
        self._salt_random = salt_random
        self._clock = clock
        self._reader = CommandReader(settings.client_buffer)
        self._state: str = START
        self._tls = settings.tls_active
        self._errors = 0
        self._tag: bytes | None = None  # of the command being answered
        self._login = ""
        self._salt = ""
        self._client_id: IdParams = ()
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

    @property
    def client_id(self) -> IdParams:
        """The (field, value) pairs of the client's last ID command."""
        return self._client_id

    def start(self) -> list[Event]:
        """The greeting; server_name is not shown (SPEC 3.4)."""
        return [Send(GREETING)]

    def receive_data(self, data: bytes) -> list[Event]:
        if self._state == STARTTLS_STATE:
            # Plaintext that followed STARTTLS: dropped, never handled after TLS.
            return []
        if self._state != CLOSED:
            self._reader.feed(data)
        return self._run()

    def tls_started(self) -> list[Event]:
        """The STARTTLS handshake is done: back to the initial state with no
        new greeting (SPEC 6.3); CAPABILITY now shows the normal line."""
        self._tls = True
        if self._state == STARTTLS_STATE:
            self._state = START
        return self._run()

    def auth_failed(self, message: str, error_code: str = "") -> list[Event]:
        """The auth server refused, the client may try again (SPEC 8.5)."""
        if self._state != AUTHENTICATING:
            raise RuntimeError(f"auth_failed() in state {self._state!r}")
        self._state = START
        self._send(self._tagged(b"NO " + wire(message) + b"\r\n"))
        return self._run()

    def auth_rejected(self, message: str, error_code: str = "") -> list[Event]:
        """Send the auth server's error, then close (SPEC 8.5)."""
        self._send(self._tagged(b"NO " + wire(message) + b"\r\n"))
        self._close()
        return self._flush()

    def internal_error(self) -> list[Event]:
        """``* BAD internal server error``, then close (SPEC 8.6)."""
        self._send(INTERNAL_ERROR)
        self._close()
        return self._flush()

    def pending_input(self) -> bytes:
        """Client bytes received after the login command, to be forwarded to
        the backend verbatim (SPEC 4.3). The buffer is left empty."""
        return self._reader.take()

    def upstream_login(
        self, login: str, password: str, *, client_ip: str = "", client_host: str = ""
    ) -> ImapUpstreamLogin:
        """The backend login, with the tag of the client's login command."""
        if self._tag is None:
            raise RuntimeError("upstream_login() before a login command")
        return ImapUpstreamLogin(text(self._tag), login, password, self.settings.proxy_buffer)

    # --- input handling ---

    def _run(self) -> list[Event]:
        while self._state in _READING:
            if self._state == SASL:
                line = self._reader.read_line()
                if line is None:
                    break
                if isinstance(line, TooLong):
                    self._too_long(line)
                else:
                    self._sasl_line(line)
                continue
            reading = self._reader.read_command()
            if reading is None:
                break
            self._handle(reading)
        return self._flush()

    def _handle(self, reading: Command | LiteralContinuation | ParseError | TooLong) -> None:
        if isinstance(reading, LiteralContinuation):
            # Sent untagged as soon as the literal is announced (SPEC 6.1).
            self._send(LITERAL_CONTINUATION)
        elif isinstance(reading, Command):
            self._tag = reading.tag
            handler = _COMMANDS[self._state].get(reading.verb, _refuse)
            handler(self, reading)
        elif isinstance(reading, ParseError):
            self._tag = reading.tag
            self._parse_error(close=reading.close)
        else:
            self._tag = reading.tag
            self._too_long(reading)

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
            # Tagged, also for a bad AUTHENTICATE LOGIN user name, where
            # nginx sends a bare "BAD invalid command" (Appendix B item 6).
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

    def _parse_error(self, close: bool = False) -> None:
        # Only tokenizer errors count towards max_errors; the one reaching the
        # limit is still answered, then the session closes (SPEC 4.5).
        self._errors += 1
        if self._errors >= self.settings.max_errors:
            self._emit(Log("info", "client sent too many invalid commands"))
            self._send(self._tagged(INVALID_COMMAND))
            self._close()
            return
        self._reject()
        if close:
            # The bad line announced a non-synchronising literal: its bytes
            # cannot be told from commands, so nginx closes (SPEC 6.1).
            self._close()

    def _too_long(self, too_long: TooLong) -> None:
        # Not counted as an error; always fatal (SPEC 4.1).
        shown = self._loggable_command(too_long.head)
        self._emit(Log("info", f'client sent too long command "{shown}"'))
        self._send(self._tagged(INVALID_COMMAND))
        self._close()

    def _loggable_command(self, head: bytes) -> str:
        """The head of a too long command for the log, with anything that
        may hold a password or a SASL token left out."""
        if self._state == SASL:
            return "..."
        secret = _SECRET_COMMAND.match(head)
        if secret:
            return text(secret.group()) + " ..."
        if len(head) > LOGGED_COMMAND_MAX:
            return text(head[:LOGGED_COMMAND_MAX]) + "..."
        return text(head)

    # --- used by the handlers ---

    def _starttls_only(self) -> bool:
        return self.settings.starttls == "only" and not self._tls

    def _capability_line(self) -> bytes:
        if self._tls or self.settings.starttls == "off":
            return self._capabilities.normal
        if self.settings.starttls == "on":
            return self._capabilities.starttls
        return self._capabilities.starttls_only

    def _tagged(self, reply: bytes) -> bytes:
        """``reply`` after the current command's tag, or ``*`` (SPEC 6.2)."""
        return (self._tag if self._tag is not None else UNTAGGED) + b" " + reply

    def _reject(self) -> None:
        """The tagged invalid-command reply; any SASL exchange is aborted
        (SPEC 4.5)."""
        self._state = START
        self._exchange = None
        self._send(self._tagged(INVALID_COMMAND))

    def _authenticate(self, credentials: Credentials) -> None:
        self._login = credentials.login
        self._exchange = None
        self._state = AUTHENTICATING
        self._emit(Authenticate(credentials))

    def _close(self) -> None:
        self._state = CLOSED
        self._exchange = None
        self._reader.clear()
        self._emit(Close())

    def _send(self, data: bytes) -> None:
        self._events.append(Send(data))

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _flush(self) -> list[Event]:
        events, self._events = self._events, []
        return events
