"""IMAP before login (SPEC 6), played through the chunking matrix.

Every transcript is fed whole, line by line, byte by byte and in random
chunks (``chunking.run``) and must give identical events.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from mailgate.protocol.base import Authenticate, Close, Credentials, Event, Log, Send, StartTLS
from mailgate.protocol.imap import ImapSession, ImapSettings, ImapUpstreamLogin
from mailgate.protocol.pop3 import Pop3Session
from tests.unit.chunking import Run, Step, assert_secret_kept_out, b64, run

GREETING = b"* OK IMAP4 ready\r\n"
CAPS = b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN\r\n"
CAPS_STARTTLS = b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS AUTH=PLAIN STARTTLS\r\n"
CAPS_STARTTLS_ONLY = b"* CAPABILITY IMAP4 IMAP4rev1 UIDPLUS STARTTLS LOGINDISABLED\r\n"
NEXT = b"+ OK\r\n"  # the literal continuation
USERNAME = b"+ VXNlcm5hbWU6\r\n"
PASSWORD = b"+ UGFzc3dvcmQ6\r\n"
PLAIN_NEXT = b"+ \r\n"

# Example salt from SPEC 3.4.
RANDOM, NOW, SERVER = 1181532555, 1795570090, "mail.example.com"
SALT = f"<{RANDOM}.{NOW}@{SERVER}>\r\n"
CRAM_CHALLENGE = b"+ " + base64.b64encode(SALT.removesuffix("\r\n").encode()) + b"\r\n"

# Every password in these tests contains SECRET, so that no Log event may.
SECRET = "s3cret"
DIGEST = "b913a602c7eda7a495b4e6e7334d3890"
EVERY_METHOD = ("plain", "login", "cram-md5", "external")


def ok(tag: str) -> bytes:
    return tag.encode() + b" OK completed\r\n"


def bad(tag: str = "*") -> bytes:
    return tag.encode() + b" BAD invalid command\r\n"


def no(tag: str, message: str = "Invalid login or password") -> bytes:
    return f"{tag} NO {message}\r\n".encode()


def new_session(**settings: Any) -> ImapSession:
    settings.setdefault("server_name", SERVER)
    return ImapSession(ImapSettings(**settings), salt_random=lambda: RANDOM, clock=lambda: NOW)


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
    assert sent.startswith(GREETING)
    return sent[len(GREETING) :]


def credentials(result: Run) -> list[Credentials]:
    return [event.credentials for event in result.of_type(Authenticate)]


def messages(result: Run) -> list[str]:
    return [log.message for log in result.logs]


def failed(message: str = "Invalid login or password") -> Callable[[ImapSession], list[Event]]:
    return lambda s: s.auth_failed(message)


def plain(login: str = "john", password: str = SECRET, authzid: str = "") -> bytes:
    return b64(f"{authzid}\0{login}\0{password}")


# --- greeting and the driver contract (SPEC 3.4) ------------------------------------


def test_greeting() -> None:
    assert new_session().start() == [Send(GREETING)]
    assert new_session(auth_methods=("cram-md5",)).start() == [Send(GREETING)]


def test_driver_contract_matches_pop3() -> None:
    # the gevent driver calls these on every protocol's session
    for name in [
        "start",
        "receive_data",
        "auth_failed",
        "auth_rejected",
        "internal_error",
        "tls_started",
        "pending_input",
        "upstream_login",
        "login",
        "protocol",
    ]:
        assert hasattr(Pop3Session, name)
        assert hasattr(ImapSession, name)
    assert ImapSession.protocol == "imap"


# --- CAPABILITY (SPEC 6.4) -----------------------------------------------------------


@pytest.mark.parametrize(
    "line", [b"a1 CAPABILITY\r\n", b"a1 capability\r\n", b"a1 Capability extra args\r\n"]
)
def test_capability(line: bytes) -> None:
    assert replies(converse([line])) == CAPS + ok("a1")


def test_capability_variants() -> None:
    line = [b"a1 CAPABILITY\r\n"]
    assert replies(converse(line, starttls="off")) == CAPS + ok("a1")
    assert replies(converse(line, starttls="on")) == CAPS_STARTTLS + ok("a1")
    assert replies(converse(line, starttls="only")) == CAPS_STARTTLS_ONLY + ok("a1")
    for mode in ("on", "only"):
        assert replies(converse(line, starttls=mode, tls_active=True)) == CAPS + ok("a1")


def test_capability_after_starttls() -> None:
    result = converse(
        [b"a1 CAPABILITY\r\n", b"a2 STARTTLS\r\n", lambda s: s.tls_started(), b"a3 CAPABILITY\r\n"],
        starttls="only",
    )
    assert replies(result) == CAPS_STARTTLS_ONLY + ok("a1") + ok("a2") + CAPS + ok("a3")


def test_capability_custom_lists() -> None:
    settings: dict[str, Any] = {
        "capabilities": ("IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "x-Custom"),
        "auth_methods": ("external", "cram-md5", "login", "plain"),
    }
    assert replies(converse([b"a CAPABILITY\r\n"], **settings)) == (
        b"* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID x-Custom"
        b" AUTH=PLAIN AUTH=LOGIN AUTH=CRAM-MD5 AUTH=EXTERNAL\r\n" + ok("a")
    )
    assert replies(converse([b"a CAPABILITY\r\n"], starttls="only", **settings)) == (
        b"* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID x-Custom STARTTLS LOGINDISABLED\r\n" + ok("a")
    )


def test_sasl_ir_and_literal_plus_not_advertised_by_default() -> None:
    caps = replies(converse([b"a CAPABILITY\r\n"], auth_methods=EVERY_METHOD))
    assert b"SASL-IR" not in caps and b"LITERAL+" not in caps and b" ID" not in caps


def test_capability_without_mechanisms() -> None:
    result = converse([b"a CAPABILITY\r\n"], capabilities=(), auth_methods=())
    assert replies(result) == b"* CAPABILITY\r\n" + ok("a")


def test_capability_with_a_literal_argument() -> None:
    assert replies(converse([b"a1 CAPABILITY {3}\r\n", b"abc\r\n"])) == NEXT + CAPS + ok("a1")


# --- NOOP, LOGOUT ------------------------------------------------------------------------


def test_noop() -> None:
    assert replies(converse([b"a1 NOOP\r\na2 noop x y z\r\n"])) == ok("a1") + ok("a2")


def test_logout() -> None:
    result = converse([b"a1 LOGOUT\r\na2 NOOP\r\n", b"a3 NOOP\r\n"])
    assert replies(result) == b"* BYE\r\n" + ok("a1")
    assert result.events[-1] == Close()


def test_input_ignored_after_close() -> None:
    result = converse([b"a1 LOGOUT\r\n", b"a2 NOOP\r\n"], inspect=lambda s: s.pending_input())
    assert result.inspected == b""


# --- STARTTLS ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["on", "only"])
def test_starttls(mode: str) -> None:
    result = converse(
        [b"a1 STARTTLS\r\n", lambda s: s.tls_started(), b"a2 NOOP\r\n"],
        inspect=lambda s: s.tls_active,
        starttls=mode,
    )
    assert replies(result) == ok("a1") + ok("a2")
    assert result.events[1:3] == [Send(ok("a1")), StartTLS()]
    assert result.inspected is True


@pytest.mark.parametrize(
    "settings", [{}, {"starttls": "off"}, {"starttls": "on", "tls_active": True}]
)
def test_starttls_refused(settings: dict[str, Any]) -> None:
    result = converse([b"a1 STARTTLS\r\n"], **settings)
    assert replies(result) == bad("a1")
    assert not result.of_type(StartTLS)


def test_starttls_refused_once_tls_is_up() -> None:
    result = converse(
        [b"a1 STARTTLS\r\n", lambda s: s.tls_started(), b"a2 STARTTLS\r\n"], starttls="on"
    )
    assert replies(result) == ok("a1") + bad("a2")
    assert len(result.of_type(StartTLS)) == 1


def test_starttls_discards_pipelined_input() -> None:
    # CVE-2014-3556: commands injected after STARTTLS must not run inside
    # TLS, whether they came in the same read or before the handshake ended.
    result = converse(
        [
            b"a1 STARTTLS\r\na2 LOGIN evil {4}\r\n",
            b"evil\r\na3 NOOP\r\n",
            lambda s: s.tls_started(),
            b"a4 NOOP\r\n",
        ],
        inspect=lambda s: (s.login, s.pending_input()),
        starttls="on",
    )
    assert replies(result) == ok("a1") + ok("a4")
    assert not credentials(result)
    assert result.inspected == ("", b"")


def test_no_new_greeting_after_starttls() -> None:
    result = converse([b"a1 STARTTLS\r\n", lambda s: s.tls_started()], starttls="only")
    assert result.sent == GREETING + ok("a1")


# --- LOGIN -----------------------------------------------------------------------------------


def test_login_atoms() -> None:
    result = converse([f"a1 LOGIN john {SECRET}\r\n".encode()], inspect=lambda s: s.login)
    assert replies(result) == b""
    assert result.events[-1] == Authenticate(Credentials("plain", "john", SECRET))
    assert result.inspected == "john"


def test_login_quoted_strings_with_escapes() -> None:
    result = converse([f'a1 login "john \\"j\\" doe" "{SECRET}\\\\x y"\r\n'.encode()])
    assert credentials(result) == [Credentials("plain", 'john "j" doe', f"{SECRET}\\x y")]


def test_login_synchronising_literals() -> None:
    login_line = b"a1 LOGIN {4}\r\n"
    user_line = b"john {%d}\r\n" % len(SECRET)
    result = converse([login_line, user_line, SECRET.encode() + b"\r\n"])
    # each continuation is sent as soon as its literal is announced
    assert result.events[1:3] == [Send(NEXT), Send(NEXT)]
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_login_literals_split_across_reads() -> None:
    result = converse([b"a1 LOGIN {4}\r\njo", b"hn {6}", b"\r\n", b"s3cr", b"et", b"\r\n"])
    assert replies(result) == NEXT + NEXT
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_login_non_synchronising_literals() -> None:
    # LITERAL+ (RFC 7888), accepted though not advertised; new Outlook
    result = converse([f"a1 LOGIN {{4+}}\r\njohn {{6+}}\r\n{SECRET}\r\n".encode()])
    assert replies(result) == b""
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_login_with_utf8_and_nul_in_literals() -> None:
    login = "jöhn".encode()
    password = b"\x00" + SECRET.encode() + b"\xff"
    line = b"a1 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(login), login, len(password), password)
    [creds] = credentials(converse([line]))
    assert creds.login == "jöhn"
    assert creds.password.encode("utf-8", "surrogateescape") == password


@pytest.mark.parametrize(
    "line",
    [
        b"a1 LOGIN {0}\r\n s3cret\r\n",  # empty login
        b'a1 LOGIN "" s3cret\r\n',
        b"a1 LOGIN john\r\n",
        b"a1 LOGIN\r\n",
        b"a1 LOGIN john s3cret extra\r\n",
    ],
)
def test_login_refused(line: bytes) -> None:
    result = converse([line, b"a2 NOOP\r\n"], max_errors=1)
    assert replies(result).endswith(bad("a1") + ok("a2"))  # not counted as errors
    assert not credentials(result)


def test_login_empty_password_from_zero_literal() -> None:
    # nginx takes the byte after "{0}\r\n" as the literal (SPEC 6.5)
    result = converse(
        [b"a1 LOGIN john {0}\r\n\r\na2 NOOP\r\n"], inspect=lambda s: s.pending_input()
    )
    assert replies(result) == NEXT
    assert credentials(result) == [Credentials("plain", "john", "")]
    assert result.inspected == b"a2 NOOP\r\n"


def test_login_refused_with_starttls_only() -> None:
    result = converse([f"a1 LOGIN john {SECRET}\r\n".encode()], starttls="only")
    assert replies(result) == bad("a1")
    result = converse(
        [b"a0 STARTTLS\r\n", lambda s: s.tls_started(), f"a1 LOGIN john {SECRET}\r\n".encode()],
        starttls="only",
    )
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


@pytest.mark.parametrize(
    ("login", "password", "what"),
    [
        (b"jo\r\nhn", SECRET.encode(), "login"),
        (b"john\n", SECRET.encode(), "login"),
        (b"john", SECRET.encode() + b"\r\na2 DELETE INBOX", "password"),
        (b"john", b"\r" + SECRET.encode(), "password"),
    ],
)
def test_login_line_breaks_refused(login: bytes, password: bytes, what: str) -> None:
    line = b"a1 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(login), login, len(password), password)
    result = converse([line, b"a2 NOOP\r\n"], inspect=lambda s: s.login, max_errors=1)
    assert replies(result) == bad("a1") + ok("a2")
    assert messages(result) == [f"client sent invalid {what} in LOGIN command"]
    assert not credentials(result)
    assert result.inspected == ""


# --- AUTHENTICATE (SPEC 6.3, 4.4) -------------------------------------------------------------


def test_authenticate_plain() -> None:
    result = converse([b"a1 AUTHENTICATE PLAIN\r\n", plain() + b"\r\n"])
    assert replies(result) == PLAIN_NEXT
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_authenticate_plain_initial_response() -> None:
    # SASL-IR accepted though not advertised (mutt sends it anyway)
    result = converse([b"a1 authenticate plain " + plain(authzid="admin") + b"\r\n"])
    assert replies(result) == b""
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_authenticate_login() -> None:
    result = converse(
        [b"a1 AUTHENTICATE LOGIN\r\n", b64("john") + b"\r\n", b64(SECRET) + b"\r\n"],
        inspect=lambda s: s.login,
    )
    assert replies(result) == USERNAME + PASSWORD
    assert credentials(result) == [Credentials("plain", "john", SECRET)]
    assert result.inspected == "john"


def test_authenticate_login_initial_response() -> None:
    result = converse([b"a1 AUTHENTICATE LOGIN " + b64("john") + b"\r\n", b64(SECRET) + b"\r\n"])
    assert replies(result) == PASSWORD
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_authenticate_plain_and_login_need_no_imap_auth() -> None:
    # accepted even when imap_auth lists neither (Appendix B item 12)
    result = converse([b"a1 AUTHENTICATE LOGIN\r\n\r\n\r\n"], auth_methods=("cram-md5",))
    assert credentials(result) == [Credentials("plain", "", "")]


def test_authenticate_cram_md5() -> None:
    result = converse(
        [b"a1 AUTHENTICATE CRAM-MD5\r\n", b64(f"tim {DIGEST}") + b"\r\n"],
        auth_methods=("cram-md5",),
    )
    assert replies(result) == CRAM_CHALLENGE
    assert credentials(result) == [Credentials("cram-md5", "tim", DIGEST, salt=SALT)]


def test_cram_md5_salt_made_once_per_session() -> None:
    draws = iter(range(100))
    session = ImapSession(
        ImapSettings(auth_methods=("cram-md5",), server_name=SERVER),
        salt_random=lambda: next(draws),
        clock=lambda: NOW,
    )
    session.start()
    first = session.receive_data(b"a1 AUTHENTICATE CRAM-MD5\r\n*\r\n")
    second = session.receive_data(b"a2 AUTHENTICATE CRAM-MD5\r\n")
    assert (
        first[0]
        == second[0]
        == Send(b"+ " + base64.b64encode(f"<0.{NOW}@{SERVER}>".encode()) + b"\r\n")
    )


def test_authenticate_external() -> None:
    result = converse(
        [b"a1 AUTHENTICATE EXTERNAL\r\n", b64("john") + b"\r\n"], auth_methods=("external",)
    )
    assert replies(result) == USERNAME
    assert credentials(result) == [Credentials("external", "john")]


def test_authenticate_external_initial_response() -> None:
    result = converse(
        [b"a1 AUTHENTICATE EXTERNAL " + b64("john") + b"\r\n"], auth_methods=("external",)
    )
    assert replies(result) == b""
    assert credentials(result) == [Credentials("external", "john")]


@pytest.mark.parametrize(
    ("line", "settings"),
    [
        (b"a1 AUTHENTICATE\r\n", {}),
        (b"a1 AUTHENTICATE CRAM-MD5\r\n", {}),  # not enabled
        (b"a1 AUTHENTICATE EXTERNAL\r\n", {}),
        (b"a1 AUTHENTICATE EXTERNAL " + b64("john") + b"\r\n", {"auth_methods": ("plain",)}),
        (
            b"a1 AUTHENTICATE CRAM-MD5 " + b64(f"tim {DIGEST}") + b"\r\n",
            {"auth_methods": ("cram-md5",)},
        ),
        (b"a1 AUTHENTICATE DIGEST-MD5\r\n", {}),
        (b"a1 AUTHENTICATE XOAUTH2 abc\r\n", {}),
        (b"a1 AUTHENTICATE PLAIN a b\r\n", {}),
        (b"a1 AUTHENTICATE PLAIN " + plain() + b"\r\n", {"starttls": "only"}),
        (b"a1 AUTHENTICATE LOGIN\r\n", {"starttls": "only"}),
    ],
)
def test_authenticate_refused(line: bytes, settings: dict[str, Any]) -> None:
    result = converse([line, b"a2 NOOP\r\n"], max_errors=1, **settings)
    assert replies(result) == bad("a1") + ok("a2")
    assert not result.logs
    assert not credentials(result)


def test_authenticate_allowed_after_tls_with_starttls_only() -> None:
    result = converse(
        [b"a1 AUTHENTICATE PLAIN " + plain() + b"\r\n"], starttls="only", tls_active=True
    )
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_sasl_response_first_token_only() -> None:
    # further tokens are ignored, but a fourth one is a parse error (SPEC 4.4)
    result = converse([b"a1 AUTHENTICATE PLAIN\r\n", plain() + b"  ignored   too  \r\n"])
    assert credentials(result) == [Credentials("plain", "john", SECRET)]
    result = converse([b"a1 AUTHENTICATE PLAIN\r\n", plain() + b" a b c\r\n", b"a2 NOOP\r\n"])
    assert replies(result) == PLAIN_NEXT + bad("a1") + ok("a2")
    assert not credentials(result)


def test_sasl_exchange_keeps_the_tag() -> None:
    result = converse(
        [b"x.9 AUTHENTICATE LOGIN\r\n", b64("john") + b"\r\n", b"*\r\n", b"y NOOP\r\n"]
    )
    assert replies(result) == USERNAME + PASSWORD + bad("x.9") + ok("y")
    result = converse(
        [b"x.9 AUTHENTICATE LOGIN\r\n", b64("john") + b"\r\n", b64(SECRET) + b"\r\n", failed()]
    )
    assert replies(result) == USERNAME + PASSWORD + no("x.9")


def test_bad_base64_login_username_is_tagged() -> None:
    # nginx answers a bare "BAD invalid command" here (Appendix B item 6)
    result = converse([b"a1 AUTHENTICATE LOGIN\r\n", b"!!!\r\n", b"a2 NOOP\r\n"])
    assert replies(result) == USERNAME + bad("a1") + ok("a2")
    assert messages(result) == ["client sent invalid base64 encoding in AUTH LOGIN command"]


def test_sasl_cancel_is_a_tagged_bad() -> None:
    # RFC 9051 6.2.2: "*" cancels, the server answers BAD (SPEC 4.4)
    result = converse([b"a1 AUTHENTICATE PLAIN\r\n*\r\na2 NOOP\r\n"], max_errors=1)
    assert replies(result) == PLAIN_NEXT + bad("a1") + ok("a2")


def test_commands_during_sasl_are_responses() -> None:
    # "a2" is the response: valid base64, with no NUL in it
    result = converse([b"a1 AUTHENTICATE PLAIN\r\na2 LOGOUT\r\n"])
    assert replies(result) == PLAIN_NEXT + bad("a1")
    assert messages(result) == ["client sent invalid login in AUTH PLAIN command"]
    assert not result.closed


@pytest.mark.parametrize(
    ("transcript", "message"),
    [
        ([b"AUTHENTICATE PLAIN *"], "invalid base64 encoding in AUTH PLAIN"),
        ([b"AUTHENTICATE PLAIN " + b64("john")], "invalid login in AUTH PLAIN"),
        ([b"AUTHENTICATE PLAIN", b64("\0john")], "invalid password in AUTH PLAIN"),
        ([b"AUTHENTICATE PLAIN", b64(f"\0john\0{SECRET}\r\n")], "invalid password in AUTH PLAIN"),
        ([b"AUTHENTICATE LOGIN " + b64("jo\nhn")], "invalid login in AUTH LOGIN"),
        ([b"AUTHENTICATE LOGIN", b64("j"), b"*"], "invalid base64 encoding in AUTH LOGIN"),
        ([b"AUTHENTICATE CRAM-MD5", b"*"], "invalid base64 encoding in AUTH CRAM-MD5"),
        ([b"AUTHENTICATE CRAM-MD5", b64("tim short")], "invalid CRAM-MD5 hash in AUTH CRAM-MD5"),
        ([b"AUTHENTICATE EXTERNAL *"], "invalid base64 encoding in AUTH EXTERNAL"),
        ([b"AUTHENTICATE EXTERNAL", b"*"], "invalid base64 encoding in AUTH EXTERNAL"),
    ],
)
def test_sasl_failures(transcript: list[bytes], message: str) -> None:
    lines = [b"t " + transcript[0] + b"\r\n", *(line + b"\r\n" for line in transcript[1:])]
    result = converse([*lines, b"u NOOP\r\n"], auth_methods=EVERY_METHOD)
    assert messages(result) == [f"client sent {message} command"]
    assert replies(result).endswith(bad("t") + ok("u"))
    assert not credentials(result)
    assert not result.closed


def test_sasl_parse_errors_count() -> None:
    result = converse([b"a1 AUTHENTICATE PLAIN\r\na b c d\r\n" * 2], max_errors=2)
    assert replies(result) == (PLAIN_NEXT + bad("a1")) * 2
    assert result.closed


# --- ID (RFC 2971), a mailgate addition ------------------------------------------------------


def test_id_nil() -> None:
    result = converse([b"a1 ID NIL\r\n"], inspect=lambda s: s.client_id)
    assert replies(result) == b"* ID NIL\r\n" + ok("a1")
    assert result.inspected == ()


def test_id_with_list_and_literals() -> None:
    # new Outlook sends ID with literals before LOGIN (PEERS.md)
    result = converse(
        [
            b'a1 ID ("name" {7}\r\n',
            b'Outlook "version" {4+}\r\n16.0 "os" NIL)\r\n',
            f"a2 LOGIN john {SECRET}\r\n".encode(),
        ],
        inspect=lambda s: s.client_id,
    )
    assert replies(result) == NEXT + b"* ID NIL\r\n" + ok("a1")
    assert result.inspected == ((b"name", b"Outlook"), (b"version", b"16.0"), (b"os", None))
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_id_is_never_an_error() -> None:
    result = converse([b'a1 ID ("name" "x")\r\n' * 10, b"a2 NOOP\r\n"], max_errors=1)
    assert replies(result) == (b"* ID NIL\r\n" + ok("a1")) * 10 + ok("a2")


def test_id_allowed_before_starttls() -> None:
    result = converse([b"a1 ID NIL\r\n"], starttls="only")
    assert replies(result) == b"* ID NIL\r\n" + ok("a1")


def test_malformed_id_is_a_parse_error() -> None:
    result = converse([b'a1 ID ("name")\r\n', b'a2 ID "x"\r\n', b"a3 NOOP\r\n"], max_errors=2)
    assert replies(result) == bad("a1") + bad("a2")
    assert result.closed


# --- invalid commands, tags (SPEC 6.1, 6.2, 4.5) -----------------------------------------------


@pytest.mark.parametrize(
    ("line", "tag"),
    [
        (b"a1 SELECT INBOX\r\n", "a1"),
        (b"a1 ENABLE UTF8=ACCEPT\r\n", "a1"),
        (b"a1 FOO\r\n", "a1"),
        (b"a1 \r\n", "a1"),
        (b"a1 NOOP a b c d\r\n", "a1"),
        (b"a1 NOOP\rx\r\n", "a1"),
        (b"\r\n", "*"),
        (b"a1\r\n", "*"),
        (b" a1 NOOP\r\n", "*"),
        (b"a*1 NOOP\r\n", "*"),
        (b"a" * 33 + b" NOOP\r\n", "*"),
    ],
)
def test_invalid_commands(line: bytes, tag: str) -> None:
    result = converse([line, b"a2 NOOP\r\n"])
    assert replies(result) == bad(tag) + ok("a2")
    assert not result.logs


@pytest.mark.parametrize("tag", ["Z" * 32, "1", "a.b", "a-b_c", "...", "A001", "_"])
def test_unusual_valid_tags(tag: str) -> None:
    assert replies(converse([f"{tag} NOOP\r\n".encode()])) == ok(tag)


def test_bare_lf_ends_lines() -> None:
    result = converse([b"a1 NOOP\na2 LOGIN {4}\njohn s3cret\n"])
    assert replies(result) == ok("a1") + NEXT
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_unterminated_quote_does_not_poison_the_next_command() -> None:
    # nginx stays in "quoted" mode and refuses a2 as well (SPEC 6.5)
    result = converse([b'a1 LOGIN "john\r\n', f"a2 LOGIN john {SECRET}\r\n".encode()])
    assert replies(result) == bad("a1")
    assert credentials(result) == [Credentials("plain", "john", SECRET)]


def test_bad_line_announcing_a_non_synchronising_literal_closes() -> None:
    result = converse([b"a1 SELECT {5+}\r\n", b"a2 NOOP\r\n"])
    assert replies(result) == bad("a1")
    assert result.events[-1] == Close()


def test_bad_line_announcing_a_synchronising_literal_does_not_close() -> None:
    result = converse([b"a1 SELECT {5}\r\n", b"a2 NOOP\r\n"])
    assert replies(result) == bad("a1") + ok("a2")


def test_max_errors_default() -> None:
    result = converse([b"a1 FOO\r\n" * 4, b"a2 NOOP\r\n", b"a3 BAR\r\na4 NOOP\r\n"])
    assert replies(result) == bad("a1") * 4 + ok("a2") + bad("a3")
    assert result.events[-3:] == [
        Log("info", "client sent too many invalid commands"),
        Send(bad("a3")),
        Close(),
    ]


@pytest.mark.parametrize("limit", [0, 1])
def test_max_errors_low(limit: int) -> None:
    result = converse([b"\r\na1 NOOP\r\n"], max_errors=limit)
    assert replies(result) == bad("*")
    assert result.closed


def test_handler_rejections_do_not_count() -> None:
    lines = b"a LOGIN x\r\n" * 10 + b"b AUTHENTICATE FOO\r\n" * 10 + b"c STARTTLS\r\n" * 5
    result = converse([lines + b"d AUTHENTICATE PLAIN\r\n*\r\n" * 5])
    assert not result.closed
    assert replies(result).count(b"BAD invalid command") == 30


def test_error_counter_is_never_reset() -> None:
    transcript: list[Step] = [b"a FOO\r\nb FOO\r\nc LOGIN x y\r\n", failed(), b"d FOO\r\ne FOO\r\n"]
    assert converse(transcript, max_errors=4).closed


# --- too long commands (SPEC 4.1, "Do better") -----------------------------------------------


def test_too_long_command() -> None:
    result = converse([b"a1 NOOP " + b"x" * 5000])
    assert replies(result) == bad("a1")
    assert result.closed
    [message] = messages(result)
    assert message.startswith('client sent too long command "a1 NOOP xxxx')
    assert message.endswith('..."')
    assert len(message) < 300


def test_too_long_without_a_tag_is_untagged() -> None:
    result = converse([b"x" * 100], client_buffer=64)
    assert replies(result) == bad("*")
    assert result.closed


def test_command_filling_the_buffer_fits() -> None:
    fits = b"a1 NOOP " + b"x" * 54 + b"\r\n"
    assert len(fits) == 64
    assert replies(converse([fits], client_buffer=64)) == ok("a1")
    result = converse([fits[:-2] + b"x\r\n"], client_buffer=64)
    assert replies(result) == bad("a1")
    assert result.closed


def test_command_with_literals_must_fit() -> None:
    line = f"a1 LOGIN {{4}}\r\njohn {{6}}\r\n{SECRET}\r\n".encode()
    assert credentials(converse([line], client_buffer=len(line)))
    # the last literal fits with an LF after it, not with the CRLF sent
    result = converse([line], client_buffer=len(line) - 1)
    assert replies(result) == NEXT + NEXT + bad("a1")
    assert result.closed
    # the last literal cannot fit: refused instead of its continuation
    result = converse([line], client_buffer=len(line) - 2)
    assert replies(result) == NEXT + bad("a1")
    assert result.closed


def test_literal_that_cannot_fit_gets_no_continuation() -> None:
    result = converse([b"a1 LOGIN {5000}\r\n", b"x" * 5000 + b"\r\n"])
    assert replies(result) == bad("a1")
    assert result.closed
    assert messages(result) == ['client sent too long command "a1 LOGIN ..."']


def test_too_long_is_not_an_error() -> None:
    result = converse([b"a FOO\r\n", b"b NOOP " + b"x" * 200], client_buffer=64, max_errors=2)
    assert replies(result) == bad("a") + bad("b")
    assert messages(result)[0].startswith("client sent too long command")


@pytest.mark.parametrize(
    ("prefix", "shown"),
    [
        (f"a1 LOGIN john {SECRET}", "a1 LOGIN ..."),
        (f"a1 login {{4+}}\r\njohn {SECRET}", "a1 login ..."),
        ("a1 AUTHENTICATE PLAIN " + plain().decode(), "a1 AUTHENTICATE PLAIN ..."),
        (f"a!1 LOGIN john {SECRET}", "a!1 LOGIN ..."),
    ],
)
def test_too_long_log_hides_secrets(prefix: str, shown: str) -> None:
    result = converse([prefix.encode() + b"A" * 300], client_buffer=128)
    assert messages(result) == [f'client sent too long command "{shown}"']


def test_too_long_sasl_response_hidden() -> None:
    result = converse([b"a1 AUTHENTICATE PLAIN\r\n", plain() + b"A" * 300], client_buffer=128)
    assert replies(result) == PLAIN_NEXT + bad("a1")
    assert messages(result) == ['client sent too long command "..."']
    assert result.closed


def test_long_sasl_token_fits_default_buffer() -> None:
    password = SECRET + "x" * 2000
    result = converse([b"a1 AUTHENTICATE PLAIN " + plain(password=password) + b"\r\n"])
    assert credentials(result) == [Credentials("plain", "john", password)]


# --- pipelining (SPEC 4.3) ------------------------------------------------------------------


def test_pipelined_commands() -> None:
    result = converse([b"a1 NOOP\r\na2 CAPABILITY\r\na3 ID NIL\r\na4 FOO\r\na5 LOGOUT\r\n"])
    assert replies(result) == (
        ok("a1")
        + CAPS
        + ok("a2")
        + b"* ID NIL\r\n"
        + ok("a3")
        + bad("a4")
        + b"* BYE\r\n"
        + ok("a5")
    )


def test_many_short_commands_fit_a_small_buffer() -> None:
    result = converse([b"a NOOP\r\n" * 100], client_buffer=16)
    assert replies(result) == ok("a") * 100


def test_pipelined_input_after_login_is_pending() -> None:
    result = converse(
        [f"a1 LOGIN john {SECRET}\r\na2 SELECT INBOX\r\na3 FETCH {{3}}\r\n".encode(), b"abc\r\n"],
        inspect=lambda s: s.pending_input(),
    )
    assert replies(result) == b""  # no continuation for a literal meant for the backend
    assert result.events[-1] == Authenticate(Credentials("plain", "john", SECRET))
    assert result.inspected == b"a2 SELECT INBOX\r\na3 FETCH {3}\r\nabc\r\n"


def test_pending_input_after_literal_login() -> None:
    result = converse(
        [b"a1 LOGIN {4+}\r\njohn {6+}\r\n" + SECRET.encode() + b"\r\na2 NOOP"],
        inspect=lambda s: s.pending_input(),
    )
    assert result.inspected == b"a2 NOOP"


def test_pending_input_after_sasl() -> None:
    result = converse(
        [b"a1 AUTHENTICATE PLAIN\r\n" + plain() + b"\r\na2 SELECT INBOX\r\n"],
        inspect=lambda s: s.pending_input(),
    )
    assert result.events[-1] == Authenticate(Credentials("plain", "john", SECRET))
    assert result.inspected == b"a2 SELECT INBOX\r\n"


# --- after the auth server's answer (SPEC 8.5, 8.6) ----------------------------------------


def test_auth_failed_then_buffered_input_is_handled() -> None:
    result = converse(
        [
            f"a1 LOGIN john {SECRET}\r\na2 NOOP\r\na3 LOGIN {{3}}\r\n".encode(),
            failed("Invalid login or password"),
            b"jim x\r\n",
        ],
        inspect=lambda s: s.login,
    )
    assert replies(result) == no("a1") + ok("a2") + NEXT
    assert credentials(result)[-1] == Credentials("plain", "jim", "x")
    assert result.inspected == "jim"


def test_auth_failed_after_sasl_returns_to_initial_state() -> None:
    result = converse(
        [
            b"a1 AUTHENTICATE LOGIN " + b64("john") + b"\r\n" + b64(SECRET) + b"\r\n",
            failed("Temporary problem"),
            b"a2 AUTHENTICATE LOGIN\r\n",
        ],
        inspect=lambda s: s.login,
    )
    assert replies(result) == PASSWORD + no("a1", "Temporary problem") + USERNAME
    assert result.inspected == "john"


def test_no_stale_tag_after_failed_login() -> None:
    # nginx prefixes this BAD with bytes of the new line (SPEC 6.5)
    result = converse([f"A1 LOGIN john {SECRET}\r\n".encode(), failed(), b"!!! NOOP\r\n"])
    assert replies(result) == no("A1") + bad("*")


def test_auth_failed_needs_a_pending_authenticate() -> None:
    session = new_session()
    session.start()
    with pytest.raises(RuntimeError):
        session.auth_failed("no")


def test_auth_rejected() -> None:
    result = converse([b"a1 LOGIN a b\r\na2 NOOP\r\n", lambda s: s.auth_rejected("Go away")])
    assert replies(result) == no("a1", "Go away")
    assert result.events[-1] == Close()


def test_internal_error() -> None:
    result = converse([b"a1 LOGIN a b\r\n", lambda s: s.internal_error(), b"a2 NOOP\r\n"])
    assert replies(result) == b"* BAD internal server error\r\n"
    assert result.events[-1] == Close()


def test_session_builds_the_upstream_login() -> None:
    session = new_session(proxy_buffer=64)
    session.start()
    session.receive_data(b"x.7 LOGIN a b\r\n")
    login = session.upstream_login("john", SECRET)
    assert isinstance(login, ImapUpstreamLogin)
    assert login.tag == "x.7"
    assert login.receive_data(b"* OK\r\n") == [Send(b"x.7 LOGIN {4}\r\n")]
    assert login.receive_data(b"* OK " + b"x" * 70)[0].too_long  # type: ignore[union-attr]


def test_upstream_login_needs_a_login_command() -> None:
    with pytest.raises(RuntimeError):
        new_session().upstream_login("john", SECRET)


# --- passwords never logged ----------------------------------------------------------------


def test_password_never_in_log_events() -> None:
    token = plain()
    transcripts: list[list[Step]] = [
        [f"a1 LOGIN john {SECRET}\r\n".encode(), failed()],
        [f'a1 LOGIN "john" "{SECRET}"\r\n'.encode(), failed()],
        [f"a1 LOGIN {{4}}\r\njohn {{6}}\r\n{SECRET}\r\n".encode(), failed()],
        [b"a1 AUTHENTICATE PLAIN " + token + b"\r\n", failed()],
        [b"a1 AUTHENTICATE PLAIN\r\n" + token + b"\r\n", failed()],
        [b"a1 AUTHENTICATE LOGIN\r\n" + b64("john") + b"\r\n" + b64(SECRET) + b"\r\n", failed()],
        [b"a1 AUTHENTICATE LOGIN " + b64("john") + b"\r\n" + b64(SECRET)[:-1] + b"*\r\n"],
        [f"a1 LOGIN john {SECRET}".encode() + b"x" * 9000],
        [f"a1 LOGIN john {{6000}}\r\n{SECRET}".encode()],
        [b"a1 AUTHENTICATE PLAIN\r\n" + token + b"x" * 9000],
        [b"a1 AUTHENTICATE PLAIN\r\n" + plain(password=SECRET + "\n") + b"\r\n"],
        [f"a1 LOGIN john {{7+}}\r\n{SECRET}\n\r\n".encode()],
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
        {"auth_methods": ("plain", "apop")},
        {"max_errors": -1},
        {"client_buffer": 0},
        {"proxy_buffer": 0},
    ],
)
def test_settings_validation(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ImapSettings(**settings)


def test_settings_are_hashable_data() -> None:
    assert ImapSettings() == ImapSettings()
    assert hash(ImapSettings(capabilities=("IMAP4rev1",))) == hash(
        ImapSettings(capabilities=("IMAP4rev1",))
    )
    assert ImapSettings().client_buffer == 4096
