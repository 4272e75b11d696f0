"""SMTP before login (SPEC 7) through the chunking matrix.

Every transcript goes through ``chunking.run``: whole, line by line, byte by
byte and in random chunks, with identical results. The backend side is in
test_smtp_upstream.py.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from mailgate.protocol.base import (
    Authenticate,
    Close,
    Credentials,
    Event,
    Log,
    Send,
    StartTLS,
)
from mailgate.protocol.smtp import SmtpSession, SmtpSettings
from tests.unit.chunking import Run, Step, assert_secret_kept_out, b64, run

SERVER = "mail.example.com"
GREETING = b"220 mail.example.com ESMTP ready\r\n"
HELO_REPLY = b"250 mail.example.com\r\n"
EHLO_REPLY = b"250-mail.example.com\r\n250 AUTH PLAIN LOGIN\r\n"
OK = b"250 2.0.0 OK\r\n"
BYE = b"221 2.0.0 Bye\r\n"
START_TLS = b"220 2.0.0 Start TLS\r\n"
INVALID = b"500 5.5.1 Invalid command\r\n"
ARGUMENT = b"501 5.5.4 Invalid argument\r\n"
SEQUENCE = b"503 5.5.1 Bad sequence of commands\r\n"
PIPELINING = b"503 5.5.0 Improper use of SMTP command pipelining\r\n"
AUTH_REQUIRED = b"530 5.7.1 Authentication required\r\n"
INTERNAL = b"451 4.3.2 Internal server error\r\n"
NEXT = b"334 \r\n"
USERNAME = b"334 VXNlcm5hbWU6\r\n"
PASSWORD = b"334 UGFzc3dvcmQ6\r\n"
FAILED = b"535 5.7.0 Invalid login or password\r\n"

# Example salt from SPEC 3.4.
RANDOM, NOW = 1181532555, 1795570090
SALT = f"<{RANDOM}.{NOW}@{SERVER}>\r\n"
CHALLENGE = b"334 " + base64.b64encode(SALT.removesuffix("\r\n").encode()) + b"\r\n"

# Every password in these tests contains SECRET, so that no Log event may.
SECRET = "s3cret"
DIGEST = "b913a602c7eda7a495b4e6e7334d3890"
EVERY_METHOD = ("plain", "login", "cram-md5", "external")


def new_session(**settings: Any) -> SmtpSession:
    settings.setdefault("server_name", SERVER)
    return SmtpSession(SmtpSettings(**settings), salt_random=lambda: RANDOM, clock=lambda: NOW)


def converse(
    transcript: Sequence[Step],
    inspect: Callable[[Any], Any] | None = None,
    **settings: Any,
) -> Run:
    """Play the transcript under every chunking; no log line may hold a
    password, in clear or in base64."""
    result = run(lambda: new_session(**settings), transcript, inspect=inspect)
    assert_secret_kept_out(result, transcript, SECRET)
    return result


def replies(result: Run) -> bytes:
    """What the client was sent after the greeting."""
    assert result.sent.startswith(GREETING)
    return result.sent[len(GREETING) :]


def credentials(result: Run) -> list[Credentials]:
    return [event.credentials for event in result.of_type(Authenticate)]


def messages(result: Run) -> list[str]:
    return [log.message for log in result.logs]


def failed(
    message: str = "Invalid login or password", error_code: str = ""
) -> Callable[[SmtpSession], list[Event]]:
    return lambda s: s.auth_failed(message, error_code)


def none_credentials(helo: str, mail: str, rcpt: str) -> Credentials:
    return Credentials("none", "", "", smtp_helo=helo, smtp_from=mail, smtp_to=rcpt)


# --- greeting and the greeting delay (SPEC 3.4, 7.2) -------------------------------


def test_greeting() -> None:
    assert new_session().start() == [Send(GREETING)]
    assert SmtpSession(SmtpSettings()).start() == [Send(b"220 localhost ESMTP ready\r\n")]


def test_early_data_is_rejected() -> None:
    session = new_session(greeting_delay=1.5)
    events = session.early_data(b"EHLO x\r\nMAIL FROM:<a@b>\r\n")
    assert events == [
        Log("info", 'client was rejected before greeting: "EHLO x__MAIL FROM:<a@b>__"'),
        Send(PIPELINING),
        Close(),
    ]
    assert session.receive_data(b"NOOP\r\n") == []
    assert session.pending_input() == b""


def test_early_data_hides_sasl_data() -> None:
    token = b64(f"\0john\0{SECRET}")
    for data in [b"EHLO x\r\nAUTH PLAIN " + token + b"\r\n", b"auth  login\r\n" + token + b"\r\n"]:
        [log, *_] = new_session().early_data(data)
        assert isinstance(log, Log)
        assert token.decode() not in log.message and SECRET not in log.message
        assert log.message.endswith(' ..."')


# --- HELO and EHLO (SPEC 7.4, 7.5) ---------------------------------------------------


@pytest.mark.parametrize("line", [b"HELO", b"EHLO", b"HELO a b", b"EHLO  a  b  ", b"ehlo "])
def test_helo_needs_one_argument(line: bytes) -> None:
    result = converse([line + b"\r\n", b"NOOP\r\n"], inspect=lambda s: (s.helo, s.esmtp))
    assert replies(result) == ARGUMENT + OK
    assert result.inspected == ("", False)


def test_helo() -> None:
    result = converse([b"helo client.example\r\n"], inspect=lambda s: (s.helo, s.esmtp))
    assert replies(result) == HELO_REPLY
    assert result.inspected == ("client.example", False)


def test_ehlo() -> None:
    result = converse([b"EHLO  client.example \r\n"], inspect=lambda s: (s.helo, s.esmtp))
    assert replies(result) == EHLO_REPLY
    assert result.inspected == ("client.example", True)


def test_later_helo_keeps_the_esmtp_mark() -> None:
    result = converse([b"EHLO a\r\nHELO b\r\n"], inspect=lambda s: (s.helo, s.esmtp))
    assert replies(result) == EHLO_REPLY + HELO_REPLY
    assert result.inspected == ("b", True)


@pytest.mark.parametrize(
    ("settings", "reply"),
    [
        ({}, EHLO_REPLY),
        (
            {"auth_methods": ("none",), "capabilities": ("SIZE",)},
            b"250-mail.example.com\r\n250 SIZE\r\n",
        ),
        ({"auth_methods": ("none",)}, b"250 mail.example.com\r\n"),
        (
            {"auth_methods": ("external", "none", "cram-md5", "login", "plain")},
            b"250-mail.example.com\r\n250 AUTH PLAIN LOGIN CRAM-MD5 EXTERNAL\r\n",
        ),
        ({"auth_methods": ("login",)}, b"250-mail.example.com\r\n250 AUTH LOGIN\r\n"),
        (
            {"capabilities": ("PIPELINING", "SIZE 10485760", "8BITMIME")},
            b"250-mail.example.com\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n"
            b"250 AUTH PLAIN LOGIN\r\n",
        ),
        (
            {"starttls": "on", "auth_methods": EVERY_METHOD},
            b"250-mail.example.com\r\n250-AUTH PLAIN LOGIN CRAM-MD5 EXTERNAL\r\n250 STARTTLS\r\n",
        ),
        (
            {"starttls": "on", "auth_methods": ("none",)},
            b"250-mail.example.com\r\n250 STARTTLS\r\n",
        ),
        (
            {"starttls": "only", "capabilities": ("PIPELINING",)},
            b"250-mail.example.com\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
        ),
        ({"starttls": "on", "tls_active": True}, EHLO_REPLY),
        ({"starttls": "only", "tls_active": True}, EHLO_REPLY),
    ],
)
def test_ehlo_variants(settings: dict[str, Any], reply: bytes) -> None:
    assert replies(converse([b"EHLO x\r\n"], **settings)) == reply


def test_ehlo_never_advertises_chunking() -> None:
    # BDAT cannot be relayed before login (Mailu issue 1766).
    caps = ("PIPELINING", "CHUNKING", "binarymime", "Chunking x", "SIZE 100", "DSN")
    result = converse([b"EHLO x\r\n"], capabilities=caps, starttls="on")
    assert replies(result) == (
        b"250-mail.example.com\r\n250-PIPELINING\r\n250-SIZE 100\r\n250-DSN\r\n"
        b"250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n"
    )


def test_helo_and_ehlo_forget_the_transaction() -> None:
    transcript = [b"MAIL FROM:<a>\r\nEHLO x\r\nMAIL FROM:<b>\r\nHELO y\r\nMAIL FROM:<c>\r\n"]
    result = converse(transcript, auth_methods=("none",))
    assert replies(result) == OK + b"250 mail.example.com\r\n" + OK + HELO_REPLY + OK


# --- AUTH (SPEC 7.4, 4.4) -------------------------------------------------------------


def test_auth_before_ehlo_is_accepted() -> None:
    result = converse([b"AUTH PLAIN " + b64(f"\0john\0{SECRET}") + b"\r\n"])
    assert replies(result) == b""
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_auth_plain() -> None:
    result = converse([b"EHLO x\r\nAUTH PLAIN\r\n", b64(f"\0john\0{SECRET}") + b"\r\n"])
    assert replies(result) == EHLO_REPLY + NEXT
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_auth_plain_initial_response() -> None:
    result = converse([b"auth plain " + b64(f"admin\0john\0{SECRET}") + b"\r\n"])
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_auth_login() -> None:
    result = converse(
        [b"AUTH LOGIN\r\n", b64("john") + b"\r\n", b64(SECRET) + b"\r\n"],
        inspect=lambda s: s.login,
    )
    assert replies(result) == USERNAME + PASSWORD
    assert credentials(result) == [Credentials("plain", "john", SECRET)]
    assert result.inspected == "john"


def test_auth_login_with_user_name() -> None:
    # Outlook, .NET SmtpClient and smtplib send "AUTH LOGIN <b64 user>".
    result = converse([b"AUTH LOGIN " + b64("john@example.com") + b"\r\n", b64(SECRET) + b"\r\n"])
    assert replies(result) == PASSWORD
    assert credentials(result) == [Credentials("plain", "john@example.com", SECRET)]


def test_auth_login_empty_answers_accepted() -> None:
    result = converse([b"AUTH LOGIN\r\n\r\n\r\n"])
    assert credentials(result) == [Credentials("plain", "", "")]


def test_auth_cram_md5() -> None:
    result = converse(
        [b"AUTH CRAM-MD5\r\n", b64(f"tim {DIGEST}") + b"\r\n"], auth_methods=("cram-md5",)
    )
    assert replies(result) == CHALLENGE
    assert credentials(result) == [Credentials("cram-md5", "tim", DIGEST, salt=SALT)]


def test_cram_md5_salt_is_made_once() -> None:
    clock = iter([NOW, NOW + 100])
    session = SmtpSession(
        SmtpSettings(server_name=SERVER, auth_methods=("cram-md5",)),
        salt_random=lambda: RANDOM,
        clock=lambda: next(clock),
    )
    session.start()
    first = session.receive_data(b"AUTH CRAM-MD5\r\n" + b64(f"tim {DIGEST}") + b"\r\n")
    second = session.auth_failed("no") + session.receive_data(b"AUTH CRAM-MD5\r\n")
    assert first[0] == Send(CHALLENGE)
    assert second[-1] == Send(CHALLENGE)


@pytest.mark.parametrize("initial", [False, True])
def test_auth_external(initial: bool) -> None:
    transcript = (
        [b"AUTH EXTERNAL " + b64("john") + b"\r\n"]
        if initial
        else [b"AUTH EXTERNAL\r\n", b64("john") + b"\r\n"]
    )
    result = converse(transcript, auth_methods=("external",))
    assert replies(result) == (b"" if initial else USERNAME)
    assert credentials(result) == [Credentials("external", "john")]


def test_auth_without_arguments() -> None:
    result = converse([b"AUTH\r\nAUTH   \r\nNOOP\r\n"], max_errors=1)
    assert replies(result) == ARGUMENT + ARGUMENT + OK


@pytest.mark.parametrize(
    ("line", "settings"),
    [
        (b"AUTH CRAM-MD5", {}),
        (b"AUTH CRAM-MD5 " + b64(f"tim {DIGEST}"), {"auth_methods": ("cram-md5",)}),
        (b"AUTH EXTERNAL", {}),
        (b"AUTH EXTERNAL " + b64("john"), {}),
        (b"AUTH EXTERNAL a b", {"auth_methods": ("external",)}),
        (b"AUTH PLAIN a b", {}),
        (b"AUTH LOGIN a b", {}),
        (b"AUTH DIGEST-MD5", {}),
        (b"AUTH XOAUTH2 abc", {}),
        (b"AUTH NONE", {"auth_methods": ("none",)}),
        (b"AUTH", {"starttls": "only"}),
        (b"AUTH PLAIN", {"starttls": "only"}),
        (b"AUTH LOGIN " + b64("john"), {"starttls": "only"}),
    ],
)
def test_auth_refused(line: bytes, settings: dict[str, Any]) -> None:
    result = converse([line + b"\r\n", b"NOOP\r\n"], max_errors=1, **settings)
    assert replies(result) == INVALID + OK
    assert not credentials(result)
    assert not result.logs


def test_auth_allowed_after_tls_with_starttls_only() -> None:
    result = converse(
        [b"AUTH PLAIN " + b64(f"\0john\0{SECRET}") + b"\r\n"], starttls="only", tls_active=True
    )
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_plain_and_login_always_accepted() -> None:
    result = converse([b"AUTH LOGIN\r\n"], auth_methods=("none",))
    assert replies(result) == USERNAME


def test_sasl_response_first_token_only() -> None:
    token = b64(f"\0john\0{SECRET}")
    result = converse([b"AUTH PLAIN\r\n", token + b" 2 3 4 5 6 7 8 9 10 11\r\n"])
    assert credentials(result) == [Credentials("plain", "john", SECRET)]
    result = converse([b"AUTH PLAIN\r\n", token + b" 2 3 4 5 6 7 8 9 10 11 12\r\n", b"NOOP\r\n"])
    assert replies(result) == NEXT + INVALID + OK
    assert not credentials(result)


@pytest.mark.parametrize(
    ("transcript", "message"),
    [
        ([b"AUTH PLAIN *"], "client sent invalid base64 encoding in AUTH PLAIN command"),
        ([b"AUTH PLAIN", b"*"], "client sent invalid base64 encoding in AUTH PLAIN command"),
        ([b"AUTH PLAIN " + b64("john")], "client sent invalid login in AUTH PLAIN command"),
        ([b"AUTH PLAIN", b64("\0john")], "client sent invalid password in AUTH PLAIN command"),
        ([b"AUTH LOGIN *"], "client sent invalid base64 encoding in AUTH LOGIN command"),
        (
            [b"AUTH LOGIN", b64("j"), b"*"],
            "client sent invalid base64 encoding in AUTH LOGIN command",
        ),
        ([b"AUTH CRAM-MD5", b"*"], "client sent invalid base64 encoding in AUTH CRAM-MD5 command"),
        (
            [b"AUTH CRAM-MD5", b64("tim short")],
            "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command",
        ),
        ([b"AUTH EXTERNAL *"], "client sent invalid base64 encoding in AUTH EXTERNAL command"),
        (
            [b"AUTH PLAIN " + b64(f"\0jo\r\nhn\0{SECRET}")],
            "client sent invalid login in AUTH PLAIN command",
        ),
    ],
)
def test_sasl_failures(transcript: list[bytes], message: str) -> None:
    lines = [line + b"\r\n" for line in transcript]
    result = converse([*lines, b"NOOP\r\n"], auth_methods=EVERY_METHOD, max_errors=1)
    assert messages(result) == [message]
    assert replies(result).endswith(INVALID + OK)
    assert not credentials(result)
    log_at = result.events.index(Log("info", message))
    assert result.events[log_at + 1] == Send(INVALID)


def test_commands_during_sasl_are_responses() -> None:
    # "QUIT" is valid base64: decoded, it holds no NUL -> invalid login
    result = converse([b"AUTH PLAIN\r\nQUIT\r\nNOOP\r\n"])
    assert replies(result) == NEXT + INVALID + OK
    assert not result.closed


def test_sasl_cancel_is_not_special() -> None:
    result = converse([b"AUTH LOGIN\r\n*\r\nNOOP\r\n"])
    assert replies(result) == USERNAME + INVALID + OK


# --- MAIL, RCPT and smtp_auth none (SPEC 7.4, 7.6) --------------------------------------


def test_mail_needs_authentication() -> None:
    result = converse([b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n", b"NOOP\r\n"])
    assert replies(result) == AUTH_REQUIRED + SEQUENCE + OK
    assert messages(result) == ['client was rejected: "MAIL FROM:<a@b>__"']
    assert not credentials(result)


def test_mail_without_arguments_needs_authentication_first() -> None:
    result = converse([b"MAIL\n"])
    assert replies(result) == AUTH_REQUIRED
    assert messages(result) == ['client was rejected: "MAIL_"']


def test_auth_none_full_flow() -> None:
    result = converse(
        [b"EHLO client.example\r\n", b"MAIL FROM:<a@b>  SIZE=10   \r\n", b"RCPT TO:<good@d>\r\n"],
        inspect=lambda s: s.login,
        auth_methods=("none",),
    )
    assert replies(result) == b"250 mail.example.com\r\n" + OK
    assert credentials(result) == [
        none_credentials("client.example", "MAIL FROM:<a@b>  SIZE=10", "RCPT TO:<good@d>")
    ]
    assert result.events[-1] == Authenticate(credentials(result)[0])
    assert result.inspected == ""


def test_auth_none_without_helo_keeps_case() -> None:
    result = converse(
        [b"mail from:<a@b>\r\nrcpt  to:<c@d> NOTIFY=NEVER\r\n"], auth_methods=("none",)
    )
    assert credentials(result) == [
        none_credentials("", "mail from:<a@b>", "rcpt  to:<c@d> NOTIFY=NEVER")
    ]


def test_auth_none_sequence_errors() -> None:
    result = converse(
        [b"RCPT TO:<c@d>\r\nMAIL\r\nMAIL   \r\nMAIL FROM:<a@b>\r\nMAIL FROM:<x@y>\r\nRCPT\r\n"],
        auth_methods=("none",),
        max_errors=1,
    )
    assert replies(result) == SEQUENCE + ARGUMENT + ARGUMENT + OK + SEQUENCE + ARGUMENT
    assert not credentials(result)


def test_rset_forgets_mail_keeps_helo() -> None:
    result = converse(
        [b"HELO h\r\nMAIL FROM:<a>\r\nRSET\r\nRCPT TO:<x>\r\nMAIL FROM:<b>\r\nRCPT TO:<c>\r\n"],
        auth_methods=("none",),
    )
    assert replies(result) == HELO_REPLY + OK + OK + SEQUENCE + OK
    assert credentials(result) == [none_credentials("h", "MAIL FROM:<b>", "RCPT TO:<c>")]


@pytest.mark.parametrize("error_code", ["", "451 4.3.0"])
def test_auth_none_failure_replaces_the_rcpt_reply(error_code: str) -> None:
    code = (error_code or "535 5.7.0").encode()
    result = converse(
        [
            b"EHLO h\r\nMAIL FROM:<a>\r\nRCPT TO:<x>\r\nMAIL FROM:<b>\r\n",
            failed("Temporary problem", error_code),
            b"RCPT TO:<y>\r\n",
        ],
        auth_methods=("none", "plain"),
    )
    assert replies(result) == (
        b"250-mail.example.com\r\n250 AUTH PLAIN\r\n"
        + OK
        + code
        + b" Temporary problem\r\n"
        + SEQUENCE
    )
    assert credentials(result) == [
        none_credentials("h", "MAIL FROM:<a>", "RCPT TO:<x>"),
        none_credentials("h", "MAIL FROM:<a>", "RCPT TO:<y>"),
    ]


def test_mail_clears_the_login() -> None:
    # CVE-2025-53859: nothing of an earlier AUTH reaches the none request.
    result = converse(
        [
            b"AUTH PLAIN " + b64(f"\0john\0{SECRET}") + b"\r\n",
            failed(),
            b"MAIL FROM:<a>\r\n",
        ],
        inspect=lambda s: s.login,
        auth_methods=("none",),
    )
    assert result.inspected == ""
    result = converse(
        [
            b"AUTH LOGIN " + b64("john") + b"\r\n*\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\n",
        ],
        inspect=lambda s: s.login,
        auth_methods=("none",),
    )
    assert credentials(result) == [none_credentials("", "MAIL FROM:<a>", "RCPT TO:<b>")]
    assert result.inspected == ""


def test_pipelined_mail_and_rcpt() -> None:
    result = converse(
        [b"EHLO h\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nRCPT TO:<c>\r\nDATA\r\nSubject: x\r\n"],
        inspect=lambda s: s.pending_input(),
        auth_methods=("none",),
        capabilities=("PIPELINING",),
    )
    assert replies(result) == b"250-mail.example.com\r\n250 PIPELINING\r\n" + OK
    assert credentials(result) == [none_credentials("h", "MAIL FROM:<a>", "RCPT TO:<b>")]
    assert result.inspected == b"RCPT TO:<c>\r\nDATA\r\nSubject: x\r\n"


# --- other commands -------------------------------------------------------------------


def test_noop_and_rset() -> None:
    result = converse([b"NOOP\r\nnoop 1 2 3 4 5 6 7 8 9 10 11\r\nRSET\r\nrset x\r\n"])
    assert replies(result) == OK * 4


def test_quit() -> None:
    result = converse(
        [b"EHLO x\r\nQUIT\r\nNOOP\r\n", b"NOOP\r\n"], inspect=lambda s: s.pending_input()
    )
    assert replies(result) == EHLO_REPLY + BYE
    assert result.events[-1] == Close()
    assert result.inspected == b""


@pytest.mark.parametrize("verb", [b"VRFY", b"EXPN", b"HELP", b"vrfy"])
def test_vrfy_expn_help_refused_not_counted(verb: bytes) -> None:
    result = converse([verb + b" x\r\n" + verb + b"\r\nNOOP\r\n"], max_errors=1)
    assert replies(result) == INVALID + INVALID + OK
    assert not result.closed


# --- STARTTLS (RFC 3207, SPEC 7.4) ---------------------------------------------------


@pytest.mark.parametrize("mode", ["on", "only"])
def test_starttls(mode: str) -> None:
    result = converse(
        [b"EHLO x\r\nSTARTTLS\r\n", lambda s: s.tls_started(), b"EHLO y\r\n"],
        inspect=lambda s: (s.tls_active, s.helo),
        starttls=mode,
    )
    before = b"250-mail.example.com\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n"
    if mode == "only":
        before = b"250-mail.example.com\r\n250 STARTTLS\r\n"
    assert replies(result) == before + START_TLS + EHLO_REPLY
    assert StartTLS() in result.events
    assert result.inspected == (True, "y")


def test_starttls_forgets_helo_and_mail_and_drops_pipelined_input() -> None:
    # CVE-2014-3556: commands injected after STARTTLS must not run in TLS.
    result = converse(
        [
            b"EHLO x\r\nMAIL FROM:<a>\r\nSTARTTLS\r\nMAIL FROM:<evil>\r\n",
            b"RCPT TO:<evil>\r\n",
            lambda s: s.tls_started(),
            b"RCPT TO:<b>\r\nMAIL FROM:<c>\r\nRCPT TO:<d>\r\n",
        ],
        inspect=lambda s: (s.helo, s.esmtp, s.pending_input()),
        starttls="on",
        auth_methods=("none",),
    )
    assert replies(result) == (
        b"250-mail.example.com\r\n250 STARTTLS\r\n" + OK + START_TLS + SEQUENCE + OK
    )
    # The ESMTP mark survives STARTTLS, as in nginx.
    assert credentials(result) == [none_credentials("", "MAIL FROM:<c>", "RCPT TO:<d>")]
    assert result.inspected == ("", True, b"")


@pytest.mark.parametrize(
    "settings", [{}, {"starttls": "off"}, {"starttls": "on", "tls_active": True}]
)
def test_starttls_refused(settings: dict[str, Any]) -> None:
    result = converse([b"STARTTLS\r\nNOOP\r\n"], max_errors=1, **settings)
    assert replies(result) == INVALID + OK
    assert not result.of_type(StartTLS)


def test_starttls_refused_once_tls_is_up() -> None:
    result = converse([b"STARTTLS\r\n", lambda s: s.tls_started(), b"starttls\r\n"], starttls="on")
    assert replies(result) == START_TLS + INVALID
    assert len(result.of_type(StartTLS)) == 1


# --- tokenizer, max_errors, too long (SPEC 4.1, 4.2, 4.5, 7.3) -------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"DATA\r\n",
        b"BDAT 10 LAST\r\n",
        b"ETRN x\r\n",
        b"XCLIENT ADDR=1.2.3.4\r\n",
        b"STARTTL\r\n",
        b"STARTTLSS\r\n",
        b"\r\n",
        b" NOOP\r\n",
        b"NOOPS\r\n",
        b"NO0P\r\n",
        b"NOOP\tx\r\n",
        b"NOOP\rx\r\n",
        b"NOOP \r \r\n",
        b"\xffOOP\r\n",
        b"NOOP 1 2 3 4 5 6 7 8 9 10 11 12\r\n",
    ],
)
def test_parse_errors(line: bytes) -> None:
    result = converse([line, b"NOOP\r\n"])
    assert replies(result) == INVALID + OK
    assert not result.logs


def test_bare_lf_and_crlf_both_end_lines() -> None:
    result = converse([b"NOOP\nhelo x\r\n"])
    assert replies(result) == OK + HELO_REPLY


def test_parse_error_discards_the_rest_of_the_line() -> None:
    result = converse([b"NOOP\rQUIT\r\nNOOP\r\n"])
    assert replies(result) == INVALID + OK
    assert not result.closed


def test_max_errors_default() -> None:
    result = converse([b"DATA\r\n" * 4, b"NOOP\r\n", b"BDAT 1\r\nNOOP\r\n"])
    assert replies(result) == INVALID * 4 + OK + INVALID
    assert result.events[-3:] == [
        Log("info", "client sent too many invalid commands"),
        Send(INVALID),
        Close(),
    ]


@pytest.mark.parametrize("limit", [0, 1])
def test_max_errors_low(limit: int) -> None:
    result = converse([b"DATA\r\nNOOP\r\n"], max_errors=limit)
    assert replies(result) == INVALID
    assert result.closed


def test_handler_rejections_do_not_count() -> None:
    result = converse(
        [b"VRFY x\r\n" * 5 + b"AUTH FOO\r\n" * 5 + b"STARTTLS\r\n" * 5 + b"AUTH PLAIN *\r\n" * 5]
    )
    assert not result.closed
    assert replies(result) == INVALID * 20


def test_error_counter_is_never_reset() -> None:
    transcript: list[Step] = [
        b"DATA\r\nDATA\r\nAUTH PLAIN " + b64("\0a\0b") + b"\r\n",
        failed(),
        b"DATA\r\nDATA\r\n",
    ]
    assert converse(transcript, max_errors=4).closed


def test_too_long_command() -> None:
    result = converse([b"MAIL FROM:<" + b"a" * 5000])
    assert replies(result) == INVALID
    assert result.closed
    [message] = messages(result)
    assert message.startswith('client sent too long command "MAIL FROM:<aaa')
    assert len(message) < 300


def test_line_limit_is_client_buffer() -> None:
    fits = b"HELO " + b"a" * (64 - 7) + b"\r\n"
    assert replies(converse([fits], client_buffer=64)) == HELO_REPLY
    result = converse([fits[:-2] + b"a\r\n"], client_buffer=64, max_errors=1)
    assert replies(result) == INVALID
    assert result.closed
    assert messages(result) == [f'client sent too long command "{fits[:-2].decode()}a\r"']


@pytest.mark.parametrize(
    ("transcript", "shown"),
    [
        ([b"AUTH PLAIN " + b64(f"\0john\0{SECRET}") + b"A" * 300], "AUTH PLAIN ..."),
        ([b"auth login " + b64(SECRET) * 30], "auth login ..."),
        ([b"AUTH PLAIN\r\n", b64(f"\0john\0{SECRET}") + b"A" * 300], "..."),
    ],
)
def test_too_long_log_hides_sasl_data(transcript: list[bytes], shown: str) -> None:
    result = converse(transcript, client_buffer=128)
    assert messages(result) == [f'client sent too long command "{shown}"']
    assert result.closed


def test_long_pipelined_batch_fits() -> None:
    # nginx's buffer is not compacted (SPEC 4.1); mailgate's is.
    result = converse([b"NOOP\r\n" * 100], client_buffer=64)
    assert replies(result) == OK * 100


# --- after the auth server's answer ---------------------------------------------------


def test_auth_failed_then_buffered_input_is_handled() -> None:
    result = converse(
        [
            b"EHLO x\r\nAUTH PLAIN " + b64(f"\0john\0{SECRET}") + b"\r\nNOOP\r\nAUTH LOGIN\r\n",
            failed(),
            b64("jim") + b"\r\n",
        ],
        inspect=lambda s: (s.login, s.helo),
    )
    assert replies(result) == EHLO_REPLY + FAILED + OK + USERNAME + PASSWORD
    assert result.inspected == ("jim", "x")


def test_auth_failed_with_error_code() -> None:
    result = converse(
        [b"AUTH PLAIN " + b64("\0a\0b") + b"\r\n", failed("Temporary problem", "451 4.3.0")]
    )
    assert replies(result) == b"451 4.3.0 Temporary problem\r\n"
    assert not result.closed


def test_auth_failed_needs_a_pending_authenticate() -> None:
    session = new_session()
    session.start()
    with pytest.raises(RuntimeError):
        session.auth_failed("no")


@pytest.mark.parametrize(
    ("error_code", "reply"),
    [("", b"535 5.7.0 Go away\r\n"), ("550 5.7.1", b"550 5.7.1 Go away\r\n")],
)
def test_auth_rejected(error_code: str, reply: bytes) -> None:
    result = converse(
        [
            b"AUTH PLAIN " + b64("\0a\0b") + b"\r\nNOOP\r\n",
            lambda s: s.auth_rejected("Go away", error_code),
        ],
        inspect=lambda s: s.pending_input(),
    )
    assert replies(result) == reply
    assert result.events[-1] == Close()
    assert result.inspected == b""


def test_internal_error() -> None:
    result = converse([b"AUTH PLAIN " + b64("\0a\0b") + b"\r\n", lambda s: s.internal_error()])
    assert replies(result) == INTERNAL
    assert result.events[-1] == Close()


def test_pending_input_after_auth() -> None:
    result = converse(
        [b"EHLO x\r\nAUTH PLAIN " + b64(f"\0john\0{SECRET}") + b"\r\nMAIL FROM:<a>\r\n", b"RCPT"],
        inspect=lambda s: s.pending_input(),
    )
    assert result.events[-1] == Authenticate(Credentials("plain", "john", SECRET))
    assert result.inspected == b"MAIL FROM:<a>\r\nRCPT"


# --- passwords never logged -------------------------------------------------------------


def test_password_never_in_events() -> None:
    token = b64(f"\0john\0{SECRET}")
    transcripts: list[list[Step]] = [
        [b"AUTH PLAIN " + token + b"\r\n", failed()],
        [b"AUTH PLAIN\r\n" + token + b"\r\n", failed()],
        [b"AUTH LOGIN " + b64("john") + b"\r\n" + b64(SECRET) + b"\r\n", failed()],
        [b"AUTH LOGIN " + b64("john") + b"\r\n" + b64(SECRET)[:-1] + b"*\r\n"],
        [b"AUTH PLAIN\r\n" + token + b"x" * 9000],
        [b"AUTH PLAIN " + b64(f"\0john{SECRET}") + b"\r\n"],
        [b"AUTH PLAIN " + b64(f"\0john\0{SECRET}\r\n") + b"\r\n"],
    ]
    for transcript in transcripts:
        result = converse(transcript)
        for event in result.events:
            if not isinstance(event, Send):
                assert SECRET not in repr(event)


# --- settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"starttls": "maybe"},
        {"auth_methods": ("plain", "apop")},
        {"max_errors": -1},
        {"client_buffer": 0},
        {"proxy_buffer": 0},
        {"greeting_delay": -1},
    ],
)
def test_settings_validation(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SmtpSettings(**settings)


def test_settings_defaults() -> None:
    settings = SmtpSettings()
    assert settings.auth_methods == ("plain", "login")
    assert settings.client_buffer == 4096
    assert settings.xclient is True and settings.proxy_smtp_auth is False
    assert not settings.auth_none and SmtpSettings(auth_methods=("none",)).auth_none
    assert hash(SmtpSettings(capabilities=("SIZE",))) == hash(SmtpSettings(capabilities=("SIZE",)))
    assert SmtpSession.protocol == "smtp"
