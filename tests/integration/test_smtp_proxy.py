"""SMTP through the real mailgate: submission with AUTH (587), relay with
``smtp_auth none`` (25), XCLIENT byte for byte, the client's host name from
a (fake) DNS server, large messages, and every failure path."""

from __future__ import annotations

import base64
import smtplib
import socket

import pytest

from tests.fakes.auth_server import FakeAuthServer, by_user, fail, ok
from tests.fakes.dns_server import FakeDnsServer, ptr
from tests.integration.harness import recv_all, recv_until

MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"


@pytest.fixture
def auth(smtp_backend) -> FakeAuthServer:
    with FakeAuthServer(by_user({"alice": ok("127.0.0.1", smtp_backend.port), "": ok("127.0.0.1", smtp_backend.port)},
                                fail())) as server:
        yield server


@pytest.fixture
def smtp(make_mailgate, auth):
    def make(**fields):
        return make_mailgate(auth.port, protocol="smtp", **fields)

    return make


def client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert recv_until(sock, b"\r\n") == b"220 mail.test ESMTP ready\r\n"
    return sock


def reply(sock: socket.socket, line: bytes) -> bytes:
    """Send a command; read a whole (multi-line) reply."""
    sock.sendall(line)
    data = b""
    while True:
        data += recv_until(sock, b"\r\n")
        last = data.rstrip(b"\r\n").split(b"\r\n")[-1]
        if len(last) < 4 or last[3:4] != b"-":
            return data


def test_submission_with_auth_plain(smtp, smtp_backend, auth):
    mg = smtp()
    with smtplib.SMTP("127.0.0.1", mg.port, local_hostname="client.example", timeout=10) as conn:
        assert conn.ehlo()[1] == b"mail.test\nAUTH PLAIN LOGIN"
        assert conn.login("alice", "wonderland") == (235, b"2.0.0 OK")
        assert conn.sendmail("a@example.org", ["b@example.org"], MESSAGE) == {}
    (message,) = smtp_backend.wait_for_messages(1)
    assert message.data == MESSAGE
    session = smtp_backend.sessions[0]
    # SPEC 9.4, byte for byte: EHLO server_name, XCLIENT, the client's own EHLO.
    assert session.lines[:3] == [
        b"EHLO mail.test\r\n",
        b"XCLIENT ADDR=127.0.0.1 LOGIN=alice NAME=[UNAVAILABLE]\r\n",
        b"EHLO client.example\r\n",
    ]
    request = auth.requests[0]
    assert request.header("Auth-Protocol") == "smtp" and request.header("Client-Host") == "[UNAVAILABLE]"
    mg.wait_log(r"session summary: protocol=smtp .*login=\"alice\" .*outcome=proxied")
    assert "wonderland" not in mg.log()


