"""SMTP before login: the client-side session of the submission and relay proxy.

SPEC 7; RFC 5321 (SMTP), RFC 4954 (AUTH), RFC 3207 (STARTTLS), RFC 2920
(PIPELINING). A sans-IO state machine following the driver contract in
``mailgate.protocol.base``; the backend side is ``SmtpUpstreamLogin``
(``smtp_upstream``), re-exported here.

Client states::

    start --AUTH PLAIN <ir>, ...--> authenticating --auth_failed()--> start
    start --AUTH <mechanism>--> sasl --response--> sasl | authenticating
    start --MAIL (smtp_auth none), then the first RCPT--> authenticating
    sasl --invalid command or SASL failure--> start
    start --STARTTLS--> starttls --tls_started()--> start
    any --QUIT, too many errors, too long command, auth_rejected()--> closed

In ``start`` a line is a command dispatched through ``_COMMANDS`` (state ->
verb -> handler); in ``sasl`` it is the client's SASL response. Commands are
handled one at a time and answered in order, so a pipelined batch (RFC 2920)
gets its replies in order (SPEC 4.3).

CHUNKING and BINARYMIME (RFC 3030) are never advertised, even when listed in
smtp_capabilities (``capabilities.SMTP_WITHHELD_KEYWORDS``), which nginx
would copy verbatim. Before login the tokenizer cannot parse BDAT (nor
DATA): with ``smtp_auth none`` a client pipelining ``MAIL``, ``RCPT`` and
``BDAT`` gets its BDAT refused whenever the first RCPT is refused, and the
binary chunk that follows is then read as commands; nginx even answered and
closed, silently losing the mail (Mailu issue 1766). After an authenticated
login the bytes would pass through, but the EHLO list the client acted on is
mailgate's, not the backend's, so nothing guarantees the backend takes BDAT.
A client that never sees CHUNKING sends DATA, which always works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final

from mailgate.protocol import sasl
from mailgate.protocol import smtp_settings as replies
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
from mailgate.protocol.smtp_parse import (
    AUTH,
    EHLO,
    EXPN,
    HELO,
    HELP,
    MAIL,
    NOOP,
    QUIT,
    RCPT,
    RSET,
    STARTTLS,
    VRFY,
    Command,
    loggable,
    loggable_command,
    parse_command,
    parse_sasl_response,
    without_sasl_data,
)
from mailgate.protocol.smtp_settings import AUTH_NONE, SmtpSettings, failure_reply, lists_for
from mailgate.protocol.smtp_upstream import (
    INTERNAL_ERROR,
    UNAVAILABLE,
    NoPasswordAvailable,
    SmtpLoginParams,
    SmtpUpstreamLogin,
    backend_password,
)

__all__ = [
    "NoPasswordAvailable",
    "SmtpLoginParams",
    "SmtpSession",
    "SmtpSettings",
    "SmtpUpstreamLogin",
]

# --- client states ------------------------------------------------------------------

START: Final = "start"  # the initial auth state
SASL: Final = "sasl"  # the next line is a SASL response
AUTHENTICATING: Final = "authenticating"  # Authenticate sent; the driver decides
STARTTLS_STATE: Final = "starttls"  # StartTLS sent; waiting for tls_started()
CLOSED: Final = "closed"

_READING: Final = frozenset({START, SASL})

Handler = Callable[["SmtpSession", Command], None]


# --- command handlers (SPEC 7.4) ------------------------------------------------------


def _helo(s: SmtpSession, command: Command) -> None:
    if s._greeted(command):
        s._send(s._lists.helo)


def _ehlo(s: SmtpSession, command: Command) -> None:
    if s._greeted(command):
        # A later HELO does not clear the mark (Appendix B 11).
        s._esmtp = True
        s._send(s._ehlo_list())


def _auth(s: SmtpSession, command: Command) -> None:
    # The starttls only refusal is checked first (SPEC 7.4).
    if s._starttls_only():
        s._reject()
        return
    if not command.args:
        s._send(replies.INVALID_ARGUMENT)
        return
    selected = sasl.select_mechanism(command.args, s.settings.auth_methods)
    if selected is None:
        s._reject()
        return
    mechanism, initial_response = selected
    s._exchange = sasl.SaslExchange(mechanism, s._salt_for(mechanism))
    s._sasl_step(lambda exchange: exchange.start(initial_response))


def _mail(s: SmtpSession, command: Command) -> None:
    if not s.settings.auth_none:
        # RFC 4954 section 6: 530 until the client authenticates.
        s._emit(Log("info", f'client was rejected: "{loggable(command.line)}"'))
        s._send(replies.AUTH_REQUIRED)
        return
    if s._from:
        s._send(replies.BAD_SEQUENCE)
        return
    if not command.args:
        s._send(replies.INVALID_ARGUMENT)
        return
    s._from = text(command.text)
    # A new transaction: nothing of an earlier login attempt may reach the
    # auth server or the backend with it (CVE-2025-53859).
    s._login = ""
    s._credentials = None
    s._send(replies.OK)


def _rcpt(s: SmtpSession, command: Command) -> None:
    if not s._from:
        s._send(replies.BAD_SEQUENCE)
        return
    if not command.args:
        s._send(replies.INVALID_ARGUMENT)
        return
    s._to = text(command.text)
    # The first RCPT asks the auth server; the backend answers it (SPEC 7.6).
    s._authenticate(
        Credentials(AUTH_NONE, "", "", smtp_helo=s._helo, smtp_from=s._from, smtp_to=s._to)
    )


def _rset(s: SmtpSession, command: Command) -> None:
    s._forget_transaction()
    s._send(replies.OK)


def _noop(s: SmtpSession, command: Command) -> None:
    s._send(replies.OK)


def _quit(s: SmtpSession, command: Command) -> None:
    s._send(replies.BYE)
    s._close()


def _starttls(s: SmtpSession, command: Command) -> None:
    if s._tls or s.settings.starttls == "off":
        s._reject()
        return
    s._send(replies.START_TLS)
    # RFC 3207 section 4.2: forget what the client said before TLS, and drop
    # commands pipelined after STARTTLS (CVE-2014-3556, SPEC 4.3). The ESMTP
    # mark stays, as in nginx.
    s._helo = ""
    s._forget_transaction()
    s._buffer.clear()
    s._state = STARTTLS_STATE
    s._emit(StartTLS())


def _reject(s: SmtpSession, command: Command) -> None:
    s._reject()


# state -> verb -> handler. VRFY, EXPN and HELP tokenize fine and are refused
# by the handler: not counted as errors (SPEC 7.4).
_COMMANDS: Final[dict[str, dict[bytes, Handler]]] = {
    START: {
        HELO: _helo,
        EHLO: _ehlo,
        AUTH: _auth,
        MAIL: _mail,
        RCPT: _rcpt,
        RSET: _rset,
        NOOP: _noop,
        QUIT: _quit,
        STARTTLS: _starttls,
        VRFY: _reject,
        EXPN: _reject,
        HELP: _reject,
    },
}

# --- the client session ---------------------------------------------------------------


class SmtpSession:
    """An SMTP client before login (see the module docstring for the states).

    ``salt_random`` and ``clock`` feed the CRAM-MD5 salt (SPEC 3.4); tests
    pass fixed ones.
    """

    protocol: ClassVar[str] = "smtp"

    def __init__(
        self,
        settings: SmtpSettings,
        salt_random: Callable[[], int] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self._lists = lists_for(settings)
        self._salt_random = salt_random
        self._clock = clock
        self._buffer = LineBuffer(settings.client_buffer)
        self._state: str = START
        self._tls = settings.tls_active
        self._errors = 0
        self._login = ""
        self._salt = ""
        self._helo = ""
        self._esmtp = False
        self._from = ""
        self._to = ""
        self._credentials: Credentials | None = None
        self._exchange: sasl.SaslExchange | None = None
        self._events: list[Event] = []

    # --- driver interface ---

    @property
    def login(self) -> str:
        """The login known so far, kept after failed attempts (SPEC 4.4) and
        cleared by MAIL (CVE-2025-53859)."""
        return self._login

    @property
    def state(self) -> str:
        return self._state

    @property
    def tls_active(self) -> bool:
        return self._tls

    @property
    def helo(self) -> str:
        """The client's HELO/EHLO argument, "" if none (or since STARTTLS)."""
        return self._helo

    @property
    def esmtp(self) -> bool:
        """The client has sent EHLO in this session."""
        return self._esmtp

    def start(self) -> list[Event]:
        """The greeting ``220 <server_name> ESMTP ready`` (SPEC 3.4)."""
        return [Send(self._lists.greeting)]

    def early_data(self, data: bytes) -> list[Event]:
        """The client sent ``data`` during smtp_greeting_delay, before the
        greeting (SPEC 7.2): log it, refuse with 503 and close. Anything
        after an AUTH mechanism is left out of the log line."""
        shown = loggable(without_sasl_data(data[: self.settings.client_buffer]))
        self._emit(Log("info", f'client was rejected before greeting: "{shown}"'))
        self._send(replies.INVALID_PIPELINING)
        self._close()
        return self._flush()

    def receive_data(self, data: bytes) -> list[Event]:
        if self._state == STARTTLS_STATE:
            # Plaintext that followed STARTTLS: dropped, never handled after TLS.
            return []
        if self._state != CLOSED:
            self._buffer.feed(data)
        return self._run()

    def tls_started(self) -> list[Event]:
        """The STARTTLS handshake is done: back to the initial state with no
        new greeting; the client is expected to send EHLO again (RFC 3207)."""
        self._tls = True
        if self._state == STARTTLS_STATE:
            self._state = START
        return self._run()

    def auth_failed(self, message: str, error_code: str = "") -> list[Event]:
        """The auth server refused, the client may try again (SPEC 8.4, 8.5).

        The reply is ``<error_code> <message>``, ``error_code`` being the
        Auth-Error-Code header (``535 5.7.0`` when empty). With smtp_auth
        none it replaces the RCPT reply; HELO and MAIL stay remembered.
        """
        if self._state != AUTHENTICATING:
            raise RuntimeError(f"auth_failed() in state {self._state!r}")
        self._state = START
        self._credentials = None  # a refused password is not kept
        self._send(failure_reply(message, error_code))
        return self._run()

    def auth_rejected(self, message: str, error_code: str = "") -> list[Event]:
        """Send the auth server's error as ``auth_failed`` does, then close."""
        self._send(failure_reply(message, error_code))
        self._close()
        return self._flush()

    def internal_error(self) -> list[Event]:
        """``451 4.3.2 Internal server error``, then close (SPEC 8.6)."""
        self._send(INTERNAL_ERROR)
        self._close()
        return self._flush()

    def pending_input(self) -> bytes:
        """Client bytes received after the command that led to the login (AUTH
        or the first RCPT), to be forwarded to the backend verbatim (SPEC 4.3).
        The buffer is left empty."""
        return self._buffer.take()

    def upstream_login(
        self,
        login: str,
        password: str | None,
        *,
        client_ip: str,
        client_host: str = UNAVAILABLE,
    ) -> SmtpUpstreamLogin:
        """The backend login for the credentials last authenticated.

        ``login`` and ``password`` are the Auth-User and Auth-Pass the auth
        server returned, or the client's own. ``password`` None means the
        auth server sent no Auth-Pass: the client's password is used if its
        mechanism carried one (PLAIN, LOGIN); after CRAM-MD5 or EXTERNAL no
        password is available, and neither the client's digest nor its empty
        EXTERNAL password counts as one when passed back here. A password
        matters only with proxy_smtp_auth (``NoPasswordAvailable`` otherwise).

        ``client_ip`` is the client's address (after realip), sent as
        XCLIENT ADDR=; ``client_host`` its name from the resolver, or
        ``[UNAVAILABLE]``/``[TEMPUNAVAIL]``, sent as XCLIENT NAME= (SPEC 7.1).
        """
        credentials = self._credentials
        method = credentials.method if credentials is not None else sasl.PLAIN
        return SmtpUpstreamLogin(
            SmtpLoginParams(
                server_name=self.settings.server_name,
                client_ip=client_ip,
                login=login,
                password=backend_password(credentials, password),
                client_host=client_host,
                helo=self._helo,
                esmtp=self._esmtp,
                method=method,
                smtp_from=self._from if method == AUTH_NONE else "",
                smtp_to=self._to if method == AUTH_NONE else "",
                xclient=self.settings.xclient,
                proxy_smtp_auth=self.settings.proxy_smtp_auth,
                buffer_size=self.settings.proxy_buffer,
            )
        )

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
        handler(self, command)

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
            self._send(replies.CONTINUATION + result.data + b"\r\n")
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
            self._send(replies.INVALID_COMMAND)
            self._close()
            return
        self._reject()

    def _too_long(self) -> None:
        # Not counted as an error; always fatal (SPEC 4.1).
        shown = loggable_command(self._buffer.peek(self._buffer.limit), self._state == SASL)
        self._emit(Log("info", f'client sent too long command "{shown}"'))
        self._send(replies.INVALID_COMMAND)
        self._close()

    # --- used by the handlers ---

    def _greeted(self, command: Command) -> bool:
        """HELO/EHLO: remember the argument and start afresh (SPEC 7.4);
        False (after the 501 reply) unless there is exactly one argument."""
        if len(command.args) != 1:
            self._send(replies.INVALID_ARGUMENT)
            return False
        self._helo = text(command.args[0])
        self._forget_transaction()
        return True

    def _forget_transaction(self) -> None:
        self._from = ""
        self._to = ""

    def _starttls_only(self) -> bool:
        return self.settings.starttls == "only" and not self._tls

    def _ehlo_list(self) -> bytes:
        if self._tls or self.settings.starttls == "off":
            return self._lists.ehlo
        if self.settings.starttls == "on":
            return self._lists.ehlo_starttls
        return self._lists.ehlo_starttls_only

    def _salt_for(self, mechanism: str) -> str:
        # Made at the first AUTH CRAM-MD5 and reused by later ones (SPEC 3.4).
        if mechanism == sasl.CRAM_MD5 and not self._salt:
            self._salt = sasl.make_salt(self.settings.server_name, self._salt_random, self._clock)
        return self._salt

    def _reject(self) -> None:
        """The invalid-command reply; any SASL exchange is aborted (SPEC 4.5).
        HELO and MAIL data are kept."""
        self._state = START
        self._exchange = None
        self._send(replies.INVALID_COMMAND)

    def _authenticate(self, credentials: Credentials) -> None:
        self._login = credentials.login
        self._credentials = credentials
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
