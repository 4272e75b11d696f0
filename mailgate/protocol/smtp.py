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
gets its replies in order (SPEC 4.3). What SMTP shares with POP3 and IMAP
(the driver interface, SASL stepping, error counting, STARTTLS) is
``session.LineSession``.

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

from mailgate.protocol import smtp_settings as replies
from mailgate.protocol.base import Credentials, Event, Log, Send, text
from mailgate.protocol.sasl import PLAIN
from mailgate.protocol.session import AUTHENTICATING, START, LineSession, refuse
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

Handler = Callable[["SmtpSession", Command], None]


# --- command handlers (SPEC 7.4) ------------------------------------------------------


def _helo(s: SmtpSession, command: Command) -> None:
    if s._greeted(command):
        s._send(s._lists.helo)


def _ehlo(s: SmtpSession, command: Command) -> None:
    if s._greeted(command):
        # A later HELO does not clear the mark (Appendix B 11).
        s._esmtp = True
        s._send(s._advertised(s._lists.ehlo, s._lists.ehlo_starttls, s._lists.ehlo_starttls_only))


def _auth(s: SmtpSession, command: Command) -> None:
    # The starttls only refusal is checked first (SPEC 7.4).
    if s._starttls_only():
        s._reject()
        return
    if not command.args:
        s._send(replies.INVALID_ARGUMENT)
        return
    s._start_sasl(command.args)


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
    if s._start_tls(replies.START_TLS):
        # RFC 3207 section 4.2: forget what the client said before TLS. The
        # ESMTP mark stays, as in nginx.
        s._helo = ""
        s._forget_transaction()


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
        VRFY: refuse,
        EXPN: refuse,
        HELP: refuse,
    },
}

# --- the client session ---------------------------------------------------------------


class SmtpSession(LineSession[SmtpSettings]):
    """An SMTP client before login (see the module docstring for the states).

    ``salt_random`` and ``clock`` feed the CRAM-MD5 salt (SPEC 3.4); tests
    pass fixed ones. ``login`` is cleared by MAIL (CVE-2025-53859); a
    refused command keeps HELO and MAIL data.
    """

    protocol: ClassVar[str] = "smtp"
    _continuation: ClassVar[bytes] = replies.CONTINUATION
    _internal_error_reply: ClassVar[bytes] = INTERNAL_ERROR

    def __init__(
        self,
        settings: SmtpSettings,
        salt_random: Callable[[], int] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(settings, salt_random, clock)
        self._lists = lists_for(settings)
        self._helo = ""
        self._esmtp = False
        self._from = ""
        self._to = ""
        self._credentials: Credentials | None = None

    # --- driver interface ---

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

    def auth_failed(self, message: str, error_code: str = "") -> list[Event]:
        """The auth server refused, the client may try again (SPEC 8.4, 8.5).

        With smtp_auth none the reply replaces the RCPT reply; HELO and MAIL
        stay remembered.
        """
        if self._state == AUTHENTICATING:
            self._credentials = None  # a refused password is not kept
        return super().auth_failed(message, error_code)

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
        method = credentials.method if credentials is not None else PLAIN
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

    # --- hooks of LineSession ---

    def _command_line(self, line: bytes) -> None:
        command = parse_command(line)
        if command is None:
            self._parse_error()
            return
        handler: Handler = _COMMANDS[self._state].get(command.verb, refuse)
        handler(self, command)

    def _parse_sasl_response(self, line: bytes) -> bytes | None:
        return parse_sasl_response(line)

    def _loggable_command(self, head: bytes) -> str:
        return loggable_command(head, sasl_response=False)

    def _invalid_command(self) -> bytes:
        return replies.INVALID_COMMAND

    def _auth_failure(self, message: str, error_code: str) -> bytes:
        # ``<error_code> <message>``, error_code being the Auth-Error-Code
        # header (``535 5.7.0`` when empty).
        return failure_reply(message, error_code)

    def _authenticate(self, credentials: Credentials) -> None:
        self._credentials = credentials
        super()._authenticate(credentials)

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
