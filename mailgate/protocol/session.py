"""What the POP3, IMAP and SMTP client sessions share before login (SPEC 4).

The three protocols run the same machine: commands read from the client
until one asks the auth server, SASL exchanges stepped one client line at a
time, tokenizer errors counted towards max_errors, a STARTTLS that drops the
plaintext pipelined after it, and one driver interface (the contract in
``mailgate.protocol.base``). ``PreAuthSession`` holds that machine; each
protocol module keeps its own state table, tokenizer and replies, and fills
in the hooks:

* ``start()``: the greeting;
* ``_handle_next()``: handle the next buffered command or SASL line;
* ``_parse_sasl_response(line)``: the SASL response tokenizer;
* ``_invalid_command()``: the invalid-command reply (IMAP's is tagged);
* ``_auth_failure(message, error_code)``: the reply to a refused login;
* ``_loggable_command(head)``: a too long command, shown without secrets;
* class attributes ``protocol``, ``_continuation`` (what precedes a SASL
  challenge) and ``_internal_error_reply``.

``LineSession`` adds the line-at-a-time input of POP3 and SMTP; IMAP reads
whole commands, literals included (``imap_parse.CommandReader``).

States every protocol has (POP3 adds ``user``)::

    start --AUTH/AUTHENTICATE <mechanism>--> sasl --response--> sasl | authenticating
    sasl --SASL failure or parse error--> start
    authenticating --auth_failed()--> start
    start --STARTTLS/STLS--> starttls --tls_started()--> start
    any --too many errors, too long command, auth_rejected()--> closed
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

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
)

# --- client states ------------------------------------------------------------------

START: Final = "start"  # the initial auth state
SASL: Final = "sasl"  # the next line is a SASL response
AUTHENTICATING: Final = "authenticating"  # Authenticate sent; the driver decides
STARTTLS_STATE: Final = "starttls"  # StartTLS sent; waiting for tls_started()
CLOSED: Final = "closed"

# --- limits -----------------------------------------------------------------

# Bytes of a too long command quoted in the log. nginx quotes its whole
# buffer; a 4k line would be cut by the 2048-byte log line limit (SPEC 10.1)
# anyway, so quote a readable head only.
LOGGED_COMMAND_MAX: Final = 256

# --- settings ---------------------------------------------------------------------

STARTTLS_MODES: Final = ("off", "on", "only")


class SessionSettings(Protocol):
    """The fields every protocol's settings dataclass has. Properties, since
    the dataclasses are frozen."""

    @property
    def auth_methods(self) -> tuple[str, ...]: ...
    @property
    def starttls(self) -> str: ...
    @property
    def tls_active(self) -> bool: ...
    @property
    def max_errors(self) -> int: ...
    @property
    def client_buffer(self) -> int: ...
    @property
    def server_name(self) -> str: ...
    @property
    def proxy_buffer(self) -> int: ...


def check_settings(settings: SessionSettings, known_methods: Sequence[str], directive: str) -> None:
    """The checks of every settings ``__post_init__``: ValueError for values
    a session cannot work with. ``known_methods`` are the protocol's auth
    methods, ``directive`` names its *_auth directive in the message."""
    if settings.starttls not in STARTTLS_MODES:
        raise ValueError(f"starttls must be one of {STARTTLS_MODES}, not {settings.starttls!r}")
    unknown = [method for method in settings.auth_methods if method not in known_methods]
    if unknown:
        raise ValueError(f"unknown {directive} methods {unknown}")
    if settings.max_errors < 0:
        raise ValueError(f"max_errors must not be negative, not {settings.max_errors}")
    if settings.client_buffer < 1 or settings.proxy_buffer < 1:
        raise ValueError("client_buffer and proxy_buffer must be positive")


# --- client input -------------------------------------------------------------------


class ClientInput(Protocol):
    """Client bytes buffered and not yet handled: ``LineBuffer`` or IMAP's
    ``CommandReader``."""

    def feed(self, data: bytes) -> None: ...
    def take(self) -> bytes: ...
    def clear(self) -> None: ...


def loggable_head(line: bytes) -> str:
    """``line`` for a log message, cut after ``LOGGED_COMMAND_MAX`` bytes
    with ``...`` marking the cut."""
    if len(line) > LOGGED_COMMAND_MAX:
        return text(line[:LOGGED_COMMAND_MAX]) + "..."
    return text(line)


SettingsT = TypeVar("SettingsT", bound=SessionSettings)
InputT = TypeVar("InputT", bound=ClientInput)


# --- the client session ---------------------------------------------------------------


class PreAuthSession(ABC, Generic[SettingsT, InputT]):
    """A client before login (see the module docstring for the hooks).

    ``salt_random`` and ``clock`` feed the APOP/CRAM-MD5 salt (SPEC 3.4);
    tests pass fixed ones.
    """

    protocol: ClassVar[str]
    _continuation: ClassVar[bytes]  # before a base64 SASL challenge and CRLF
    _internal_error_reply: ClassVar[bytes]
    # States in which client input is handled; in the others it waits
    # (authenticating), is dropped (starttls) or is ignored (closed).
    _reading: ClassVar[frozenset[str]] = frozenset({START, SASL})

    def __init__(
        self,
        settings: SettingsT,
        client_input: InputT,
        salt_random: Callable[[], int] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self._input = client_input
        self._salt_random = salt_random
        self._clock = clock
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

    @abstractmethod
    def start(self) -> list[Event]:
        """The greeting events."""

    def receive_data(self, data: bytes) -> list[Event]:
        if self._state == STARTTLS_STATE:
            # Plaintext that followed STARTTLS: dropped, never handled after TLS.
            return []
        if self._state != CLOSED:
            self._input.feed(data)
        return self._run()

    def tls_started(self) -> list[Event]:
        """The STARTTLS handshake is done: back to the initial state with no
        new greeting (SPEC 5.2, 6.3; RFC 3207); the capability lists no
        longer offer STARTTLS."""
        self._tls = True
        if self._state == STARTTLS_STATE:
            self._state = START
        return self._run()

    def auth_failed(self, message: str, error_code: str = "") -> list[Event]:
        """The auth server refused, the client may try again (SPEC 8.5)."""
        if self._state != AUTHENTICATING:
            raise RuntimeError(f"auth_failed() in state {self._state!r}")
        self._state = START
        self._send(self._auth_failure(message, error_code))
        return self._run()

    def auth_rejected(self, message: str, error_code: str = "") -> list[Event]:
        """Send the auth server's error as ``auth_failed`` does, then close
        (SPEC 8.5)."""
        self._send(self._auth_failure(message, error_code))
        self._close()
        return self._flush()

    def internal_error(self) -> list[Event]:
        """The protocol's internal error reply, then close (SPEC 8.6)."""
        self._send(self._internal_error_reply)
        self._close()
        return self._flush()

    def pending_input(self) -> bytes:
        """Client bytes received after the command that led to the login, to
        be forwarded to the backend verbatim (SPEC 4.3). The buffer is left
        empty."""
        return self._input.take()

    # --- input handling ---

    def _run(self) -> list[Event]:
        while self._state in self._reading and self._handle_next():
            pass
        return self._flush()

    @abstractmethod
    def _handle_next(self) -> bool:
        """Handle the next buffered command or SASL line; False when none is
        complete yet (after refusing one that cannot fit)."""

    @abstractmethod
    def _parse_sasl_response(self, line: bytes) -> bytes | None:
        """The SASL response token of ``line``, None for a parse error."""

    def _sasl_line(self, line: bytes) -> None:
        response = self._parse_sasl_response(line)
        if response is None:
            self._parse_error()
            return
        self._sasl_step(lambda exchange: exchange.respond(response))

    def _start_sasl(self, args: Sequence[bytes]) -> None:
        """AUTH/AUTHENTICATE ``<mechanism> [<initial response>]``, refused
        when the mechanism is unknown or not enabled."""
        selected = sasl.select_mechanism(args, self.settings.auth_methods)
        if selected is None:
            self._reject()
            return
        mechanism, initial_response = selected
        self._exchange = sasl.SaslExchange(mechanism, self._salt_for(mechanism))
        self._sasl_step(lambda exchange: exchange.start(initial_response))

    def _sasl_step(self, step: Callable[[sasl.SaslExchange], sasl.Step]) -> None:
        exchange = self._exchange
        assert exchange is not None
        try:
            result = step(exchange)
        except sasl.SaslFailure as failure:
            # The login seen so far is kept for the log (SPEC 4.4).
            self._remember_login(exchange)
            self._emit(Log("info", failure.message))
            self._reject()
            return
        self._remember_login(exchange)
        if isinstance(result, sasl.Challenge):
            self._state = SASL
            self._send(self._continuation + result.data + b"\r\n")
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
            self._send(self._invalid_command())
            self._close()
            return
        self._reject()

    def _too_long(self, head: bytes) -> None:
        """A command or SASL line that cannot fit, ``head`` its buffered
        start. Not counted as an error; always fatal (SPEC 4.1)."""
        # A SASL response is all secret: nothing of it is shown.
        shown = "..." if self._state == SASL else self._loggable_command(head)
        self._emit(Log("info", f'client sent too long command "{shown}"'))
        self._send(self._invalid_command())
        self._close()

    @abstractmethod
    def _loggable_command(self, head: bytes) -> str:
        """The head of a too long command for the log, with anything that
        may hold a password or a SASL token left out."""

    # --- used by the handlers ---

    def _starttls_only(self) -> bool:
        return self.settings.starttls == "only" and not self._tls

    def _advertised(self, normal: bytes, with_starttls: bytes, starttls_only: bytes) -> bytes:
        """The capability list for the starttls mode: STARTTLS is offered
        until TLS is active, and with ``only`` the logins are withheld."""
        if self._tls or self.settings.starttls == "off":
            return normal
        if self.settings.starttls == "on":
            return with_starttls
        return starttls_only

    def _start_tls(self, reply: bytes) -> bool:
        """STARTTLS/STLS: ``reply``, then the StartTLS event; refused (False)
        when TLS is active already or starttls is off."""
        if self._tls or self.settings.starttls == "off":
            self._reject()
            return False
        self._send(reply)
        # Commands pipelined after STARTTLS must not survive into the TLS
        # session (RFC 2595 section 4, RFC 3207 section 4.2, RFC 9051
        # section 6.2.1; CVE-2014-3556, SPEC 4.3).
        self._input.clear()
        self._state = STARTTLS_STATE
        self._emit(StartTLS())
        return True

    def _salt_for(self, mechanism: str) -> str:
        # Made at the first CRAM-MD5 attempt and reused by later ones (SPEC 3.4).
        if mechanism == sasl.CRAM_MD5 and not self._salt:
            self._salt = self._make_salt()
        return self._salt

    def _make_salt(self) -> str:
        return sasl.make_salt(self.settings.server_name, self._salt_random, self._clock)

    @abstractmethod
    def _invalid_command(self) -> bytes:
        """The reply to a refused command or SASL response."""

    @abstractmethod
    def _auth_failure(self, message: str, error_code: str) -> bytes:
        """The reply to a login the auth server refused (SPEC 8.5)."""

    def _reject(self) -> None:
        """The invalid-command reply; back to the initial state and any SASL
        exchange aborted (SPEC 4.5)."""
        self._state = START
        self._exchange = None
        self._send(self._invalid_command())

    def _authenticate(self, credentials: Credentials) -> None:
        self._login = credentials.login
        self._exchange = None
        self._state = AUTHENTICATING
        self._emit(Authenticate(credentials))

    def _close(self) -> None:
        self._state = CLOSED
        self._exchange = None
        self._input.clear()
        self._emit(Close())

    def _send(self, data: bytes) -> None:
        self._events.append(Send(data))

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _flush(self) -> list[Event]:
        events, self._events = self._events, []
        return events


def refuse(session: PreAuthSession[Any, Any], argument: object) -> None:
    """The state-table handler of a verb the tokenizer knows but the state
    does not take: the invalid-command reply, not counted as an error."""
    session._reject()


class LineSession(PreAuthSession[SettingsT, LineBuffer]):
    """A session whose client input is lines (POP3, SMTP): in ``sasl`` a line
    is the client's SASL response, otherwise a command for ``_command_line``."""

    def __init__(
        self,
        settings: SettingsT,
        salt_random: Callable[[], int] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(settings, LineBuffer(settings.client_buffer), salt_random, clock)

    def _handle_next(self) -> bool:
        line = self._input.pop_line()
        if line is None:
            if self._input.too_long:
                self._too_long(self._input.peek(self._input.limit))
            return False
        if self._state == SASL:
            self._sasl_line(line)
        else:
            self._command_line(line)
        return True

    @abstractmethod
    def _command_line(self, line: bytes) -> None:
        """Tokenize a command line and dispatch it through the state table."""
