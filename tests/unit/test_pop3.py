"""POP3 before login (SPEC 5) and the POP3 backend login (SPEC 9.3-9.5).

Every transcript goes through the chunking matrix (``chunking.run``): whole,
line by line, byte by byte and in random chunks, with identical results.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from mailgate.protocol.base import (
    Authenticate,
    Close,
    Credentials,
    Event,
    LineBuffer,
    Log,
    LoginFailed,
    LoginSucceeded,
    Send,
    StartTLS,
)
from mailgate.protocol.pop3 import Pop3Session, Pop3Settings, Pop3UpstreamLogin
from tests.unit.chunking import Run, Step, assert_secret_kept_out, b64, run

GREETING = b"+OK POP3 ready\r\n"
OK = b"+OK\r\n"
INVALID = b"-ERR invalid command\r\n"
USERNAME = b"+ VXNlcm5hbWU6\r\n"
PASSWORD = b"+ UGFzc3dvcmQ6\r\n"
CAPA = b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\n.\r\n"
CAPA_STLS = (
    b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN LOGIN\r\nSTLS\r\n.\r\n"
)
CAPA_STLS_ONLY = b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nSTLS\r\n.\r\n"
AUTH_LIST = b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\n.\r\n"

# Example salt from SPEC 3.4.
RANDOM, NOW, SERVER = 1181532555, 1795570090, "mail.example.com"
SALT = f"<{RANDOM}.{NOW}@{SERVER}>\r\n"
SALT_GREETING = b"+OK POP3 ready " + SALT.encode()

# Every password in these tests contains SECRET, so that no Log event may.
SECRET = "s3cret"
DIGEST = "b913a602c7eda7a495b4e6e7334d3890"


def new_session(**settings: Any) -> Pop3Session:
    settings.setdefault("server_name", SERVER)
    return Pop3Session(Pop3Settings(**settings), salt_random=lambda: RANDOM, clock=lambda: NOW)


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
    sent = result.sent
    assert sent.startswith(b"+OK POP3 ready")
    return sent[sent.index(b"\r\n") + 2 :]


def credentials(result: Run) -> list[Credentials]:
    return [event.credentials for event in result.of_type(Authenticate)]


def messages(result: Run) -> list[str]:
    return [log.message for log in result.logs]


def failed(message: str = "Invalid login or password") -> Callable[[Pop3Session], list[Event]]:
    return lambda s: s.auth_failed(message)


# --- greeting (SPEC 3.4) ---------------------------------------------------------


def test_greeting_without_salt() -> None:
    assert new_session().start() == [Send(GREETING)]
    assert new_session(auth_methods=("plain", "external")).start() == [Send(GREETING)]


@pytest.mark.parametrize("methods", [("apop",), ("cram-md5",), ("plain", "apop", "cram-md5")])
def test_greeting_with_salt(methods: tuple[str, ...]) -> None:
    assert new_session(auth_methods=methods).start() == [Send(SALT_GREETING)]


def test_greeting_salt_default_sources() -> None:
    session = Pop3Session(Pop3Settings(auth_methods=("apop",), server_name="mx.example"))
    [greeting] = session.start()
    assert isinstance(greeting, Send)
    match = re.fullmatch(rb"\+OK POP3 ready <(\d+)\.(\d+)@mx\.example>\r\n", greeting.data)
    assert match is not None
    assert int(match.group(1)) < 2**31


# --- initial state, one row of SPEC 5.2 at a time ------------------------------------


def test_user_then_pass() -> None:
    result = converse([b"USER john\r\n", f"PASS {SECRET}\r\n".encode()])
    assert replies(result) == OK
    assert credentials(result) == [Credentials("plain", "john", SECRET)]
    assert result.events[-1] == Authenticate(Credentials("plain", "john", SECRET))


def test_user_and_pass_keep_spaces() -> None:
    # SPEC 5.1: "USER john doe \r\n" -> login "john doe "
    result = converse(
        [f"user   john doe \r\npass  my {SECRET} \r\n".encode()], inspect=lambda s: s.login
    )
    assert credentials(result) == [Credentials("plain", "john doe ", f"my {SECRET} ")]
    assert result.inspected == "john doe "


@pytest.mark.parametrize("line", [b"USER\r\n", b"USER \r\n", b"USER    \r\n"])
def test_user_without_argument(line: bytes) -> None:
    result = converse([line, b"PASS x\r\n"])
    assert replies(result) == INVALID + INVALID
    assert not result.closed


def test_user_refused_with_starttls_only() -> None:
    result = converse([b"USER john\r\nPASS x\r\n"], starttls="only")
    assert replies(result) == INVALID + INVALID
    result = converse([b"USER john\r\n"], starttls="only", tls_active=True)
    assert replies(result) == OK


def test_pass_in_initial_state() -> None:
    assert replies(converse([f"PASS {SECRET}\r\n".encode()])) == INVALID


def test_apop() -> None:
    result = converse([f"APOP mrose {DIGEST}\r\n".encode()], auth_methods=("plain", "apop"))
    assert result.sent == SALT_GREETING
    assert credentials(result) == [Credentials("apop", "mrose", DIGEST, salt=SALT)]


@pytest.mark.parametrize(
    ("line", "settings"),
    [
        (f"APOP mrose {DIGEST}\r\n", {}),  # apop not enabled
        (f"APOP mrose {DIGEST}\r\n", {"auth_methods": ("cram-md5",)}),
        ("APOP mrose\r\n", {"auth_methods": ("apop",)}),
        (f"APOP mrose {DIGEST} x\r\n", {"auth_methods": ("apop",)}),
        (f"APOP mrose {DIGEST}\r\n", {"auth_methods": ("apop",), "starttls": "only"}),
    ],
)
def test_apop_refused(line: str, settings: dict[str, Any]) -> None:
    result = converse([line.encode()], **settings)
    assert replies(result) == INVALID
    assert not credentials(result)


def test_apop_allowed_after_tls_with_starttls_only() -> None:
    result = converse(
        [f"APOP mrose {DIGEST}\r\n".encode()],
        auth_methods=("apop",),
        starttls="only",
        tls_active=True,
    )
    assert credentials(result) == [Credentials("apop", "mrose", DIGEST, salt=SALT)]


def test_auth_list() -> None:
    assert replies(converse([b"AUTH\r\n"])) == AUTH_LIST
    every = ("plain", "apop", "cram-md5", "external")
    assert replies(converse([b"AUTH\r\n"], auth_methods=every)) == (
        b"+OK methods supported:\r\nPLAIN\r\nLOGIN\r\nCRAM-MD5\r\nEXTERNAL\r\n.\r\n"
    )
    # APOP is never listed; LOGIN comes with PLAIN only
    assert replies(converse([b"AUTH\r\n"], auth_methods=("apop",))) == (
        b"+OK methods supported:\r\n.\r\n"
    )


def test_auth_refused_with_starttls_only() -> None:
    for line in [b"AUTH\r\n", b"AUTH PLAIN\r\n", b"AUTH PLAIN " + b64(f"\0a\0{SECRET}") + b"\r\n"]:
        result = converse([line], starttls="only")
        assert replies(result) == INVALID
        assert not credentials(result)
    assert replies(converse([b"AUTH\r\n"], starttls="only", tls_active=True)) == AUTH_LIST


def test_auth_login() -> None:
    result = converse(
        [b"AUTH LOGIN\r\n", b64("john") + b"\r\n", b64(SECRET) + b"\r\n"],
        inspect=lambda s: s.login,
    )
    assert replies(result) == USERNAME + PASSWORD
    assert credentials(result) == [Credentials("plain", "john", SECRET)]
    assert result.inspected == "john"


def test_auth_login_initial_response() -> None:
    result = converse([b"auth login " + b64("john") + b"\r\n", b64(SECRET) + b"\r\n"])
    assert replies(result) == PASSWORD
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_auth_login_empty_answers_accepted() -> None:
    result = converse([b"AUTH LOGIN\r\n\r\n\r\n"])
    assert replies(result) == USERNAME + PASSWORD
    assert credentials(result) == [Credentials("plain", "", "")]


def test_auth_login_bad_initial_response() -> None:
    result = converse([b"AUTH LOGIN *\r\n", b"NOOP\r\n"])
    assert replies(result) == INVALID + OK
    assert messages(result) == ["client sent invalid base64 encoding in AUTH LOGIN command"]


def test_auth_plain() -> None:
    result = converse([b"AUTH PLAIN\r\n", b64(f"\0john\0{SECRET}") + b"\r\n"])
    assert replies(result) == b"+ \r\n"
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_auth_plain_initial_response() -> None:
    result = converse([b"AUTH PLAIN " + b64(f"admin\0john\0{SECRET}") + b"\r\n"])
    assert replies(result) == b""
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_auth_cram_md5() -> None:
    result = converse(
        [b"AUTH CRAM-MD5\r\n", b64(f"tim {DIGEST}") + b"\r\n"], auth_methods=("cram-md5",)
    )
    challenge = b"+ " + base64.b64encode(SALT.removesuffix("\r\n").encode()) + b"\r\n"
    assert replies(result) == challenge
    assert credentials(result) == [Credentials("cram-md5", "tim", DIGEST, salt=SALT)]


@pytest.mark.parametrize(
    ("line", "settings"),
    [
        (b"AUTH CRAM-MD5\r\n", {}),  # not enabled
        (b"AUTH CRAM-MD5\r\n", {"auth_methods": ("plain", "apop")}),
        (b"AUTH CRAM-MD5 " + b64(f"tim {DIGEST}") + b"\r\n", {"auth_methods": ("cram-md5",)}),
        (b"AUTH EXTERNAL\r\n", {}),
        (b"AUTH EXTERNAL " + b64("john") + b"\r\n", {}),
        (b"AUTH DIGEST-MD5\r\n", {}),
        (b"AUTH XOAUTH2 abc\r\n", {}),
        (b"AUTH PLAIN a b\r\n", {}),
        (b"AUTH LOGIN a b\r\n", {}),
        (b"AUTH EXTERNAL a b\r\n", {"auth_methods": ("external",)}),
    ],
)
def test_auth_refused(line: bytes, settings: dict[str, Any]) -> None:
    result = converse([line, b"NOOP\r\n"], **settings)
    assert replies(result) == INVALID + OK
    assert not result.logs


def test_auth_external() -> None:
    result = converse([b"AUTH EXTERNAL\r\n", b64("john") + b"\r\n"], auth_methods=("external",))
    assert replies(result) == USERNAME
    assert credentials(result) == [Credentials("external", "john")]


def test_auth_external_initial_response() -> None:
    result = converse([b"AUTH EXTERNAL " + b64("john") + b"\r\n"], auth_methods=("external",))
    assert replies(result) == b""
    assert credentials(result) == [Credentials("external", "john")]


def test_auth_mechanism_case_insensitive() -> None:
    result = converse([b"auth Plain\r\n", b64(f"\0john\0{SECRET}") + b"\r\n"])
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_sasl_response_first_token_only() -> None:
    # further tokens are ignored, but a fourth one is a parse error (SPEC 4.4)
    token = b64(f"\0john\0{SECRET}")
    result = converse([b"AUTH PLAIN\r\n", token + b"  ignored   too  \r\n"])
    assert credentials(result) == [Credentials("plain", "john", SECRET)]
    result = converse([b"AUTH PLAIN\r\n", token + b" a b c\r\n", b"NOOP\r\n"])
    assert replies(result) == b"+ \r\n" + INVALID + OK
    assert not credentials(result)


@pytest.mark.parametrize("line", [b"CAPA\r\n", b"capa\r\n", b"CAPA ignored args\r\n"])
def test_capa(line: bytes) -> None:
    assert replies(converse([line])) == CAPA


def test_noop() -> None:
    result = converse([b"NOOP\r\n", b"noop x y z\r\n"])
    assert replies(result) == OK + OK


@pytest.mark.parametrize("state_setup", [b"", b"USER john\r\n"])
def test_quit(state_setup: bytes) -> None:
    result = converse([state_setup + b"QUIT\r\nNOOP\r\n", b"NOOP\r\n"])
    assert replies(result) == (OK if state_setup else b"") + OK
    assert result.events[-1] == Close()


@pytest.mark.parametrize("mode", ["on", "only"])
def test_stls(mode: str) -> None:
    result = converse(
        [b"STLS\r\n", lambda s: s.tls_started(), b"CAPA\r\n"],
        inspect=lambda s: s.tls_active,
        starttls=mode,
    )
    assert replies(result) == OK + CAPA
    assert result.events[1:3] == [Send(OK), StartTLS()]
    assert result.inspected is True


@pytest.mark.parametrize(
    "settings", [{}, {"starttls": "off"}, {"starttls": "on", "tls_active": True}]
)
def test_stls_refused(settings: dict[str, Any]) -> None:
    result = converse([b"STLS\r\n"], **settings)
    assert replies(result) == INVALID
    assert not result.of_type(StartTLS)


def test_stls_refused_once_tls_is_up() -> None:
    result = converse([b"STLS\r\n", lambda s: s.tls_started(), b"STLS\r\n"], starttls="on")
    assert replies(result) == OK + INVALID
    assert len(result.of_type(StartTLS)) == 1


def test_stls_discards_pipelined_input() -> None:
    # CVE-2014-3556: commands injected after STLS must not run inside TLS,
    # whether they came in the same read or before the handshake finished.
    result = converse(
        [b"STLS\r\nUSER evil\r\n", b"PASS evil\r\n", lambda s: s.tls_started(), b"PASS x\r\n"],
        inspect=lambda s: (s.login, s.pending_input()),
        starttls="on",
    )
    assert replies(result) == OK + INVALID
    assert not credentials(result)
    assert result.inspected == ("", b"")


def test_no_new_greeting_after_stls() -> None:
    result = converse([b"STLS\r\n", lambda s: s.tls_started()], starttls="only")
    assert result.sent == GREETING + OK


# --- CAPA variants (SPEC 5.3) ------------------------------------------------------


def test_capa_variants() -> None:
    assert replies(converse([b"CAPA\r\n"], starttls="off")) == CAPA
    assert replies(converse([b"CAPA\r\n"], starttls="on")) == CAPA_STLS
    assert replies(converse([b"CAPA\r\n"], starttls="only")) == CAPA_STLS_ONLY
    for mode in ("on", "only"):
        assert replies(converse([b"CAPA\r\n"], starttls=mode, tls_active=True)) == CAPA


@pytest.mark.parametrize("mode", ["off", "on", "only"])
def test_capa_in_user_state_never_shows_stls(mode: str) -> None:
    transcript: list[Step] = [b"USER john\r\nCAPA\r\n"]
    if mode == "only":
        transcript = [b"STLS\r\n", lambda s: s.tls_started(), *transcript]
    result = converse(transcript, starttls=mode)
    assert replies(result).endswith(OK + CAPA)


def test_capa_custom_lists() -> None:
    settings: dict[str, Any] = {
        "capabilities": ("TOP", "user", "SASL-IR-ish", "EXPIRE 30"),
        "auth_methods": ("external", "cram-md5", "plain"),
    }
    assert replies(converse([b"CAPA\r\n"], **settings)) == (
        b"+OK Capability list follows\r\nTOP\r\nuser\r\nSASL-IR-ish\r\nEXPIRE 30\r\n"
        b"SASL PLAIN LOGIN CRAM-MD5 EXTERNAL\r\n.\r\n"
    )
    assert replies(converse([b"CAPA\r\n"], starttls="only", **settings)) == (
        b"+OK Capability list follows\r\nTOP\r\nSASL-IR-ish\r\nEXPIRE 30\r\nSTLS\r\n.\r\n"
    )


def test_capa_sasl_line_without_mechanisms() -> None:
    result = converse([b"CAPA\r\n"], capabilities=(), auth_methods=("apop",))
    assert replies(result) == b"+OK Capability list follows\r\nSASL\r\n.\r\n"


# --- USER state (SPEC 5.2) ---------------------------------------------------------


def test_user_state_noop_and_capa_keep_the_state() -> None:
    result = converse([b"USER john\r\nNOOP\r\nCAPA\r\n", f"PASS {SECRET}\r\n".encode()])
    assert replies(result) == OK + OK + CAPA
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


@pytest.mark.parametrize(
    "line",
    [b"USER other", b"AUTH", b"AUTH PLAIN", b"STLS", b"APOP a b", b"PASS", b"PASS   "],
)
def test_user_state_anything_else_returns_to_initial(line: bytes) -> None:
    result = converse(
        [b"USER john\r\n", line + b"\r\n", b"PASS x\r\n"],
        auth_methods=("plain", "apop"),
        starttls="on",
    )
    assert replies(result) == OK + INVALID + INVALID
    assert not credentials(result)
    assert not result.logs


def test_user_state_parse_error_returns_to_initial() -> None:
    result = converse([b"USER john\r\nSTAT\r\nPASS x\r\n"])
    assert replies(result) == OK + INVALID + INVALID


# --- tokenizer (SPEC 4.2, 5.1) -------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"STAT\r\n",
        b"LIST\r\n",
        b"RETR 1\r\n",
        b"DELE 1\r\n",
        b"RSET\r\n",
        b"TOP 1 2\r\n",
        b"UIDL\r\n",
        b"LAST\r\n",
        b"\r\n",
        b"\n",
        b" NOOP\r\n",
        b"NOOPS\r\n",
        b"NOP\r\n",
        b"NO0P\r\n",
        b"NOOP\tx\r\n",
        b"CAPA a b c d\r\n",
        b"NOOP\rx\r\n",
        b"NOOP \r \r\n",
        b"USER jo\rhn\r\n",
        b"\xffOOP\r\n",
    ],
)
def test_parse_errors(line: bytes) -> None:
    result = converse([line, b"NOOP\r\n"])
    assert replies(result) == INVALID + OK
    assert not result.logs


def test_bare_lf_and_crlf_both_end_lines() -> None:
    result = converse([b"NOOP\nnoop\r\nUSER a b\nPASS c d \n"])
    assert replies(result) == OK + OK + OK
    assert credentials(result) == [Credentials("plain", "a b", "c d ")]


def test_three_arguments_are_accepted() -> None:
    assert replies(converse([b"NOOP a  b c   \r\n"])) == OK


def test_parse_error_discards_the_rest_of_the_line() -> None:
    result = converse([b"NOOP\rQUIT\r\nNOOP\r\n"])
    assert replies(result) == INVALID + OK
    assert not result.closed


# --- max_errors (SPEC 4.5) ---------------------------------------------------------


def test_max_errors_default() -> None:
    result = converse([b"STAT\r\n" * 4, b"NOOP\r\n", b"LIST\r\nNOOP\r\n"])
    assert replies(result) == INVALID * 4 + OK + INVALID
    assert messages(result) == ["client sent too many invalid commands"]
    assert result.events[-3:] == [
        Log("info", "client sent too many invalid commands"),
        Send(INVALID),
        Close(),
    ]


@pytest.mark.parametrize("limit", [0, 1])
def test_max_errors_low(limit: int) -> None:
    result = converse([b"STAT\r\nNOOP\r\n"], max_errors=limit)
    assert replies(result) == INVALID
    assert result.closed


def test_handler_rejections_do_not_count() -> None:
    result = converse([b"PASS x\r\n" * 10 + b"AUTH FOO\r\n" * 10 + b"AUTH PLAIN\r\n*\r\n" * 5])
    assert not result.closed
    assert replies(result).count(INVALID) == 25


def test_sasl_parse_errors_count() -> None:
    result = converse([b"AUTH PLAIN\r\na b c d\r\n" * 2], max_errors=2)
    assert replies(result) == b"+ \r\n" + INVALID + b"+ \r\n" + INVALID
    assert result.closed


def test_error_counter_is_never_reset() -> None:
    transcript: list[Step] = [
        b"STAT\r\nSTAT\r\nUSER a\r\nPASS b\r\n",
        failed(),
        b"STAT\r\nSTAT\r\n",
    ]
    assert converse(transcript, max_errors=4).closed


# --- too long commands (SPEC 4.1, "Do better") ---------------------------------------


def test_too_long_command() -> None:
    line = b"USER " + b"a" * 5000
    result = converse([line])
    assert replies(result) == INVALID
    assert result.closed
    [message] = messages(result)
    assert message.startswith('client sent too long command "USER aaaa')
    assert message.endswith('..."')
    assert len(message) < 300


def test_line_limit_is_client_buffer() -> None:
    # nginx's 128-byte buffer: "USER" + 130 chars is too long (SPEC 4.1)
    assert converse([b"USER " + b"a" * 130 + b"\r\n"], client_buffer=128).closed
    # a line of exactly client_buffer bytes, CRLF included, fits
    fits = b"USER " + b"a" * (128 - 7) + b"\r\n"
    assert len(fits) == 128
    result = converse([fits], client_buffer=128)
    assert replies(result) == OK
    result = converse([fits[:-2] + b"a\r\n"], client_buffer=128)
    assert replies(result) == INVALID
    assert result.closed
    assert messages(result) == [f'client sent too long command "{fits[:-2].decode()}a\r"']


def test_long_sasl_token_fits_default_buffer() -> None:
    password = SECRET + "x" * 2000
    result = converse([b"AUTH PLAIN " + b64(f"\0john\0{password}") + b"\r\n"])
    assert credentials(result) == [Credentials("plain", "john", password)]


def test_too_long_is_not_an_error() -> None:
    result = converse([b"STAT\r\n", b"NOOP " + b"x" * 200], client_buffer=64, max_errors=2)
    assert replies(result) == INVALID + INVALID
    assert messages(result)[0].startswith("client sent too long command")


@pytest.mark.parametrize(
    ("prefix", "shown"),
    [
        (f"PASS {SECRET}", "PASS ..."),
        (f"pass {SECRET}", "pass ..."),
        (f"APOP john {SECRET}", "APOP ..."),
        ("AUTH PLAIN " + b64(f"\0john\0{SECRET}").decode(), "AUTH PLAIN ..."),
    ],
)
def test_too_long_log_hides_secrets(prefix: str, shown: str) -> None:
    result = converse([prefix.encode() + b"A" * 300], client_buffer=128)
    assert messages(result) == [f'client sent too long command "{shown}"']


def test_too_long_sasl_response_hidden() -> None:
    result = converse([b"AUTH PLAIN\r\n", b64(f"\0john\0{SECRET}") + b"A" * 300], client_buffer=128)
    assert messages(result) == ['client sent too long command "..."']
    assert result.closed


# --- pipelining (SPEC 4.3, "Do better") ------------------------------------------------


def test_thirty_noops() -> None:
    # nginx answers 21 of these, then fails with "too long" (SPEC 4.1)
    result = converse([b"NOOP\r\n" * 30], client_buffer=128)
    assert replies(result) == OK * 30
    assert not result.closed


def test_pipelined_input_after_pass_is_pending() -> None:
    result = converse(
        [f"USER john\r\nPASS {SECRET}\r\nSTAT\r\nLIST\r\n".encode(), b"RETR 1\r\n"],
        inspect=lambda s: s.pending_input(),
    )
    assert replies(result) == OK
    assert result.events[-1] == Authenticate(Credentials("plain", "john", SECRET))
    assert result.inspected == b"STAT\r\nLIST\r\nRETR 1\r\n"


def test_pending_input_after_sasl() -> None:
    result = converse(
        [b"AUTH PLAIN " + b64(f"\0john\0{SECRET}") + b"\r\nSTAT\r\nQUIT\r\n"],
        inspect=lambda s: s.pending_input(),
    )
    assert result.events[-1] == Authenticate(Credentials("plain", "john", SECRET))
    assert result.inspected == b"STAT\r\nQUIT\r\n"
    assert not result.closed


# --- after the auth server's answer -------------------------------------------------


def test_auth_failed_then_buffered_input_is_handled() -> None:
    result = converse(
        [
            f"USER john\r\nPASS {SECRET}\r\nNOOP\r\nPASS again\r\nCAPA\r\n".encode(),
            failed("Invalid login or password"),
            b"USER jim\r\n",
        ],
        inspect=lambda s: s.login,
    )
    assert replies(result) == (
        OK + b"-ERR Invalid login or password\r\n" + OK + INVALID + CAPA + OK
    )
    assert result.inspected == "jim"


def test_auth_failed_after_sasl_returns_to_initial_state() -> None:
    result = converse(
        [
            b"AUTH LOGIN " + b64("john") + b"\r\n" + b64(SECRET) + b"\r\n",
            failed("Temporary problem"),
            b"AUTH LOGIN\r\n",
        ],
        inspect=lambda s: s.login,
    )
    assert replies(result) == PASSWORD + b"-ERR Temporary problem\r\n" + USERNAME
    assert result.inspected == "john"


def test_auth_failed_then_login_again() -> None:
    result = converse(
        [
            f"USER a\r\nPASS {SECRET}\r\n".encode(),
            failed(),
            f"USER b\r\nPASS {SECRET}2\r\n".encode(),
        ]
    )
    assert credentials(result) == [
        Credentials("plain", "a", SECRET),
        Credentials("plain", "b", SECRET + "2"),
    ]


def test_auth_failed_needs_a_pending_authenticate() -> None:
    session = new_session()
    session.start()
    with pytest.raises(RuntimeError):
        session.auth_failed("no")


def test_auth_rejected() -> None:
    result = converse([b"USER a\r\nPASS b\r\nNOOP\r\n", lambda s: s.auth_rejected("Go away")])
    assert replies(result) == OK + b"-ERR Go away\r\n"
    assert result.events[-1] == Close()


def test_internal_error() -> None:
    result = converse([b"USER a\r\nPASS b\r\n", lambda s: s.internal_error(), b"NOOP\r\n"])
    assert replies(result) == OK + b"-ERR internal server error\r\n"
    assert result.events[-1] == Close()


def test_input_ignored_after_close() -> None:
    result = converse([b"QUIT\r\n", b"NOOP\r\n"], inspect=lambda s: s.pending_input())
    assert result.inspected == b""


# --- SASL failures (SPEC 4.4) -------------------------------------------------------


@pytest.mark.parametrize(
    ("transcript", "message"),
    [
        ([b"AUTH PLAIN *\r\n"], "client sent invalid base64 encoding in AUTH PLAIN command"),
        (
            [b"AUTH PLAIN\r\n", b"*\r\n"],
            "client sent invalid base64 encoding in AUTH PLAIN command",
        ),
        (
            [b"AUTH PLAIN " + b64("john") + b"\r\n"],
            "client sent invalid login in AUTH PLAIN command",
        ),
        ([b"AUTH PLAIN\r\n", b"\r\n"], "client sent invalid login in AUTH PLAIN command"),
        (
            [b"AUTH PLAIN\r\n", b64("\0john") + b"\r\n"],
            "client sent invalid password in AUTH PLAIN command",
        ),
        (
            [b"AUTH LOGIN\r\n", b"*\r\n"],
            "client sent invalid base64 encoding in AUTH LOGIN command",
        ),
        (
            [b"AUTH LOGIN\r\n", b64("j") + b"\r\n", b"*\r\n"],
            "client sent invalid base64 encoding in AUTH LOGIN command",
        ),
        (
            [b"AUTH CRAM-MD5\r\n", b"*\r\n"],
            "client sent invalid base64 encoding in AUTH CRAM-MD5 command",
        ),
        (
            [b"AUTH CRAM-MD5\r\n", b64("tim short") + b"\r\n"],
            "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command",
        ),
        ([b"AUTH EXTERNAL *\r\n"], "client sent invalid base64 encoding in AUTH EXTERNAL command"),
        (
            [b"AUTH EXTERNAL\r\n", b"*\r\n"],
            "client sent invalid base64 encoding in AUTH EXTERNAL command",
        ),
    ],
)
def test_sasl_failures(transcript: list[bytes], message: str) -> None:
    result = converse([*transcript, b"PASS x\r\n"], auth_methods=("plain", "cram-md5", "external"))
    assert messages(result) == [message]
    # the invalid-command reply, back in the initial state, not closed
    assert replies(result).endswith(INVALID + INVALID)
    assert not credentials(result)
    assert not result.closed
    log_at = result.events.index(Log("info", message))
    assert result.events[log_at + 1] == Send(INVALID)


def test_sasl_cancel_is_not_special() -> None:
    # "*" fails base64 decoding and aborts the exchange (SPEC 4.4)
    result = converse([b"AUTH LOGIN\r\n*\r\nNOOP\r\n"])
    assert replies(result) == USERNAME + INVALID + OK


def test_commands_during_sasl_are_responses() -> None:
    # "QUIT" is valid base64: decoded, it holds no NUL -> invalid login
    result = converse([b"AUTH PLAIN\r\nQUIT\r\n"])
    assert replies(result) == b"+ \r\n" + INVALID
    assert messages(result) == ["client sent invalid login in AUTH PLAIN command"]
    assert not result.closed


def test_partial_login_kept_after_failure() -> None:
    result = converse([b"AUTH LOGIN " + b64("john") + b"\r\n*\r\n"], inspect=lambda s: s.login)
    assert result.inspected == "john"
    result = converse(
        [b"AUTH CRAM-MD5\r\n" + b64("tim short") + b"\r\n"],
        inspect=lambda s: s.login,
        auth_methods=("cram-md5",),
    )
    assert result.inspected == "tim"


@pytest.mark.parametrize(
    ("transcript", "message"),
    [
        ([b"AUTH PLAIN " + b64(f"\0john\r\nDELE 1\0{SECRET}")], "invalid login in AUTH PLAIN"),
        ([b"AUTH PLAIN", b64(f"\0john\0{SECRET}\r\nDELE 1")], "invalid password in AUTH PLAIN"),
        ([b"AUTH PLAIN", b64(f"\0john\0{SECRET}\n")], "invalid password in AUTH PLAIN"),
        ([b"AUTH LOGIN " + b64("john\r\nDELE 1")], "invalid login in AUTH LOGIN"),
        ([b"AUTH LOGIN", b64("john\n")], "invalid login in AUTH LOGIN"),
        (
            [b"AUTH LOGIN", b64("john"), b64(f"{SECRET}\r\nDELE 1")],
            "invalid password in AUTH LOGIN",
        ),
        ([b"AUTH EXTERNAL " + b64("john\rx")], "invalid login in AUTH EXTERNAL"),
        ([b"AUTH CRAM-MD5", b64(f"ti\nm {DIGEST}")], "invalid login in AUTH CRAM-MD5"),
    ],
)
def test_line_breaks_in_decoded_credentials_refused(transcript: list[bytes], message: str) -> None:
    # nginx PR 1620: CR/LF would become a second backend command line.
    result = converse(
        [line + b"\r\n" for line in transcript],
        inspect=lambda s: s.login,
        auth_methods=("plain", "cram-md5", "external"),
    )
    assert messages(result) == [f"client sent {message} command"]
    assert replies(result).endswith(INVALID)
    assert not credentials(result)
    assert "\r" not in result.inspected and "\n" not in result.inspected


# --- passwords never logged ----------------------------------------------------------


def test_password_never_in_log_events() -> None:
    token = b64(f"\0john\0{SECRET}")
    transcripts: list[list[Step]] = [
        [f"USER john\r\nPASS {SECRET}\r\n".encode(), failed()],
        [b"AUTH PLAIN " + token + b"\r\n", failed()],
        [b"AUTH PLAIN\r\n" + token + b"\r\n", failed()],
        [b"AUTH LOGIN\r\n" + b64("john") + b"\r\n" + b64(SECRET) + b"\r\n", failed()],
        [b"AUTH LOGIN " + b64("john") + b"\r\n" + b64(SECRET)[:-1] + b"*\r\n"],
        [f"USER john\r\nPASS {SECRET}".encode() + b"x" * 9000],
        [b"AUTH PLAIN\r\n" + token + b"x" * 9000],
        [b"AUTH PLAIN\r\n" + b64(f"\0john\0{SECRET}\n") + b"\r\n"],
        [b"AUTH PLAIN " + b64(f"\0john{SECRET}") + b"\r\n"],
    ]
    for transcript in transcripts:
        result = converse(transcript)  # converse checks every Log event
        for event in result.events:
            if not isinstance(event, Send):
                assert SECRET not in repr(event)


# --- settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"starttls": "maybe"},
        {"auth_methods": ("plain", "digest-md5")},
        {"max_errors": -1},
        {"client_buffer": 0},
        {"proxy_buffer": 0},
    ],
)
def test_settings_validation(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Pop3Settings(**settings)


def test_settings_are_hashable_data() -> None:
    assert Pop3Settings() == Pop3Settings()
    assert hash(Pop3Settings(capabilities=("TOP",))) == hash(Pop3Settings(capabilities=("TOP",)))
    assert Pop3Session.protocol == "pop3"


# --- backend login (SPEC 9.3-9.5) -----------------------------------------------------


def upstream(
    responses: Sequence[bytes], login: str = "john", password: str = SECRET, size: int = 4096
) -> Run:
    return run(
        lambda: Pop3UpstreamLogin(login, password, size),
        list(responses),
        start=False,
        inspect=lambda u: u.action,
    )


def test_upstream_login_success() -> None:
    result = upstream([b"+OK ready\r\n", b"+OK\r\n", b"+OK PASS accepted\r\n"])
    assert result.events == [
        Send(b"USER john\r\n"),
        Send(f"PASS {SECRET}\r\n".encode()),
        LoginSucceeded(client_reply=b"+OK PASS accepted\r\n"),
    ]


def test_upstream_login_sends_spaces_as_is() -> None:
    result = upstream([b"+OK\r\n", b"+OK\r\n"], login="john doe ", password="a b")
    assert result.sent == b"USER john doe \r\nPASS a b\r\n"


def test_upstream_login_bare_lf() -> None:
    result = upstream([b"+OK ready\n", b"+OK\n", b"+OK welcome\n"])
    assert result.events[-1] == LoginSucceeded(client_reply=b"+OK welcome\n")


@pytest.mark.parametrize("at", [0, 1, 2])
def test_upstream_login_failure(at: int) -> None:
    responses = [b"+OK ready\r\n", b"+OK\r\n", b"+OK\r\n"]
    responses[at] = b"-ERR [AUTH] bad password\r\n"
    result = upstream(responses)
    assert result.events[-1] == LoginFailed(
        response="-ERR [AUTH] bad password", client_reply=b"-ERR [AUTH] bad password\r\n"
    )
    assert len(result.of_type(Send)) == at
    assert result.inspected == "reading response from upstream"


@pytest.mark.parametrize("greeting", [b"* OK IMAP4 ready\r\n", b"+ok\r\n", b"+\r\n", b"\r\n"])
def test_upstream_login_invalid_greeting(greeting: bytes) -> None:
    [event] = upstream([greeting]).events
    assert isinstance(event, LoginFailed)
    assert event.client_reply == greeting
    assert not event.too_long


def test_upstream_login_too_long() -> None:
    result = upstream([b"+OK " + b"x" * 100], size=64)
    assert result.events == [
        LoginFailed(response="+OK " + "x" * 60, client_reply=b"+OK " + b"x" * 60, too_long=True)
    ]
    # a line of exactly the buffer size fits
    result = upstream([b"+OK " + b"x" * 58 + b"\r\n"], size=64)
    assert result.events == [Send(b"USER john\r\n")]


def test_upstream_login_actions() -> None:
    login = Pop3UpstreamLogin("john", SECRET)
    assert login.action == "reading response from upstream"
    login.receive_data(b"+OK\r\n")
    assert login.action == "sending user name to upstream"
    login.receive_data(b"+O")
    assert login.action == "reading response from upstream"
    login.receive_data(b"K\r\n")
    assert login.action == "sending password to upstream"
    assert not login.done
    login.receive_data(b"+OK\r\n")
    assert login.done
    assert login.receive_data(b"+OK more\r\n") == []


def test_upstream_login_keeps_what_follows_the_reply() -> None:
    # whatever follows the PASS reply in the same read reaches the client
    login = Pop3UpstreamLogin("john", SECRET)
    events = login.receive_data(b"+OK\r\n+OK\r\n+OK in\r\nextra")
    assert events[-1] == LoginSucceeded(client_reply=b"+OK in\r\nextra")


def test_upstream_login_never_shows_the_password() -> None:
    login = Pop3UpstreamLogin("john", SECRET)
    events = login.receive_data(b"+OK\r\n+OK\r\n")
    assert SECRET not in repr(login) and SECRET not in repr(events)


def test_session_builds_the_upstream_login() -> None:
    session = new_session(proxy_buffer=64)
    login = session.upstream_login("john", SECRET)
    assert isinstance(login, Pop3UpstreamLogin)
    assert login.receive_data(b"+OK " + b"x" * 70)[0] == LoginFailed(
        response="+OK " + "x" * 60, client_reply=b"+OK " + b"x" * 60, too_long=True
    )


# --- the shared line buffer (base.LineBuffer) ------------------------------------------


def test_line_buffer() -> None:
    buffer = LineBuffer(8)
    buffer.feed(b"ab")
    assert buffer.pop_line() is None
    buffer.feed(b"c\r\nde\nf")
    assert buffer.pop_line() == b"abc\r\n"
    assert buffer.pop_line() == b"de\n"
    assert buffer.pop_line() is None
    assert not buffer.too_long
    assert buffer.take() == b"f"
    assert len(buffer) == 0


def test_line_buffer_limit_counts_the_lf() -> None:
    buffer = LineBuffer(4)
    for byte in b"abc":  # scanned a byte at a time, the LF is still found
        buffer.feed(bytes([byte]))
        assert buffer.pop_line() is None
    buffer.feed(b"\nabcd\n")
    assert buffer.pop_line() == b"abc\n"
    assert buffer.pop_line() is None
    assert buffer.too_long
    assert buffer.peek(4) == b"abcd"
    buffer.clear()
    assert not buffer.too_long
