"""Wrong passwords fail cleanly: every client gets its protocol's refusal
(IMAP NO, POP3 -ERR, SMTP 535) and exits with its own "login denied" status,
whether the auth server refuses or (for a login it only routes) Dovecot
does; no session hangs, no password reaches mailgate's log, and the right
password still works afterwards."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
from pathlib import Path

import pytest

from tests.e2e import clients
from tests.e2e.conftest import CLIENT_ADDRESS, Stack

WRONG = "not-the-Pa55%word"
REFUSAL = "Invalid login or password"

# Exit statuses for a refused login.
CURL_LOGIN_DENIED = 67
SWAKS_AUTH_FAILED = 28
FETCHMAIL_AUTHFAIL = 3


@pytest.fixture(autouse=True)
def no_password_in_the_log(e2e: Stack):
    yield
    assert WRONG not in e2e.mailgate.log()


def test_imaplib_wrong_password(e2e: Stack) -> None:
    conn = clients.imap(e2e.imap_port)
    try:
        with pytest.raises(imaplib.IMAP4.error, match=REFUSAL):
            conn.login("alice", WRONG)
    finally:
        clients.close_imap(conn)
    e2e.mailgate.wait_log(r'client login failed: "Invalid login or password" .*login: "alice"')


def test_poplib_wrong_password(e2e: Stack) -> None:
    conn = clients.pop3(e2e.pop3_port)
    try:
        assert conn.user("alice").startswith(b"+OK")
        with pytest.raises(poplib.error_proto, match=f"-ERR {REFUSAL}"):
            conn.pass_(WRONG)
    finally:
        conn.close()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_smtplib_wrong_password(e2e: Stack, mechanism: str) -> None:
    # One mechanism: without Auth-Wait mailgate (as nginx) closes after the
    # refusal, so smtplib's login() trying the next mechanism would meet EOF.
    conn = clients.smtp(e2e.submission_port, source=CLIENT_ADDRESS)
    try:
        conn.user, conn.password = "alice", WRONG
        authobject = conn.auth_plain if mechanism == "PLAIN" else conn.auth_login
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            conn.auth(mechanism, authobject, initial_response_ok=mechanism == "PLAIN")
        assert refused.value.smtp_code == 535
        assert REFUSAL.encode() in refused.value.smtp_error
    finally:
        conn.close()


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_curl_wrong_password(e2e: Stack, tool, workdir: Path, protocol: str) -> None:
    tool("curl")
    if protocol == "smtp":
        path = workdir / "m.eml"
        path.write_bytes(b"Subject: refused\r\n\r\nnever delivered\r\n")
        done = clients.curl_smtp_send(e2e.submission_port, "alice", WRONG, "alice@e2e.test", ["carol@e2e.test"],
                                      path)
    else:
        port = e2e.imap_port if protocol == "imap" else e2e.pop3_port
        done = clients.curl("/INBOX" if protocol == "imap" else "/", protocol, port, "alice", WRONG)
    done.expect(CURL_LOGIN_DENIED)
    assert done.seconds < 10, done


@pytest.mark.parametrize("auth", ["PLAIN", "LOGIN"])
def test_swaks_wrong_password(e2e: Stack, tool, auth: str) -> None:
    tool("swaks")
    done = clients.swaks(e2e.submission_port, user="alice", password=WRONG, auth=auth, sender="alice@e2e.test",
                         to="carol@e2e.test", interface=CLIENT_ADDRESS)
    done.expect(SWAKS_AUTH_FAILED)
    assert f"535 5.7.8 {REFUSAL}".encode() in done.stdout, done


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_fetchmail_wrong_password(e2e: Stack, tool, workdir: Path, protocol: str) -> None:
    tool("fetchmail")
    port = e2e.pop3_port if protocol == "pop3" else e2e.imap_port
    done, delivered = clients.fetchmail(workdir, protocol, port, "alice", WRONG)
    done.expect(FETCHMAIL_AUTHFAIL)
    assert delivered == []


# --- refused by Dovecot itself ------------------------------------------------
# The auth server only routes "dave"; Dovecot checks the password.


def test_imap_wrong_password_refused_by_dovecot(e2e: Stack) -> None:
    conn = clients.imap(e2e.imap_port)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED|Authentication failed"):
            conn.login("dave", WRONG)
    finally:
        clients.close_imap(conn)


def test_pop3_wrong_password_refused_by_dovecot(e2e: Stack) -> None:
    conn = clients.pop3(e2e.pop3_port)
    try:
        conn.user("dave")
        with pytest.raises(poplib.error_proto, match="Authentication failed"):
            conn.pass_(WRONG)
    finally:
        conn.close()


def test_curl_imap_wrong_password_refused_by_dovecot(e2e: Stack, tool) -> None:
    tool("curl")
    done = clients.curl("/INBOX", "imap", e2e.imap_port, "dave", WRONG)
    done.expect(CURL_LOGIN_DENIED)


def test_right_password_after_dovecot_refused(e2e: Stack) -> None:
    conn = clients.imap(e2e.imap_port)
    try:
        assert conn.login("dave", e2e.password("dave"))[0] == "OK"
        assert conn.select("INBOX")[0] == "OK"
        conn.logout()
    finally:
        clients.close_imap(conn)


# --- Auth-Wait: the client may try again on the same connection --------------


def test_imap_retry_after_auth_wait(e2e: Stack) -> None:
    conn = clients.imap(e2e.imap_port)
    try:
        with pytest.raises(imaplib.IMAP4.error, match=REFUSAL):
            conn.login("grace", WRONG)
        assert conn.login("grace", e2e.password("grace"))[0] == "OK"
        assert conn.select("INBOX")[0] == "OK"
        conn.logout()
    finally:
        clients.close_imap(conn)


def test_smtp_retry_after_auth_wait(e2e: Stack) -> None:
    conn = clients.smtp(e2e.submission_port, source=CLIENT_ADDRESS)
    try:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            conn.login("grace", WRONG)
        assert conn.login("grace", e2e.password("grace"))[0] == 235
        assert conn.sendmail("grace@e2e.test", ["carol@e2e.test"],
                             b"Subject: after a retry\r\nMessage-ID: <retry@e2e.test>\r\n\r\nok\r\n") == {}
        conn.quit()
    finally:
        conn.close()
    e2e.maildirs.wait_for("carol", b"<retry@e2e.test>")


def test_pop3_retry_after_auth_wait(e2e: Stack) -> None:
    conn = clients.pop3(e2e.pop3_port)
    try:
        conn.user("grace")
        with pytest.raises(poplib.error_proto, match=REFUSAL):
            conn.pass_(WRONG)
        conn.user("grace")
        assert conn.pass_(e2e.password("grace")).startswith(b"+OK")
        conn.quit()
    finally:
        conn.close()


def test_wrong_password_then_silence_does_not_hang(e2e: Stack) -> None:
    """After a refusal without Auth-Wait mailgate closes the connection."""
    with socket.create_connection(("127.0.0.1", e2e.imap_port), timeout=10) as sock:
        assert sock.recv(1024).startswith(b"* OK")
        sock.sendall(b'a1 LOGIN alice "%s"\r\n' % WRONG.encode())
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"a1 NO " + REFUSAL.encode()), data
