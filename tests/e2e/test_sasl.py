"""Every login mechanism real clients choose, through mailgate to Dovecot and
Postfix: PLAIN, LOGIN, CRAM-MD5, APOP, the IMAP LOGIN command and POP3
USER/PASS. For APOP and CRAM-MD5 the auth server checks the digest and
returns the real password, with which mailgate logs in to the backend."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.e2e import clients, messages
from tests.e2e.conftest import CLIENT_ADDRESS, Stack

USER = "judy"
WRONG = "not-the-Pa55%word"
CURL_LOGIN_DENIED = 67
SWAKS_AUTH_FAILED = 28
FETCHMAIL_AUTHFAIL = 3


@pytest.fixture(scope="module")
def mail(stack: Stack) -> bytes:
    data = messages.message("for every mechanism", messages.tricky_body(), to=f"{USER}@e2e.test")
    stack.maildirs.add(USER, data)
    return data


def methods(stack: Stack, count: int) -> list[str]:
    return [request.header("Auth-Method") for request in stack.auth.requests[-count:]]


# curl's login options choose the mechanism (its default: the strongest
# offered). As nginx, mailgate calls LOGIN "plain" towards the auth server.
@pytest.mark.parametrize("option,method", [("AUTH=PLAIN", "plain"), ("AUTH=LOGIN", "plain"),
                                           ("AUTH=CRAM-MD5", "cram-md5"), ("", "cram-md5")])
def test_curl_imap_mechanisms(e2e: Stack, mail: bytes, tool, option: str, method: str) -> None:
    tool("curl")
    extra = ["--login-options", option] if option else []
    done = clients.curl("/INBOX;MAILINDEX=1", "imap", e2e.imap_sasl_port, USER, e2e.password(USER), extra=extra)
    done.expect(0)
    assert done.stdout == mail
    assert methods(e2e, 1) == [method]


@pytest.mark.parametrize("option,method", [("AUTH=PLAIN", "plain"), ("AUTH=CRAM-MD5", "cram-md5"),
                                           ("AUTH=+APOP", "apop"), ("", "cram-md5")])
def test_curl_pop3_mechanisms(e2e: Stack, mail: bytes, tool, option: str, method: str) -> None:
    tool("curl")
    extra = ["--login-options", option] if option else []
    done = clients.curl("/1", "pop3", e2e.pop3_sasl_port, USER, e2e.password(USER), extra=extra)
    done.expect(0)
    assert done.stdout == mail
    assert methods(e2e, 1) == [method]


@pytest.mark.parametrize("option", ["AUTH=CRAM-MD5", "AUTH=+APOP"])
def test_curl_pop3_challenge_response_wrong_password(e2e: Stack, tool, option: str) -> None:
    tool("curl")
    done = clients.curl("/1", "pop3", e2e.pop3_sasl_port, USER, WRONG, extra=["--login-options", option])
    done.expect(CURL_LOGIN_DENIED)


def test_imaplib_cram_md5(e2e: Stack, mail: bytes) -> None:
    conn = clients.imap(e2e.imap_sasl_port)
    try:
        assert conn.login_cram_md5(USER, e2e.password(USER))[0] == "OK"
        conn.select("INBOX", readonly=True)
        assert conn.fetch("1", "(BODY.PEEK[])")[1][0][1] == mail
        conn.logout()
    finally:
        clients.close_imap(conn)


def test_imaplib_authenticate_login(e2e: Stack) -> None:
    conn = clients.imap(e2e.imap_sasl_port)
    answers = iter([USER.encode(), e2e.password(USER).encode()])
    try:
        assert conn.authenticate("LOGIN", lambda challenge: next(answers))[0] == "OK"
        conn.logout()
    finally:
        clients.close_imap(conn)


def test_poplib_apop(e2e: Stack, mail: bytes) -> None:
    conn = clients.pop3(e2e.pop3_sasl_port)
    try:
        assert conn.apop(USER, e2e.password(USER)).startswith(b"+OK")
        assert b"\r\n".join(conn.retr(1)[1]) + b"\r\n" == mail
        conn.quit()
    finally:
        conn.close()


def test_poplib_apop_with_an_odd_password(e2e: Stack) -> None:
    """The real password, spaces and quotes included, goes back in Auth-Pass."""
    conn = clients.pop3(e2e.pop3_sasl_port)
    try:
        assert conn.apop("heidi", e2e.password("heidi")).startswith(b"+OK")
        conn.quit()
    finally:
        conn.close()


def test_smtplib_cram_md5(e2e: Stack) -> None:
    data = messages.message("submitted after CRAM-MD5", messages.tricky_body(), to="carol@e2e.test",
                            message_id=f"<{uuid.uuid4().hex}@e2e.test>")
    conn = clients.smtp(e2e.submission_sasl_port, source=CLIENT_ADDRESS)
    try:
        assert conn.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5"]
        assert conn.login(USER, e2e.password(USER))[0] == 235  # smtplib prefers CRAM-MD5
        assert conn.sendmail(f"{USER}@e2e.test", ["carol@e2e.test"], data) == {}
    finally:
        conn.quit()
    assert methods(e2e, 1) == ["cram-md5"]
    copy = e2e.maildirs.wait_for("carol", messages.message_id(data))[0].read_bytes()
    assert f"(Authenticated sender: {USER})".encode() in messages.headers_of(copy)
    assert messages.body_of(copy) == messages.body_of(data)


@pytest.mark.parametrize("password,status", [(None, 0), (WRONG, SWAKS_AUTH_FAILED)], ids=["right", "wrong"])
def test_swaks_cram_md5(e2e: Stack, tool, workdir: Path, password: str | None, status: int) -> None:
    tool("swaks")
    done = clients.swaks(e2e.submission_sasl_port, user=USER, password=password or e2e.password(USER),
                         auth="CRAM-MD5", sender=f"{USER}@e2e.test", to="carol@e2e.test", interface=CLIENT_ADDRESS)
    done.expect(status)


@pytest.mark.parametrize("protocol,auth", [("pop3", "cram-md5"), ("imap", "cram-md5"), ("apop", None)])
def test_fetchmail_mechanisms(e2e: Stack, mail: bytes, tool, workdir: Path, protocol: str, auth: str | None) -> None:
    tool("fetchmail")
    port = e2e.imap_sasl_port if protocol == "imap" else e2e.pop3_sasl_port
    done, delivered = clients.fetchmail(workdir, protocol, port, USER, e2e.password(USER), auth=auth)
    done.expect(0)
    assert delivered == [mail.replace(b"\r\n", b"\n")]
    assert methods(e2e, 1) == [auth or "apop"]
