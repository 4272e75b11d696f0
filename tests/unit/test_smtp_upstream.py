"""The SMTP backend login (SPEC 9.3-9.5), xtext and the SMTP reply lists.

Backend transcripts go through ``chunking.run`` like the client ones: every
reply whole, line by line, byte by byte and in random chunks.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from mailgate.protocol import xtext
from mailgate.protocol.base import Credentials, LoginFailed, LoginSucceeded, Send
from mailgate.protocol.capabilities import smtp_advertised, smtp_lists
from mailgate.protocol.smtp import (
    NoPasswordAvailable,
    SmtpLoginParams,
    SmtpSession,
    SmtpSettings,
    SmtpUpstreamLogin,
)
from mailgate.protocol.smtp_upstream import ReplyBuffer, backend_password, xclient_command
from tests.unit.chunking import Run, run

SERVER = "mail.example.com"
SECRET = "s3cret"
OK_235 = b"235 2.0.0 OK\r\n"
INTERNAL = b"451 4.3.2 Internal server error\r\n"

GREETING = b"220 backend.example ESMTP Postfix\r\n"
EHLO_REPLY = (
    b"250-backend.example\r\n250-PIPELINING\r\n250-XCLIENT ADDR NAME LOGIN\r\n250 8BITMIME\r\n"
)
XCLIENT_REPLY = b"220 backend.example ESMTP Postfix\r\n"

# SPEC 9.4: the default (xclient on) after the client's EHLO and AUTH.
DEFAULT = SmtpLoginParams(
    server_name=SERVER,
    client_ip="127.0.0.1",
    login="good",
    password=SECRET,
    helo="client.example",
    esmtp=True,
)
NONE = replace(
    DEFAULT,
    login="",
    password="",
    method="none",
    smtp_from="MAIL FROM:<a@b> SIZE=10",
    smtp_to="RCPT TO:<good@d>",
)


def upstream(params: SmtpLoginParams, responses: Sequence[bytes]) -> Run:
    result = run(
        lambda: SmtpUpstreamLogin(params),
        list(responses),
        start=False,
        inspect=lambda u: (u.action, u.done),
    )
    for event in result.events:
        # No Log event ever comes from here, and nothing but a Send to the
        # backend may carry the password.
        assert isinstance(event, Send | LoginSucceeded | LoginFailed)
        if not isinstance(event, Send):
            assert SECRET not in repr(event)
    return result


def sent_lines(result: Run) -> list[bytes]:
    return [event.data for event in result.of_type(Send)]


# --- the dialogues of SPEC 9.4 -----------------------------------------------------------


def test_xclient_default_sequence() -> None:
    result = upstream(DEFAULT, [GREETING, EHLO_REPLY, XCLIENT_REPLY, EHLO_REPLY])
    assert sent_lines(result) == [
        b"EHLO mail.example.com\r\n",
        b"XCLIENT ADDR=127.0.0.1 LOGIN=good NAME=[UNAVAILABLE]\r\n",
        b"EHLO client.example\r\n",
    ]
    assert result.events[-1] == LoginSucceeded(client_reply=OK_235)
    assert result.inspected == ("reading response from upstream", True)


def test_xclient_helo_client() -> None:
    # xclient on always greets with EHLO; the client's HELO is replayed as HELO.
    params = replace(DEFAULT, esmtp=False, client_host="client.example")
    result = upstream(params, [GREETING, EHLO_REPLY, b"250 ok\r\n", b"250 backend\r\n"])
    assert sent_lines(result) == [
        b"EHLO mail.example.com\r\n",
        b"XCLIENT ADDR=127.0.0.1 LOGIN=good NAME=client.example\r\n",
        b"HELO client.example\r\n",
    ]
    assert result.events[-1] == LoginSucceeded(client_reply=OK_235)


def test_xclient_without_client_helo() -> None:
    params = replace(DEFAULT, helo="", client_host="[TEMPUNAVAIL]")
    result = upstream(params, [GREETING, EHLO_REPLY, XCLIENT_REPLY])
    assert sent_lines(result) == [
        b"EHLO mail.example.com\r\n",
        b"XCLIENT ADDR=127.0.0.1 LOGIN=good NAME=[TEMPUNAVAIL]\r\n",
    ]
    assert result.events[-1] == LoginSucceeded(client_reply=OK_235)


@pytest.mark.parametrize(("esmtp", "verb"), [(True, b"EHLO"), (False, b"HELO")])
def test_xclient_off(esmtp: bool, verb: bytes) -> None:
    params = replace(DEFAULT, xclient=False, esmtp=esmtp)
    result = upstream(params, [GREETING, b"250 backend.example\r\n"])
    assert sent_lines(result) == [verb + b" mail.example.com\r\n"]
    assert result.events[-1] == LoginSucceeded(client_reply=OK_235)


def test_xclient_ipv6() -> None:
    params = replace(DEFAULT, client_ip="2001:db8::1", helo="")
    result = upstream(params, [GREETING, EHLO_REPLY])
    assert (
        sent_lines(result)[-1] == b"XCLIENT ADDR=IPV6:2001:db8::1 LOGIN=good NAME=[UNAVAILABLE]\r\n"
    )


def test_xclient_login_is_xtext() -> None:
    params = replace(DEFAULT, login="go od+x=", helo="")
    result = upstream(params, [GREETING, EHLO_REPLY])
    assert sent_lines(result)[-1] == (
        b"XCLIENT ADDR=127.0.0.1 LOGIN=go+20od+2Bx+3D NAME=[UNAVAILABLE]\r\n"
    )


def test_xclient_name_cannot_inject() -> None:
    hostile = "evil.example\r\nRCPT TO:<x@y>"
    line = xclient_command("192.0.2.7", "", hostile)
    assert line == b"XCLIENT ADDR=192.0.2.7 NAME=evil.example+0D+0ARCPT+20TO:<x@y>\r\n"
    assert line.count(b"\r\n") == 1


def test_xclient_without_login() -> None:
    assert xclient_command("127.0.0.1", "", "[UNAVAILABLE]") == (
        b"XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE]\r\n"
    )
    assert xclient_command("::ffff:192.0.2.1", "é", "h") == (
        b"XCLIENT ADDR=IPV6:::ffff:192.0.2.1 LOGIN=+C3+A9 NAME=h\r\n"
    )
    # A unix-socket client has no address to prefix.
    assert xclient_command("unix:", "", "h") == b"XCLIENT ADDR=unix: NAME=h\r\n"


def test_proxy_smtp_auth() -> None:
    params = replace(DEFAULT, proxy_smtp_auth=True)
    result = upstream(
        params, [GREETING, EHLO_REPLY, XCLIENT_REPLY, EHLO_REPLY, b"235 2.7.0 ok\r\n"]
    )
    plain = base64.b64encode(f"\0good\0{SECRET}".encode())
    assert sent_lines(result) == [
        b"EHLO mail.example.com\r\n",
        b"XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE]\r\n",  # no LOGIN= with AUTH
        b"EHLO client.example\r\n",
        b"AUTH PLAIN " + plain + b"\r\n",
    ]
    assert result.events[-1] == LoginSucceeded(client_reply=OK_235)


def test_proxy_smtp_auth_without_xclient() -> None:
    params = replace(DEFAULT, proxy_smtp_auth=True, xclient=False, password="")
    result = upstream(params, [GREETING, EHLO_REPLY, b"235 ok\r\n"])
    assert sent_lines(result) == [
        b"EHLO mail.example.com\r\n",
        b"AUTH PLAIN " + base64.b64encode(b"\0good\0") + b"\r\n",
    ]
    assert result.events[-1] == LoginSucceeded(client_reply=OK_235)


def test_proxy_smtp_auth_without_password() -> None:
    params = replace(DEFAULT, proxy_smtp_auth=True, xclient=False, password=None)
    result = upstream(params, [GREETING, EHLO_REPLY])
    assert result.events[-1] == NoPasswordAvailable(
        response="no password available", client_reply=INTERNAL
    )
    assert isinstance(result.events[-1], LoginFailed)
    assert result.inspected == ("sending AUTH to upstream", True)


def test_password_unused_without_proxy_smtp_auth() -> None:
    params = replace(DEFAULT, password=None)
    result = upstream(params, [GREETING, EHLO_REPLY, XCLIENT_REPLY, EHLO_REPLY])
    assert result.events[-1] == LoginSucceeded(client_reply=OK_235)


def test_none_replay_relays_the_rcpt_reply() -> None:
    params = replace(NONE, xclient=False)
    rcpt_reply = b"550 5.1.1 <good@d>: Recipient address rejected: no such user\r\n"
    result = upstream(params, [GREETING, EHLO_REPLY, b"250 2.1.0 Ok\r\n", rcpt_reply])
    assert sent_lines(result) == [
        b"EHLO mail.example.com\r\n",
        b"MAIL FROM:<a@b> SIZE=10\r\n",
        b"RCPT TO:<good@d>\r\n",
    ]
    assert result.events[-1] == LoginSucceeded(client_reply=rcpt_reply)


def test_none_replay_with_xclient() -> None:
    result = upstream(
        NONE, [GREETING, EHLO_REPLY, XCLIENT_REPLY, EHLO_REPLY, b"250 ok\r\n", b"250 2.1.5 Ok\r\n"]
    )
    assert sent_lines(result) == [
        b"EHLO mail.example.com\r\n",
        b"XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE]\r\n",
        b"EHLO client.example\r\n",
        b"MAIL FROM:<a@b> SIZE=10\r\n",
        b"RCPT TO:<good@d>\r\n",
    ]
    assert result.events[-1] == LoginSucceeded(client_reply=b"250 2.1.5 Ok\r\n")


def test_none_with_helo_client_and_no_xclient() -> None:
    params = replace(NONE, xclient=False, esmtp=False)
    result = upstream(params, [GREETING, b"250 hi\r\n", b"250 ok\r\n", b"451 later\r\n"])
    assert sent_lines(result)[0] == b"HELO mail.example.com\r\n"
    assert result.events[-1] == LoginSucceeded(client_reply=b"451 later\r\n")


def test_none_keeps_what_follows_the_rcpt_reply() -> None:
    login = SmtpUpstreamLogin(replace(NONE, xclient=False))
    events = login.receive_data(GREETING + EHLO_REPLY + b"250 ok\r\n250 rcpt ok\r\n354 go")
    assert events[-1] == LoginSucceeded(client_reply=b"250 rcpt ok\r\n354 go")


def test_bytes_after_the_auth_reply_follow_the_235() -> None:
    login = SmtpUpstreamLogin(replace(DEFAULT, xclient=False, proxy_smtp_auth=True))
    events = login.receive_data(GREETING + EHLO_REPLY + b"235 ok\r\n221 bye\r\n")
    assert events[-1] == LoginSucceeded(client_reply=OK_235 + b"221 bye\r\n")


# --- reading replies (SPEC 9.3) -----------------------------------------------------------


def test_multiline_replies() -> None:
    greeting = b"220-backend.example ESMTP\r\n220-no UCE\r\n220 welcome\r\n"
    result = upstream(replace(DEFAULT, xclient=False), [greeting, EHLO_REPLY])
    assert sent_lines(result) == [b"EHLO mail.example.com\r\n"]
    assert result.events[-1] == LoginSucceeded(client_reply=OK_235)


def test_multiline_reply_waits_for_its_last_line() -> None:
    login = SmtpUpstreamLogin(replace(DEFAULT, xclient=False))
    assert login.receive_data(b"220-one\r\n220-two\r\n") == []
    assert login.receive_data(b"220") == []
    assert login.receive_data(b" three\r\n") == [Send(b"EHLO mail.example.com\r\n")]


def test_only_the_first_line_code_is_checked() -> None:
    result = upstream(replace(DEFAULT, xclient=False), [b"220-ok\r\n554 but not\r\n", EHLO_REPLY])
    assert result.events[-1] == LoginSucceeded(client_reply=OK_235)


def test_bare_lf_lines() -> None:
    result = upstream(replace(DEFAULT, xclient=False), [b"220-a\n220 b\n", b"250 c\n"])
    assert result.events[-1] == LoginSucceeded(client_reply=OK_235)


@pytest.mark.parametrize("code", [b"220", b"250"])
def test_xclient_accepts_220_or_250(code: bytes) -> None:
    result = upstream(replace(DEFAULT, helo=""), [GREETING, EHLO_REPLY, code + b" ok\r\n"])
    assert result.events[-1] == LoginSucceeded(client_reply=OK_235)


FULL = [GREETING, EHLO_REPLY, XCLIENT_REPLY, EHLO_REPLY, b"235 ok\r\n"]


@pytest.mark.parametrize(
    ("at", "reply"),
    [
        (0, b"554 5.3.2 go away\r\n"),
        (0, b"250 not a greeting\r\n"),
        (0, b"220\r\n"[:2] + b"\r\n"),
        (1, b"502 5.5.1 no EHLO\r\n"),
        (1, b"220 wrong code\r\n"),
        (2, b"550 5.7.0 Insufficient XCLIENT permission\r\n"),
        (2, b"235 wrong code\r\n"),
        (3, b"501 5.5.4 bad helo\r\n"),
        (4, b"535-5.7.8 Error: authentication\r\n535 5.7.8 failed\r\n"),
    ],
)
def test_failure_at_each_step(at: int, reply: bytes) -> None:
    responses = list(FULL)
    responses[at] = reply
    result = upstream(replace(DEFAULT, proxy_smtp_auth=True), responses[: at + 1])
    assert result.events[-1] == LoginFailed(
        response=reply.removesuffix(b"\r\n").decode(), client_reply=reply
    )
    assert len(result.of_type(Send)) == at
    assert result.inspected == ("reading response from upstream", True)


@pytest.mark.parametrize("at", [2, 3])
def test_none_failures(at: int) -> None:
    # MAIL must get 250; the greeting before it too.
    responses = [GREETING, EHLO_REPLY, b"250 ok\r\n", b"250 ok\r\n"]
    responses[at - 1] = b"421 4.3.0 closing\r\n"
    result = upstream(replace(NONE, xclient=False), responses[:at])
    assert result.events[-1] == LoginFailed(
        response="421 4.3.0 closing", client_reply=b"421 4.3.0 closing\r\n"
    )


def test_too_long_reply() -> None:
    params = replace(DEFAULT, buffer_size=64)
    result = upstream(params, [b"220 " + b"x" * 100])
    assert result.events == [
        LoginFailed(response="220 " + "x" * 60, client_reply=b"220 " + b"x" * 60, too_long=True)
    ]
    # a reply of exactly the buffer size fits
    result = upstream(replace(params, xclient=False), [b"220 " + b"x" * 58 + b"\r\n"])
    assert result.events == [Send(b"EHLO mail.example.com\r\n")]


def test_too_long_multiline_reply() -> None:
    params = replace(DEFAULT, buffer_size=64)
    result = upstream(params, [b"220-" + b"x" * 20 + b"\r\n" for _ in range(4)])
    [event] = result.events
    assert isinstance(event, LoginFailed) and event.too_long
    assert len(event.client_reply) == 64


def test_actions() -> None:
    login = SmtpUpstreamLogin(replace(NONE, proxy_smtp_auth=False))
    assert login.action == "reading response from upstream"
    expected = [
        "sending HELO/EHLO to upstream",
        "sending XCLIENT to upstream",
        "sending client HELO/EHLO to upstream",
        "sending MAIL FROM to upstream",
        "sending RCPT TO to upstream",
    ]
    for reply, action in zip(
        [GREETING, EHLO_REPLY, XCLIENT_REPLY, EHLO_REPLY, b"250 ok\r\n"], expected, strict=True
    ):
        login.receive_data(reply[:3])
        assert login.action == "reading response from upstream"
        login.receive_data(reply[3:])
        assert login.action == action
    assert not login.done
    login.receive_data(b"250 ok\r\n")
    assert login.done
    assert login.receive_data(b"250 more\r\n") == []
    auth = SmtpUpstreamLogin(replace(DEFAULT, xclient=False, proxy_smtp_auth=True))
    auth.receive_data(GREETING + EHLO_REPLY)
    assert auth.action == "sending AUTH to upstream"


def test_password_never_shown() -> None:
    login = SmtpUpstreamLogin(replace(DEFAULT, proxy_smtp_auth=True))
    login.receive_data(GREETING + EHLO_REPLY)
    assert SECRET not in repr(login) and SECRET not in repr(login.params)
    assert login.login == "good"


def test_reply_buffer() -> None:
    buffer = ReplyBuffer(32)
    buffer.feed(b"250-a\r\n250")
    assert buffer.pop_reply() is None and not buffer.too_long
    buffer.feed(b" b\r\n251 c\n2")
    assert buffer.pop_reply() == b"250-a\r\n250 b\r\n"
    assert buffer.pop_reply() == b"251 c\n"
    assert buffer.pop_reply() is None
    assert buffer.take() == b"2"
    with pytest.raises(ValueError):
        ReplyBuffer(0)


# --- the session builds the login ----------------------------------------------------------


def session_login(
    transcript: bytes,
    login: str,
    password: str | None,
    **settings: Any,
) -> SmtpLoginParams:
    session = SmtpSession(SmtpSettings(server_name=SERVER, **settings))
    session.start()
    session.receive_data(transcript)
    upstream_login = session.upstream_login(
        login, password, client_ip="192.0.2.7", client_host="h.example"
    )
    return upstream_login.params


def test_session_upstream_login_after_auth() -> None:
    token = base64.b64encode(f"\0john\0{SECRET}".encode())
    params = session_login(b"EHLO c.example\r\nAUTH PLAIN " + token + b"\r\n", "john", None)
    assert params == SmtpLoginParams(
        server_name=SERVER,
        client_ip="192.0.2.7",
        login="john",
        password=SECRET,  # the client's own, no Auth-Pass came
        client_host="h.example",
        helo="c.example",
        esmtp=True,
        method="plain",
    )
    params = session_login(
        b"AUTH PLAIN " + token + b"\r\n",
        "jim",
        "other",
        proxy_buffer=128,
        xclient=False,
        proxy_smtp_auth=True,
    )
    assert (params.login, params.password, params.helo, params.esmtp) == ("jim", "other", "", False)
    assert (params.xclient, params.proxy_smtp_auth, params.buffer_size) == (False, True, 128)


def test_session_upstream_login_after_none() -> None:
    params = session_login(
        b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", "", None, auth_methods=("none",)
    )
    assert (params.method, params.helo, params.esmtp) == ("none", "c", False)
    assert (params.smtp_from, params.smtp_to, params.login) == (
        "MAIL FROM:<a@b>",
        "RCPT TO:<c@d>",
        "",
    )


def test_session_upstream_login_cram_md5_needs_auth_pass() -> None:
    digest = "b913a602c7eda7a495b4e6e7334d3890"
    lines = b"AUTH CRAM-MD5\r\n" + base64.b64encode(f"tim {digest}".encode()) + b"\r\n"
    methods = {"auth_methods": ("cram-md5",)}
    assert session_login(lines, "tim", None, **methods).password is None
    assert session_login(lines, "tim", digest, **methods).password is None
    assert session_login(lines, "tim", SECRET, **methods).password == SECRET


def test_refused_password_is_not_reused() -> None:
    session = SmtpSession(SmtpSettings(server_name=SERVER, auth_methods=("plain", "none")))
    session.start()
    session.receive_data(b"AUTH PLAIN " + base64.b64encode(f"\0john\0{SECRET}".encode()) + b"\r\n")
    session.auth_failed("no")
    session.receive_data(b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\n")
    params = session.upstream_login("john", None, client_ip="192.0.2.7").params
    assert (params.method, params.password, params.client_host) == ("none", None, "[UNAVAILABLE]")
    assert session.login == ""


def test_backend_password() -> None:
    plain = Credentials("plain", "a", "pw")
    assert backend_password(plain, None) == "pw"
    assert backend_password(plain, "") == ""
    assert backend_password(plain, "auth") == "auth"
    external = Credentials("external", "a")
    assert backend_password(external, None) is None
    assert backend_password(external, "") is None
    assert backend_password(external, "auth") == "auth"
    assert backend_password(None, None) is None


# --- xtext (RFC 3461) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"go od+x=", b"go+20od+2Bx+3D"),
        (b"", b""),
        (b"john@example.com", b"john@example.com"),
        (b"!~[]", b"!~[]"),
        (b"\x00\x1f\x7f\xff", b"+00+1F+7F+FF"),
        (b"a\r\nb", b"a+0D+0Ab"),
    ],
)
def test_xtext(raw: bytes, encoded: bytes) -> None:
    assert xtext.encode(raw) == encoded
    assert xtext.decode(encoded) == raw


def test_xtext_round_trip_every_byte() -> None:
    every = bytes(range(256))
    assert xtext.decode(xtext.encode(every)) == every


@pytest.mark.parametrize("bad", [b"+", b"+2", b"+2b", b"+ZZ", b"a b", b"a=b"])
def test_xtext_decode_refuses(bad: bytes) -> None:
    with pytest.raises(ValueError):
        xtext.decode(bad)


# --- the SMTP lists (capabilities.py) ------------------------------------------------------


def test_smtp_lists() -> None:
    lists = smtp_lists("mx", ("SIZE 10", "CHUNKING"), ("plain", "none"))
    assert lists.greeting == b"220 mx ESMTP ready\r\n"
    assert lists.helo == b"250 mx\r\n"
    assert lists.ehlo == b"250-mx\r\n250-SIZE 10\r\n250 AUTH PLAIN\r\n"
    assert lists.ehlo_starttls == b"250-mx\r\n250-SIZE 10\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n"
    assert lists.ehlo_starttls_only == b"250-mx\r\n250-SIZE 10\r\n250 STARTTLS\r\n"


def test_smtp_advertised() -> None:
    caps = ("chunking", " BINARYMIME", "CHUNKINGX", "X-CHUNKING", "")
    assert smtp_advertised(caps) == ("CHUNKINGX", "X-CHUNKING", "")