def test_auth_login_with_initial_response_as_outlook_sends_it(smtp, smtp_backend):
    mg = smtp()
    sock = client(mg.port)
    reply(sock, b"EHLO pc\r\n")
    user, password = base64.b64encode(b"alice"), base64.b64encode(b"wonderland")
    assert reply(sock, b"AUTH LOGIN " + user + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert reply(sock, password + b"\r\n") == b"235 2.0.0 OK\r\n"
    assert reply(sock, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")


def test_xtext_login_and_ipv6_free_xclient(smtp, smtp_backend, auth):
    auth.rules = ok("127.0.0.1", smtp_backend.port)
    mg = smtp()
    sock = client(mg.port)
    token = base64.b64encode(b"\0go od+x=\0pw")
    assert reply(sock, b"AUTH PLAIN " + token + b"\r\n") == b"235 2.0.0 OK\r\n"
    smtp_backend.wait_for_lines(2)
    # No HELO from the client: nothing replayed after XCLIENT.
    assert smtp_backend.sessions[0].lines[:2] == [
        b"EHLO mail.test\r\n", b"XCLIENT ADDR=127.0.0.1 LOGIN=go+20od+2Bx+3D NAME=[UNAVAILABLE]\r\n",
    ]


def test_xclient_off_and_helo_client(smtp, smtp_backend):
    mg = smtp(server="        xclient off;")
    sock = client(mg.port)
    assert reply(sock, b"HELO pc\r\n") == b"250 mail.test\r\n"
    assert reply(sock, b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland") + b"\r\n") == b"235 2.0.0 OK\r\n"
    assert reply(sock, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
    assert smtp_backend.sessions[0].lines[:2] == [b"HELO mail.test\r\n", b"MAIL FROM:<a@example.org>\r\n"]


def test_proxy_smtp_auth_authenticates_to_the_backend(smtp, smtp_backend):
    smtp_backend.users["alice"] = "wonderland"
    mg = smtp(server="        proxy_smtp_auth on;")
    sock = client(mg.port)
    reply(sock, b"EHLO pc\r\n")
    assert reply(sock, b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland") + b"\r\n") == b"235 2.0.0 OK\r\n"
    lines = smtp_backend.wait_for_lines(4)
    assert lines[:4] == [
        b"EHLO mail.test\r\n",
        b"XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE]\r\n",  # no LOGIN= with proxy_smtp_auth
        b"EHLO pc\r\n",
        b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland") + b"\r\n",
    ]
    assert "wonderland" not in mg.log()


def test_relay_with_smtp_auth_none(smtp, smtp_backend, auth):
    smtp_backend.rcpt_replies["<nobody@example.org>"] = "550 5.1.1 no such user"
    mg = smtp(server="        smtp_auth none;\n        smtp_capabilities PIPELINING \"SIZE 10485760\" CHUNKING;")
    sock = client(mg.port)
    ehlo = reply(sock, b"EHLO relay.example\r\n")
    assert ehlo == b"250-mail.test\r\n250-PIPELINING\r\n250 SIZE 10485760\r\n"  # never CHUNKING
    assert reply(sock, b"MAIL FROM:<a@example.org> SIZE=10\r\n") == b"250 2.0.0 OK\r\n"
    # The first RCPT asks the auth server; the backend's own reply comes back.
    assert reply(sock, b"RCPT TO:<nobody@example.org>\r\n") == b"550 5.1.1 no such user\r\n"
    request = auth.requests[0]
    assert request.header("Auth-Method") == "none" and request.header("Auth-User") == ""
    assert request.header("Auth-SMTP-Helo") == "relay.example"
    assert request.header("Auth-SMTP-From") == "MAIL FROM:<a@example.org> SIZE=10"
    assert request.header("Auth-SMTP-To") == "RCPT TO:<nobody@example.org>"
    # Further recipients and the data go straight to the backend, pipelined.
    sock.sendall(b"RCPT TO:<b@example.org>\r\nDATA\r\n")
    assert recv_until(sock, b"354 End data with <CR><LF>.<CR><LF>\r\n").startswith(b"250")
    sock.sendall(MESSAGE + b".\r\nQUIT\r\n")
    assert b"221" in recv_all(sock)
    (message,) = smtp_backend.wait_for_messages(1)
    assert message.data == MESSAGE and message.rcpt_to == ["<b@example.org>"]
    assert smtp_backend.sessions[0].lines[:5] == [
        b"EHLO mail.test\r\n",
        b"XCLIENT ADDR=127.0.0.1 NAME=[UNAVAILABLE]\r\n",
        b"EHLO relay.example\r\n",
        b"MAIL FROM:<a@example.org> SIZE=10\r\n",
        b"RCPT TO:<nobody@example.org>\r\n",
    ]
    assert len(auth.requests) == 1  # no auth request for further recipients (SPEC 7.6)


def test_pipelined_mail_rcpt_data_in_one_write(smtp, smtp_backend):
    mg = smtp(server="        smtp_auth none;\n        smtp_capabilities PIPELINING;")
    sock = client(mg.port)
    reply(sock, b"EHLO relay.example\r\n")
    sock.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    replies = recv_until(sock, b"354 End data with <CR><LF>.<CR><LF>\r\n")
    assert replies.startswith(b"250 2.0.0 OK\r\n250 ")
    sock.sendall(MESSAGE + b".\r\n")
    assert smtp_backend.wait_for_messages(1)[0].data == MESSAGE


def test_twenty_megabytes_relayed_intact(smtp, smtp_backend):
    body = b"".join(b"line %07d " % i + b"x" * 100 + b"\r\n" for i in range(190_000))
    body += b".starts with a dot\r\n"
    assert len(body) > 20_000_000
    mg = smtp()
    with smtplib.SMTP("127.0.0.1", mg.port, timeout=60) as conn:
        conn.login("alice", "wonderland")
        conn.sendmail("a@example.org", ["b@example.org"], b"Subject: big\r\n\r\n" + body)
    (message,) = smtp_backend.wait_for_messages(1, timeout=60)
    assert message.data == b"Subject: big\r\n\r\n" + body
    mg.wait_log(r"session summary: protocol=smtp .* bytes_in=2\d{7} ")


def test_mail_without_auth_is_refused(smtp):
    mg = smtp()
    sock = client(mg.port)
    assert reply(sock, b"MAIL FROM:<a@example.org>\r\n") == b"530 5.7.1 Authentication required\r\n"
    mg.wait_log(r'client was rejected: "MAIL FROM:<a@example.org>__" while in auth state')


def test_auth_failure_with_error_code(smtp, auth):
    auth.rules = fail("Temporary problem", error_code="451 4.3.0")
    mg = smtp()
    sock = client(mg.port)
    sock.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland") + b"\r\n")
    assert recv_all(sock) == b"451 4.3.0 Temporary problem\r\n"
    mg.wait_log(r'client login failed: "Temporary problem" while in http auth state')


def test_auth_failure_default_code(smtp, auth):
    auth.rules = fail("Invalid login or password")
    mg = smtp()
    sock = client(mg.port)
    sock.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0nope") + b"\r\n")
    assert recv_all(sock) == b"535 5.7.0 Invalid login or password\r\n"


def test_backend_down(smtp, auth):
    from tests.integration.harness import free_port

    dead = free_port()
    auth.rules = ok("127.0.0.1", dead)
    mg = smtp()
    sock = client(mg.port)
    sock.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland") + b"\r\n")
    assert recv_all(sock) == b"451 4.3.2 Internal server error\r\n"
    mg.wait_log(rf"connect\(\) to 127.0.0.1:{dead} failed \(111: Connection refused\) while connecting to upstream")


def test_auth_server_down(make_mailgate):
    from tests.integration.harness import free_port

    dead = free_port()
    mg = make_mailgate(dead, protocol="smtp")
    sock = client(mg.port)
    sock.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland") + b"\r\n")
    assert recv_all(sock) == b"451 4.3.2 Internal server error\r\n"
    mg.wait_log(rf"connect\(\) to 127.0.0.1:{dead} failed \(111: Connection refused\) while in http auth state")


def test_backend_refusing_xclient(smtp, smtp_backend):
    smtp_backend.replies["XCLIENT"] = "550 5.7.0 not authorized"
    mg = smtp(server="        proxy_pass_error_message on;")
    sock = client(mg.port)
    sock.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland") + b"\r\n")
    assert recv_all(sock) == b"550 5.7.0 not authorized\r\n"
    mg.wait_log(r'upstream sent invalid response: "550 5.7.0 not authorized" while reading response from upstream')


def test_greeting_delay_refuses_early_talkers(smtp):
    mg = smtp(server="        smtp_greeting_delay 1s;")
    sock = socket.create_connection(("127.0.0.1", mg.port), timeout=10)
    sock.sendall(b"EHLO hurry\r\n")
    assert recv_all(sock) == b"503 5.5.0 Improper use of SMTP command pipelining\r\n"
    mg.wait_log(r'client was rejected before greeting: "EHLO hurry__" while in delay pipelining state')
    patient = socket.create_connection(("127.0.0.1", mg.port), timeout=10)
    assert recv_until(patient, b"\r\n") == b"220 mail.test ESMTP ready\r\n"


def test_client_host_from_a_confirmed_ptr_record(make_mailgate, smtp_backend, auth):
    records = {
        (ptr("127.0.0.1"), "PTR"): [("client.example.", 300)],
        ("client.example", "A"): [("127.0.0.1", 300)],
    }
    with FakeDnsServer(records) as dns:
        mg = make_mailgate(auth.port, protocol="smtp", server=f"        resolver {dns.directive} ipv6=off;")
        sock = client(mg.port)
        assert reply(sock, b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland") + b"\r\n") == b"235 2.0.0 OK\r\n"
    assert auth.requests[0].header("Client-Host") == "client.example"
    smtp_backend.wait_for_lines(2)
    assert smtp_backend.sessions[0].lines[1] == b"XCLIENT ADDR=127.0.0.1 LOGIN=alice NAME=client.example\r\n"


def test_hostile_ptr_name_never_reaches_auth_or_xclient(make_mailgate, smtp_backend, auth):
    """CVE-2026-28753: a PTR name with CR LF must not inject headers."""
    hostile = "evil\r\nX-Injected: 1.example."
    with FakeDnsServer({(ptr("127.0.0.1"), "PTR"): [(hostile, 300)]}) as dns:
        mg = make_mailgate(auth.port, protocol="smtp", server=f"        resolver {dns.directive};")
        sock = client(mg.port)
        assert reply(sock, b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland") + b"\r\n") == b"235 2.0.0 OK\r\n"
    request = auth.requests[0]
    assert request.header("Client-Host") == "[TEMPUNAVAIL]" and request.header("X-Injected") is None
    smtp_backend.wait_for_lines(2)
    assert smtp_backend.sessions[0].lines[1] == b"XCLIENT ADDR=127.0.0.1 LOGIN=alice NAME=[TEMPUNAVAIL]\r\n"
    # Lower-cased as nginx does; control bytes escaped so the log line stays one line.
    mg.wait_log(r'\[error\] .*127.0.0.1 resolved to invalid host name "evil\\x0D\\x0Ax-injected: 1.example" '
                r"while in resolving client address")
    assert "\r\nX-Injected" not in mg.log()


def test_unconfirmed_ptr_name_is_unavailable(make_mailgate, smtp_backend, auth):
    records = {(ptr("127.0.0.1"), "PTR"): [("liar.example.", 300)], ("liar.example", "A"): [("192.0.2.1", 300)]}
    with FakeDnsServer(records) as dns:
        mg = make_mailgate(auth.port, protocol="smtp", server=f"        resolver {dns.directive} ipv6=off;")
        sock = client(mg.port)
        reply(sock, b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland") + b"\r\n")
    assert auth.requests[0].header("Client-Host") == "[UNAVAILABLE]"


def test_cram_md5_with_the_password_from_the_auth_server(smtp, smtp_backend, auth):
    import hashlib
    import hmac

    auth.rules = ok("127.0.0.1", smtp_backend.port, password="wonderland")
    smtp_backend.users["alice"] = "wonderland"
    mg = smtp(server="        smtp_auth plain login cram-md5;\n        proxy_smtp_auth on;")
    sock = client(mg.port)
    assert reply(sock, b"EHLO pc\r\n").endswith(b"250 AUTH PLAIN LOGIN CRAM-MD5\r\n")
    challenge = reply(sock, b"AUTH CRAM-MD5\r\n")
    assert challenge.startswith(b"334 ")
    salt = base64.b64decode(challenge[4:].strip())
    digest = hmac.new(b"wonderland", salt, hashlib.md5).hexdigest()
    assert reply(sock, base64.b64encode(b"alice " + digest.encode()) + b"\r\n") == b"235 2.0.0 OK\r\n"
    request = auth.requests[0]
    assert request.header("Auth-Method") == "cram-md5" and request.header("Auth-Pass") == digest
    assert request.header("Auth-Salt") == salt.decode()
    lines = smtp_backend.wait_for_lines(4)
    assert lines[3] == b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland") + b"\r\n"


def test_cram_md5_without_a_password_for_the_backend(smtp, smtp_backend, auth):
    auth.rules = ok("127.0.0.1", smtp_backend.port)  # no Auth-Pass
    mg = smtp(server="        smtp_auth cram-md5;\n        proxy_smtp_auth on;")
    sock = client(mg.port)
    challenge = reply(sock, b"AUTH CRAM-MD5\r\n")
    assert challenge.startswith(b"334 ")
    sock.sendall(base64.b64encode(b"alice " + b"0" * 32) + b"\r\n")
    assert recv_all(sock) == b"451 4.3.2 Internal server error\r\n"
    mg.wait_log(r"\[error\] .*no password available while sending AUTH to upstream")


def test_external_login(smtp, smtp_backend, auth):
    mg = smtp(server="        smtp_auth external;")
    sock = client(mg.port)
    assert reply(sock, b"AUTH EXTERNAL " + base64.b64encode(b"alice") + b"\r\n") == b"235 2.0.0 OK\r\n"
    request = auth.requests[0]
    assert request.header("Auth-Method") == "external" and request.header("Auth-Pass") == ""
    smtp_backend.wait_for_lines(2)
    assert smtp_backend.sessions[0].lines[1] == b"XCLIENT ADDR=127.0.0.1 LOGIN=alice NAME=[UNAVAILABLE]\r\n"


def test_ipv6_client_address_in_xclient(tmp_path, mailgates, smtp_backend, auth):
    from tests.integration.harness import Mailgate, free_port

    try:
        port = free_port(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("::1 is not configured")
    text = f"""
        error_log {tmp_path}/error.log info;
        pid {tmp_path}/mailgate.pid;
        mail {{
            server_name mail.test;
            auth_http 127.0.0.1:{auth.port}/auth;
            server {{ listen [::1]:{port}; protocol smtp; }}
        }}
    """
    mg = Mailgate(tmp_path, text)
    mailgates.append(mg)
    mg.start()
    from tests.integration.harness import wait_for

    sock = wait_for(lambda: _connect6(port), what="the IPv6 listener")
    assert recv_until(sock, b"\r\n") == b"220 mail.test ESMTP ready\r\n"
    assert reply(sock, b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland") + b"\r\n") == b"235 2.0.0 OK\r\n"
    smtp_backend.wait_for_lines(2)
    assert smtp_backend.sessions[0].lines[1] == b"XCLIENT ADDR=IPV6:::1 LOGIN=alice NAME=[UNAVAILABLE]\r\n"
    assert auth.requests[0].header("Client-IP") == "::1"


def _connect6(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("::1", port), timeout=10)
    except OSError:
        return None
