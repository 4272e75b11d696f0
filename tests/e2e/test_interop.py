"""Details where a proxy meets real servers: credentials with spaces, quotes
and backslashes; uploads (IMAP APPEND) as well as downloads; commands
pipelined with the login; several messages and recipients in one SMTP
session; what the client sees of the backend after login."""

from __future__ import annotations

import base64
import socket
import uuid

import pytest

from tests.e2e import clients, messages
from tests.e2e.conftest import CLIENT_ADDRESS, Stack
from tests.integration.harness import recv_tagged, recv_until

ODD = "heidi"  # her password has a space, double quotes, a backslash and a "%"


def new(subject: str, to: str = "carol@e2e.test", body: bytes | None = None) -> bytes:
    return messages.message(subject, body if body is not None else messages.tricky_body(), to=to,
                            message_id=f"<{uuid.uuid4().hex}@e2e.test>")


# --- credentials --------------------------------------------------------------


def test_imap_login_with_an_odd_password(e2e: Stack) -> None:
    password = e2e.password(ODD)
    assert " " in password and '"' in password and "\\" in password
    conn = clients.imap(e2e.imap_port)
    try:
        assert conn.login(ODD, password)[0] == "OK"  # a quoted string with escapes
        assert conn.select("INBOX")[0] == "OK"
        conn.logout()
    finally:
        clients.close_imap(conn)


def test_imap_authenticate_plain_with_an_odd_password(e2e: Stack) -> None:
    conn = clients.imap(e2e.imap_port)
    try:
        password = e2e.password(ODD)
        typ, _ = conn.authenticate("PLAIN", lambda _: f"\0{ODD}\0{password}".encode())
        assert typ == "OK"
        conn.logout()
    finally:
        clients.close_imap(conn)


def test_curl_imap_with_an_odd_password(e2e: Stack, tool) -> None:
    tool("curl")
    clients.curl("/", "imap", e2e.imap_port, ODD, e2e.password(ODD)).expect(0)


def test_pop3_pass_with_an_odd_password(e2e: Stack) -> None:
    """RFC 1939 PASS takes the rest of the line, spaces included; Dovecot,
    curl, fetchmail and poplib send it so."""
    conn = clients.pop3(e2e.pop3_port)
    try:
        conn.user(ODD)
        assert conn.pass_(e2e.password(ODD)).startswith(b"+OK")
        conn.quit()
    finally:
        conn.close()


def test_smtp_auth_plain_with_an_odd_password(e2e: Stack) -> None:
    conn = clients.smtp(e2e.submission_port, source=CLIENT_ADDRESS)
    try:
        assert conn.login(ODD, e2e.password(ODD))[0] == 235
    finally:
        conn.quit()


def test_utf8_password_everywhere(e2e: Stack) -> None:
    """A UTF-8 password: an IMAP literal, a POP3 PASS line, SMTP AUTH PLAIN."""
    password = e2e.password("lena").encode()
    with socket.create_connection(("127.0.0.1", e2e.imap_port), timeout=20) as sock:
        assert recv_until(sock, b"\r\n").startswith(b"* OK")
        sock.sendall(b"u1 LOGIN lena {%d}\r\n" % len(password))
        assert recv_until(sock, b"\r\n").startswith(b"+ ")
        sock.sendall(password + b"\r\n")
        assert b"u1 OK" in recv_tagged(sock, b"u1")
        sock.sendall(b"u2 LOGOUT\r\n")
        assert b"u2 OK" in recv_tagged(sock, b"u2")
    with socket.create_connection(("127.0.0.1", e2e.pop3_port), timeout=20) as sock:
        assert recv_until(sock, b"\r\n").startswith(b"+OK")
        sock.sendall(b"USER lena\r\n")
        assert recv_until(sock, b"\r\n").startswith(b"+OK")
        sock.sendall(b"PASS " + password + b"\r\n")
        assert recv_until(sock, b"\r\n").startswith(b"+OK")
        sock.sendall(b"QUIT\r\n")
        assert recv_until(sock, b"\r\n").startswith(b"+OK")
    with socket.create_connection(("127.0.0.1", e2e.submission_port), timeout=20) as sock:
        assert recv_until(sock, b"\r\n").startswith(b"220 ")
        sock.sendall(b"EHLO client.e2e.example\r\nAUTH PLAIN " + base64.b64encode(b"\0lena\0" + password) + b"\r\n")
        reply = b""
        while b"\r\n235 " not in reply and b"\r\n5" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        assert b"\r\n235 " in reply, reply
    assert e2e.auth.requests[-1].password == e2e.password("lena")


# --- IMAP ---------------------------------------------------------------------


