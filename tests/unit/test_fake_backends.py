"""The fake IMAP and SMTP back ends speak enough of their protocols for the
standard library clients, and record what they receive byte for byte."""

from __future__ import annotations

import base64
import imaplib
import os
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.imap_backend import ImapBackend
from tests.fakes.smtp_backend import SmtpBackend, dot_unstuff, xtext_decode

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = b"Subject: hello\r\n\r\nHello from the backend.\r\n"


@pytest.fixture
def imap() -> Iterator[ImapBackend]:
    with ImapBackend(users={"alice": "wonderland", "bob": 'se"cr\\et'}) as backend:
        yield backend
    assert backend.errors == []


@pytest.fixture
def smtp() -> Iterator[SmtpBackend]:
    with SmtpBackend(rcpt_replies={"<nobody@x>": "550 5.1.1 no such user"}) as backend:
        yield backend
    assert backend.errors == []


class Client:
    """A raw socket with a line reader."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buffer)
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def lines(self, count: int) -> bytes:
        return b"".join(self.line() for _ in range(count))

    def rest(self) -> bytes:
        """Everything up to EOF."""
        data = self.buffer
        while chunk := self.sock.recv(65536):
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


# --- IMAP -------------------------------------------------------------------------


def test_imaplib_login_select_fetch_logout(imap: ImapBackend) -> None:
    imap.messages.append(b"Subject: two\r\n\r\n.dot\r\n")
    client = imaplib.IMAP4("127.0.0.1", imap.port, timeout=5)
    assert client.welcome == b"* OK fake IMAP ready"
    assert client.login("alice", "wonderland")[0] == "OK"
    assert client.select("INBOX") == ("OK", [b"2"])
    typ, data = client.fetch("1", "(BODY[])")
    assert typ == "OK" and data[0][1] == MESSAGE  # type: ignore[index]
    typ, data = client.fetch("2", "(RFC822)")
    assert data[0][1] == b"Subject: two\r\n\r\n.dot\r\n"  # type: ignore[index]
    assert client.logout()[0] == "BYE"
    imap.wait_sessions_open(0)
    assert imap.connections == 1
    assert imap.logins == [("alice", "wonderland")]
    assert imap.lines[-1].endswith(b" LOGOUT\r\n")
    assert imap.sessions[0].login == "alice" and not imap.sessions[0].open


def test_imaplib_bad_password(imap: ImapBackend) -> None:
    client = imaplib.IMAP4("127.0.0.1", imap.port, timeout=5)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login("alice", "nope")
    assert client.login("bob", 'se"cr\\et')[0] == "OK"  # quoted with escapes
    client.logout()
    assert imap.logins == [("alice", "nope"), ("bob", 'se"cr\\et')]


def test_literal_login_is_recorded_byte_for_byte(imap: ImapBackend) -> None:
    client = Client(imap.port)
    assert client.line() == b"* OK fake IMAP ready\r\n"
    client.send(b"a1 LOGIN {5}\r\n")
    assert client.line() == b"+ go ahead\r\n"
    client.send(b"alice {10}\r\n")
    assert client.line() == b"+ go ahead\r\n"
    client.send(b"wonderland\r\n")
    assert client.lines(2) == b"* CAPABILITY IMAP4rev1 IDLE LITERAL+\r\na1 OK Logged in\r\n"
    assert imap.lines == [b"a1 LOGIN {5}\r\n", b"alice {10}\r\n", b"wonderland\r\n"]
    client.close()


def test_non_synchronising_literals_get_no_continuation(imap: ImapBackend) -> None:
    imap.login_untagged = []
    client = Client(imap.port)
    client.line()
    client.send(b"x LOGIN {5+}\r\nalice {3+}\r\nbad\r\ny LOGIN alice {10+}\r\nwonderland\r\n")
    assert client.lines(2) == b"x NO [AUTHENTICATIONFAILED] bad\r\ny OK Logged in\r\n"
    assert imap.lines == [b"x LOGIN {5+}\r\n", b"alice {3+}\r\n", b"bad\r\n", b"y LOGIN alice {10+}\r\n", b"wonderland\r\n"]
    client.close()


def test_id_noop_capability_unknown_and_logout(imap: ImapBackend) -> None:
    client = Client(imap.port)
    client.line()
    client.send(b"1 ID (\"name\" \"mailgate\")\r\n2 NOOP\r\n3 CAPABILITY\r\n4 FROB x\r\n5 LOGOUT\r\n")
    assert client.rest() == (
        b"* ID NIL\r\n1 OK ID completed\r\n2 OK NOOP completed\r\n"
        b"* CAPABILITY IMAP4rev1 IDLE LITERAL+ ID\r\n3 OK CAPABILITY completed\r\n"
        b"4 BAD unknown\r\n* BYE logging out\r\n5 OK LOGOUT completed\r\n"
    )
    client.close()


def test_idle_notify_reaches_only_idling_sessions(imap: ImapBackend) -> None:
    idler, other = Client(imap.port), Client(imap.port)
    for client in (idler, other):
        client.line()
        client.send(b"a LOGIN alice wonderland\r\nb SELECT INBOX\r\n")
        assert client.lines(2 + 7).endswith(b"b OK [READ-WRITE] SELECT completed\r\n")
    idler.send(b"c IDLE\r\n")
    assert idler.line() == b"+ idling\r\n"
    imap.wait_idling(1)
    assert imap.notify_all(b"* 2 EXISTS\r\n") == 1
    assert idler.line() == b"* 2 EXISTS\r\n"
    idler.send(b"DONE\r\n")
    assert idler.line() == b"c OK IDLE terminated\r\n"
    assert imap.idling == 0
    other.send(b"z NOOP\r\n")
    assert other.line() == b"z OK NOOP completed\r\n"  # got no EXISTS
    idler.close()
    other.close()


def test_proxy_protocol_header_is_taken_off(imap: ImapBackend) -> None:
    client = Client(imap.port)
    client.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 12115\r\na NOOP\r\n")
    assert client.lines(2) == b"* OK fake IMAP ready\r\na OK NOOP completed\r\n"
    assert imap.proxy_headers == [b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 12115\r\n"]
    assert imap.lines == [b"a NOOP\r\n"]
    client.close()


def test_a_thousand_idle_connections(imap: ImapBackend) -> None:
    clients = [socket.create_connection(("127.0.0.1", imap.port), timeout=5) for _ in range(1000)]
    try:
        imap.wait_sessions_open(1000)
        assert all(sock.recv(100) == b"* OK fake IMAP ready\r\n" for sock in clients[::50])
        clients[0].sendall(b"a NOOP\r\n")
        assert clients[0].recv(100) == b"a OK NOOP completed\r\n"
    finally:
        for sock in clients:
            sock.close()
    imap.wait_sessions_open(0)
    assert imap.connections == 1000


# --- SMTP -------------------------------------------------------------------------


def test_smtplib_with_xclient(smtp: SmtpBackend) -> None:
    with smtplib.SMTP("127.0.0.1", smtp.port, local_hostname="mail.example.com", timeout=5) as client:
        assert client.ehlo()[0] == 250
        assert client.has_extn("xclient") and client.has_extn("pipelining")
        assert client.docmd("XCLIENT", "ADDR=127.0.0.1 LOGIN=go+20od+2Bx+3D NAME=[UNAVAILABLE]") == (
            220, b"fake.backend ESMTP")
        client.ehlo_resp = None
        assert client.ehlo("client.example")[0] == 250
        assert client.sendmail("<a@b>", ["<c@d>"], MESSAGE) == {}
    message = smtp.wait_for_messages(1)[0]
    assert (message.mail_from, message.rcpt_to, message.data) == ("<a@b>", ["<c@d>"], MESSAGE)
    assert message.xclient == {"ADDR": "127.0.0.1", "LOGIN": "go+20od+2Bx+3D", "NAME": "[UNAVAILABLE]"}
    assert xtext_decode(message.xclient["LOGIN"]) == "go od+x="
    assert (message.helo, message.login) == ("client.example", None)
    assert smtp.lines[:3] == [
        b"ehlo mail.example.com\r\n",
        b"XCLIENT ADDR=127.0.0.1 LOGIN=go+20od+2Bx+3D NAME=[UNAVAILABLE]\r\n",
        b"ehlo client.example\r\n",
    ]
    assert smtp.sessions[0].xclient_raw == smtp.lines[1]


def test_smtplib_auth_plain(smtp: SmtpBackend) -> None:
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.login("alice", "nope")
        assert failed.value.smtp_code == 535 and failed.value.smtp_error == b"5.7.8 bad"
        assert client.login("alice", "wonderland")[0] == 235
        client.sendmail("<a@b>", ["<c@d>"], MESSAGE)
    assert smtp.wait_for_messages(1)[0].login == "alice"
    token = base64.b64encode(b"\0alice\0wonderland")
    assert b"AUTH PLAIN " + token + b"\r\n" in smtp.lines


def test_rcpt_replies(smtp: SmtpBackend) -> None:
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=5) as client:
        assert client.sendmail("<a@b>", ["<c@d>", "<nobody@x>"], MESSAGE) == {
            "<nobody@x>": (550, b"5.1.1 no such user")}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("<a@b>", ["<nobody@x>"], MESSAGE)
    assert [m.rcpt_to for m in smtp.messages] == [["<c@d>"]]


def test_twenty_megabytes_arrive_intact(smtp: SmtpBackend) -> None:
    line = b"x" * 98 + b"\r\n"
    chunk = line * 1000 + b".starts with a dot\r\n..two\r\n.\r\n"
    data = b"Subject: big\r\n\r\n" + chunk * (20 * 1024 * 1024 // len(chunk) + 1)
    client = Client(smtp.port)
    client.line()
    started = time.monotonic()
    client.send(b"MAIL FROM:<a@b> SIZE=%d\r\nRCPT TO:<c@d>\r\nDATA\r\n" % len(data))
    assert client.lines(3) == b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    client.send(stuffed + b".\r\n")
    assert client.line() == b"250 2.0.0 queued as 1\r\n"
    assert time.monotonic() - started < 3
    message = smtp.messages[0]
    assert len(message.data) == len(data) and message.data == data
    assert message.mail_params == "SIZE=%d" % len(data)
    client.close()


def test_twenty_megabytes_through_smtplib(smtp: SmtpBackend) -> None:
    data = b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n.\r\n") * (20 * 1024 * 1024 // 75)
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=10) as client:
        assert client.sendmail("<a@b>", ["<c@d>"], data) == {}
    assert smtp.wait_for_messages(1)[0].data == data


def test_empty_message_multi_line_greeting_and_overrides() -> None:
    greeting = b"220-fake.backend ESMTP\r\n220 second line\r\n"
    with SmtpBackend(greeting=greeting, replies={"NOOP": "421 4.3.2 going away", "HELO": "250 hi"}) as smtp:
        client = Client(smtp.port)
        assert client.lines(2) == greeting
        client.send(b"HELO x\r\nNOOP\r\nMAIL FROM:<>\r\nRCPT TO:<c@d>\r\nDATA\r\n.\r\nRSET\r\nQUIT\r\n")
        assert client.rest() == (
            b"250 hi\r\n421 4.3.2 going away\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
            b"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 queued as 1\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"
        )
        client.close()
        assert [(m.mail_from, m.data, m.helo) for m in smtp.messages] == [("<>", b"", "x")]
        assert smtp.errors == []


def test_dot_unstuff() -> None:
    assert dot_unstuff(b"..a\r\n...\r\nb.\r\n") == b".a\r\n..\r\nb.\r\n"


# --- standalone -------------------------------------------------------------------


@pytest.mark.parametrize(("module", "args", "dialogue"), [
    ("tests.fakes.imap_backend", ["--user", "carol:pw"], [(b"", b"* OK"), (b"a LOGIN carol pw\r\n", b"* CAPABILITY"), (b"", b"a OK")]),
    ("tests.fakes.smtp_backend", [], [(b"", b"220 "), (b"EHLO x\r\n", b"250-fake.backend")]),
])
def test_standalone(module: str, args: list[str], dialogue: list[tuple[bytes, bytes]]) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    process = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), *args], cwd=ROOT,
                               stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert process.stdout is not None
        assert f"127.0.0.1:{port}" in process.stdout.readline().decode()
        client = Client(port)
        for send, expect in dialogue:
            client.send(send)
            assert client.line().startswith(expect)
        client.close()
    finally:
        process.terminate()
        process.wait(5)