def test_imap_append_five_megabytes_and_fetch_it_back(e2e: Stack) -> None:
    """The upload direction: a 5 MB literal through mailgate into Dovecot."""
    data = messages.large(5 * 1024 * 1024, seed=5, subject="appended", to="frank@e2e.test")
    conn = clients.imap(e2e.imap_port, timeout=60)
    try:
        conn.login("frank", e2e.password("frank"))
        conn.create("Uploads")
        typ, answer = conn.append("Uploads", r"(\Seen)", None, data)
        assert typ == "OK", answer
        typ, count = conn.select("Uploads", readonly=True)
        assert typ == "OK"
        fetched = clients.imap_fetch_all(conn)
        assert data in fetched.values()
        conn.logout()
    finally:
        clients.close_imap(conn)
    assert e2e.maildirs.find("frank", messages.message_id(data)) == []  # in the folder, not the INBOX


def test_imap_login_select_fetch_pipelined_in_one_write(e2e: Stack) -> None:
    data = new("pipelined fetch", to="ivan@e2e.test")
    e2e.maildirs.add("ivan", data)
    password = e2e.password("ivan")
    with socket.create_connection(("127.0.0.1", e2e.imap_port), timeout=20) as sock:
        assert recv_until(sock, b"\r\n").startswith(b"* OK")
        sock.sendall(b'a1 LOGIN ivan "%s"\r\na2 SELECT INBOX\r\na3 UID FETCH 1:* (BODY.PEEK[])\r\na4 LOGOUT\r\n'
                     % password.encode())
        reply = recv_tagged(sock, b"a4")
    tagged = [line.split(b" ")[:2] for line in reply.split(b"\r\n") if line[:1] == b"a"]
    assert [b"a1", b"OK"] in tagged and [b"a2", b"OK"] in tagged and [b"a3", b"OK"] in tagged, reply[-500:]
    assert b"{%d}\r\n" % len(data) + data in reply


def test_imap_id_and_capability_before_and_after_login(e2e: Stack) -> None:
    """Before login mailgate answers (ID NIL, its own capabilities); after
    it, Dovecot does, through mailgate."""
    password = e2e.password("ivan")
    with socket.create_connection(("127.0.0.1", e2e.imap_port), timeout=20) as sock:
        assert recv_until(sock, b"\r\n").startswith(b"* OK")
        sock.sendall(b'c1 CAPABILITY\r\nc2 ID ("name" "e2e" "version" "1")\r\n')
        before = recv_tagged(sock, b"c2")
        assert b"* ID NIL\r\n" in before and b"c1 OK" in before and b"c2 OK" in before, before
        sock.sendall(b'c3 LOGIN ivan "%s"\r\n' % password.encode())
        assert b"c3 OK" in recv_tagged(sock, b"c3")
        sock.sendall(b'c4 CAPABILITY\r\nc5 ID ("name" "e2e")\r\nc6 LOGOUT\r\n')
        after = recv_tagged(sock, b"c6")
    assert b'* ID ("name" "Dovecot")' in after, after
    capability = [line for line in after.split(b"\r\n") if line.startswith(b"* CAPABILITY")][0]
    assert b" IDLE" in capability and b" MOVE" in capability, capability


# --- POP3 ---------------------------------------------------------------------


def test_pop3_top_and_uidl_as_dovecot_gives_them(e2e: Stack) -> None:
    data = new("top and uidl", to="ivan@e2e.test", body=b"line one\r\nline two\r\nline three\r\n")
    e2e.maildirs.add("ivan", data)

    def session(port: int) -> tuple[list[bytes], list[bytes]]:
        conn = clients.pop3(port)
        try:
            conn.user("ivan")
            conn.pass_(e2e.password("ivan"))
            count = conn.stat()[0]
            uidl = conn.uidl()[1]
            tops = [b"\r\n".join(conn.top(n, 1)[1]) for n in range(1, count + 1)]
            conn.quit()
            return uidl, tops
        finally:
            conn.close()

    assert session(e2e.pop3_port) == session(e2e.dovecot.pop3_port)


def test_pop3_commands_pipelined_with_the_login(e2e: Stack) -> None:
    password = e2e.password("ivan")
    with socket.create_connection(("127.0.0.1", e2e.pop3_port), timeout=20) as sock:
        assert recv_until(sock, b"\r\n").startswith(b"+OK")
        sock.sendall(b"USER ivan\r\nPASS %s\r\nSTAT\r\nNOOP\r\nQUIT\r\n" % password.encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    lines = data.split(b"\r\n")
    assert len(lines) == 6 and all(line.startswith(b"+OK") for line in lines[:5]), data


# --- SMTP ---------------------------------------------------------------------


def test_smtp_two_messages_several_recipients_one_session(e2e: Stack) -> None:
    first, second = new("first of two"), new("second of two", to="bob@e2e.test")
    conn = clients.smtp(e2e.submission_port, source=CLIENT_ADDRESS)
    try:
        # AUTH PLAIN without an initial response: the 334 continuation.
        conn.user, conn.password = "alice", e2e.password("alice")
        assert conn.auth("PLAIN", conn.auth_plain, initial_response_ok=False)[0] == 235
        assert conn.sendmail("alice@e2e.test", ["carol@e2e.test", "bob@e2e.test"], first) == {}
        assert conn.rset()[0] == 250
        assert conn.sendmail("alice@e2e.test", ["bob@e2e.test"], second, mail_options=["BODY=8BITMIME"]) == {}
    finally:
        conn.quit()
    for user, data in (("carol", first), ("bob", first), ("bob", second)):
        copy = e2e.maildirs.wait_for(user, messages.message_id(data))[0].read_bytes()
        assert messages.body_of(copy) == messages.body_of(data)


def test_relay_with_several_recipients(e2e: Stack) -> None:
    data = new("relayed to two")
    conn = clients.smtp(e2e.relay_port, source=CLIENT_ADDRESS)
    try:
        refused = conn.sendmail("someone@elsewhere.example", ["carol@e2e.test", "nobody-here@e2e.test",
                                                              "bob@e2e.test"], data)
        # Postfix's own answer for an unknown mailbox, relayed by mailgate.
        assert list(refused) == ["nobody-here@e2e.test"] and refused["nobody-here@e2e.test"][0] == 550, refused
    finally:
        conn.quit()
    for user in ("carol", "bob"):
        e2e.maildirs.wait_for(user, messages.message_id(data))


def test_eight_bit_message_submitted_intact(e2e: Stack) -> None:
    data = messages.eight_bit().replace(b"Message-ID: <", b"Message-ID: <%s." % uuid.uuid4().hex.encode(), 1)
    conn = clients.smtp(e2e.submission_port, source=CLIENT_ADDRESS)
    try:
        conn.login("alice", e2e.password("alice"))
        assert conn.sendmail("alice@e2e.test", ["carol@e2e.test"], data, mail_options=["BODY=8BITMIME"]) == {}
    finally:
        conn.quit()
    copy = e2e.maildirs.wait_for("carol", messages.message_id(data))[0].read_bytes()
    assert messages.body_of(copy) == messages.body_of(data)


@pytest.mark.parametrize("initial", [False, True], ids=["prompted", "initial-response"])
def test_smtplib_auth_login_as_outlook_sends_it(e2e: Stack, initial: bool) -> None:
    """``AUTH LOGIN <user>`` (Outlook, smtplib) as well as the prompted form."""
    conn = clients.smtp(e2e.submission_port, source=CLIENT_ADDRESS)
    try:
        conn.user, conn.password = "alice", e2e.password("alice")
        assert conn.auth("LOGIN", conn.auth_login, initial_response_ok=initial)[0] == 235
    finally:
        conn.quit()


def test_submission_without_auth_is_refused_cleanly(e2e: Stack, tool) -> None:
    tool("swaks")
    done = clients.swaks(e2e.submission_port, user=None, password=None, auth=None, sender="alice@e2e.test",
                         to="carol@e2e.test", interface=CLIENT_ADDRESS)
    assert done.returncode != 0 and b"530 5.7.1 Authentication required" in done.stdout, done


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_smtp_auth_by_hand(e2e: Stack, mechanism: str) -> None:
    """The exact replies a client parses: 334 prompts, 235 on success."""
    password = e2e.password("alice")
    with socket.create_connection(("127.0.0.1", e2e.submission_port), timeout=20,
                                  source_address=(CLIENT_ADDRESS, 0)) as sock:
        assert recv_until(sock, b"\r\n").startswith(b"220 ")
        sock.sendall(b"EHLO client.e2e.example\r\n")
        ehlo = recv_until(sock, b"\r\n")
        while not any(line.startswith(b"250 ") for line in ehlo.split(b"\r\n")):
            ehlo += recv_until(sock, b"\r\n")
        assert b"AUTH PLAIN LOGIN" in ehlo, ehlo
        if mechanism == "PLAIN":
            sock.sendall(b"AUTH PLAIN\r\n")
            assert recv_until(sock, b"\r\n").startswith(b"334")
            sock.sendall(base64.b64encode(b"\0alice\0" + password.encode()) + b"\r\n")
        else:
            sock.sendall(b"AUTH LOGIN\r\n")
            assert recv_until(sock, b"\r\n") == b"334 VXNlcm5hbWU6\r\n"
            sock.sendall(base64.b64encode(b"alice") + b"\r\n")
            assert recv_until(sock, b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
            sock.sendall(base64.b64encode(password.encode()) + b"\r\n")
        assert recv_until(sock, b"\r\n").startswith(b"235 "), mechanism
        sock.sendall(b"QUIT\r\n")
        assert recv_until(sock, b"\r\n").startswith(b"221 ")


def test_imap_wrong_password_literal(e2e: Stack) -> None:
    """A refused LOGIN sent as literals is still a clean NO."""
    conn = clients.imap(e2e.imap_port)
    try:
        conn.literal = b"wrong password"
        typ, data = conn._simple_command("LOGIN", "ivan")
        assert typ == "NO" and b"Invalid login or password" in data[0], (typ, data)
    finally:
        clients.close_imap(conn)
