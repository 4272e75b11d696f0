"""TLS through the real mailgate: implicit TLS and STARTTLS for POP3, IMAP
and SMTP with the standard library's clients, ``starttls only``, commands
pipelined after STARTTLS, client certificates, SNI, ALPN, and certificates
that cannot be loaded."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl
from pathlib import Path

import pytest
import trustme

from tests.fakes.auth_server import FakeAuthServer, ok
from tests.integration.harness import recv_all, recv_tagged, recv_until


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(ca, tmp_path) -> dict[str, Path]:
    """Server certificates for mail.test and other.test, a client certificate
    from the same CA, and one from a stranger CA."""
    files: dict[str, Path] = {}
    # mail.test also names 127.0.0.1: the stdlib clients check the address they dialled.
    for name, alt in (("mail.test", ("127.0.0.1",)), ("other.test", ())):
        cert = ca.issue_cert(name, *alt)
        files[f"{name}.crt"] = tmp_path / f"{name}.crt"
        files[f"{name}.key"] = tmp_path / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(files[f"{name}.crt"])
        cert.private_key_pem.write_to_path(files[f"{name}.key"])
    files["ca.crt"] = tmp_path / "ca.crt"
    ca.cert_pem.write_to_path(files["ca.crt"])
    for label, issuer in (("client", ca), ("stranger", trustme.CA())):
        cert = issuer.issue_cert("alice@example.org")
        files[f"{label}.pem"] = tmp_path / f"{label}.pem"
        with open(files[f"{label}.pem"], "wb") as handle:
            handle.write(cert.private_key_pem.bytes())
            for blob in cert.cert_chain_pems:
                handle.write(blob.bytes())
    return files


def client_context(ca: trustme.CA, cert: Path | None = None, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if cert is not None:
        ctx.load_cert_chain(cert)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


@pytest.fixture
def tls_mailgate(make_mailgate, certs):
    """A mailgate for ``protocol`` whose listen has ``params`` and whose server
    block has the certificates plus ``extra`` lines."""

    def make(auth, protocol: str, params: str = "ssl", extra: str = "", two_certs: bool = False):
        lines = [f"ssl_certificate {certs['mail.test.crt']};", f"ssl_certificate_key {certs['mail.test.key']};"]
        if two_certs:
            lines += [f"ssl_certificate {certs['other.test.crt']};", f"ssl_certificate_key {certs['other.test.key']};"]
        server = "\n".join("        " + line for line in [*lines, *extra.splitlines()])
        mg = make_mailgate(auth.port, protocol=protocol, start=False, server=server)
        mg.write_config(mg.conf.read_text().replace(f"listen 127.0.0.1:{mg.port};", f"listen 127.0.0.1:{mg.port} {params};"))
        return mg.start()

    return make


@pytest.fixture
def pop3_auth(backend):
    with FakeAuthServer(ok("127.0.0.1", backend.port)) as server:
        yield server


@pytest.fixture
def imap_auth(imap_backend):
    with FakeAuthServer(ok("127.0.0.1", imap_backend.port)) as server:
        yield server


@pytest.fixture
def smtp_auth(smtp_backend):
    with FakeAuthServer(ok("127.0.0.1", smtp_backend.port)) as server:
        yield server


def test_pop3_implicit_tls(tls_mailgate, pop3_auth, ca):
    mg = tls_mailgate(pop3_auth, "pop3")
    pop = poplib.POP3_SSL("127.0.0.1", mg.port, context=client_context(ca), timeout=10)
    pop.user("alice")
    assert pop.pass_("wonderland") == b"+OK logged in"
    assert pop.stat()[0] == 1
    pop.quit()
    request = pop3_auth.requests[0]
    assert request.header("Auth-SSL") == "on"
    assert request.header("Auth-SSL-Protocol") == "TLSv1.3" and request.header("Auth-SSL-Cipher")
    assert request.header("Auth-SSL-Verify") is None  # only with ssl_verify_client (SPEC 8.2)


def test_pop3_stls(tls_mailgate, pop3_auth, ca):
    mg = tls_mailgate(pop3_auth, "pop3", params="", extra="starttls on;")
    pop = poplib.POP3("127.0.0.1", mg.port, timeout=10)
    assert "STLS" in pop.capa()
    pop.stls(context=client_context(ca))
    pop.user("alice")
    assert pop.pass_("wonderland") == b"+OK logged in"
    pop.quit()
    assert pop3_auth.requests[0].header("Auth-SSL") == "on"
    mg.wait_log(r"client logged in, client: 127\.0\.0\.1 using starttls, server:")


def test_pop3_starttls_only_refuses_logins_in_the_clear(tls_mailgate, pop3_auth):
    mg = tls_mailgate(pop3_auth, "pop3", params="", extra="starttls only;")
    sock = socket.create_connection(("127.0.0.1", mg.port), timeout=10)
    recv_until(sock, b"\r\n")
    sock.sendall(b"CAPA\r\n")
    assert recv_until(sock, b".\r\n") == b"+OK Capability list follows\r\nTOP\r\nUIDL\r\nSTLS\r\n.\r\n"
    sock.sendall(b"USER alice\r\n")
    assert recv_until(sock, b"\r\n") == b"-ERR invalid command\r\n"
    assert pop3_auth.requests == []


def test_imap_implicit_tls(tls_mailgate, imap_auth, ca):
    mg = tls_mailgate(imap_auth, "imap")
    conn = imaplib.IMAP4_SSL("127.0.0.1", mg.port, ssl_context=client_context(ca), timeout=10)
    assert conn.login("alice", "wonderland")[0] == "OK"
    conn.logout()


def test_imap_starttls_only(tls_mailgate, imap_auth, ca):
    plain = tls_mailgate(imap_auth, "imap", params="", extra="starttls only;")
    conn = imaplib.IMAP4("127.0.0.1", plain.port, timeout=10)
    assert "LOGINDISABLED" in conn.capabilities and "STARTTLS" in conn.capabilities
    conn.starttls(ssl_context=client_context(ca))
    assert "AUTH=PLAIN" in conn.capabilities
    assert conn.login("alice", "wonderland")[0] == "OK"
    conn.logout()


def test_smtp_implicit_tls(tls_mailgate, smtp_auth, smtp_backend, ca):
    mg = tls_mailgate(smtp_auth, "smtp")
    with smtplib.SMTP_SSL("127.0.0.1", mg.port, context=client_context(ca), timeout=10) as conn:
        conn.login("alice", "wonderland")
        conn.sendmail("a@example.org", ["b@example.org"], b"Subject: tls\r\n\r\nover TLS\r\n")
    assert smtp_backend.wait_for_messages(1)[0].data == b"Subject: tls\r\n\r\nover TLS\r\n"
    assert smtp_auth.requests[0].header("Auth-SSL") == "on"


def test_smtp_starttls(tls_mailgate, smtp_auth, smtp_backend, ca):
    plain = tls_mailgate(smtp_auth, "smtp", params="", extra="starttls on;")
    with smtplib.SMTP("127.0.0.1", plain.port, timeout=10) as conn:
        conn.ehlo("pc")
        assert conn.has_extn("starttls")
        conn.starttls(context=client_context(ca))
        conn.ehlo("pc")
        assert not conn.has_extn("starttls")
        conn.login("alice", "wonderland")
        conn.sendmail("a@example.org", ["b@example.org"], b"Subject: starttls\r\n\r\nupgraded\r\n")
    assert smtp_backend.wait_for_messages(1)[0].data == b"Subject: starttls\r\n\r\nupgraded\r\n"
    plain.wait_log(r"client logged in, client: 127\.0\.0\.1 using starttls")


def test_commands_pipelined_after_starttls_are_dropped(tls_mailgate, imap_auth, ca):
    """CVE-2014-3556: what came in the clear after STARTTLS must not run."""
    mg = tls_mailgate(imap_auth, "imap", params="", extra="starttls on;")
    sock = socket.create_connection(("127.0.0.1", mg.port), timeout=10)
    recv_until(sock, b"\r\n")
    sock.sendall(b"a1 STARTTLS\r\na2 LOGIN alice wonderland\r\n")
    assert recv_tagged(sock, b"a1") == b"a1 OK completed\r\n"
    tls_sock = client_context(ca).wrap_socket(sock, server_hostname="mail.test")
    tls_sock.sendall(b"a3 NOOP\r\n")
    assert recv_tagged(tls_sock, b"a3") == b"a3 OK completed\r\n"  # no a2 reply before it
    assert imap_auth.requests == []


def test_client_certificate_verified(tls_mailgate, pop3_auth, ca, certs):
    extra = f"ssl_verify_client on;\nssl_client_certificate {certs['ca.crt']};"
    mg = tls_mailgate(pop3_auth, "pop3", extra=extra)
    pop = poplib.POP3_SSL("127.0.0.1", mg.port, context=client_context(ca, certs["client.pem"]), timeout=10)
    pop.user("alice")
    assert pop.pass_("wonderland") == b"+OK logged in"
    pop.quit()
    request = pop3_auth.requests[0]
    assert request.header("Auth-SSL-Verify") == "SUCCESS"
    assert request.header("Auth-SSL-Subject")
    assert request.header("Auth-SSL-Fingerprint") and len(request.header("Auth-SSL-Fingerprint")) == 40


def test_client_certificate_missing(tls_mailgate, pop3_auth, ca, certs):
    extra = f"ssl_verify_client on;\nssl_client_certificate {certs['ca.crt']};"
    mg = tls_mailgate(pop3_auth, "pop3", extra=extra)
    sock = client_context(ca).wrap_socket(socket.create_connection(("127.0.0.1", mg.port), timeout=10),
                                          server_hostname="mail.test")
    assert recv_all(sock) == b"-ERR No required SSL certificate\r\n"
    mg.wait_log("client sent no required SSL certificate while SSL handshaking")


def test_client_certificate_from_a_stranger_ca(tls_mailgate, pop3_auth, ca, certs):
    extra = f"ssl_verify_client on;\nssl_client_certificate {certs['ca.crt']};"
    mg = tls_mailgate(pop3_auth, "pop3", extra=extra)
    raw = socket.create_connection(("127.0.0.1", mg.port), timeout=10)
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        sock = client_context(ca, certs["stranger.pem"]).wrap_socket(raw, server_hostname="mail.test")
        sock.sendall(b"CAPA\r\n")
        if not sock.recv(100):
            raise ssl.SSLError("closed")
    mg.wait_log(r"client SSL certificate verify error: \(\d+:")
    assert pop3_auth.requests == []


def test_sni_picks_the_certificate(tls_mailgate, pop3_auth, ca):
    mg = tls_mailgate(pop3_auth, "pop3", two_certs=True)
    for name in ("mail.test", "other.test"):
        sock = client_context(ca).wrap_socket(socket.create_connection(("127.0.0.1", mg.port), timeout=10),
                                              server_hostname=name)
        # The hostname check passing proves the certificate matched the name.
        assert recv_until(sock, b"\r\n") == b"+OK POP3 ready\r\n"
        sock.sendall(b"USER alice\r\nPASS wonderland\r\nQUIT\r\n")
        recv_all(sock)
    assert [r.header("Auth-SSL-Server-Name") for r in pop3_auth.requests] == ["mail.test", "other.test"]


def test_alpn_for_another_protocol_is_refused(tls_mailgate, pop3_auth, ca):
    mg = tls_mailgate(pop3_auth, "pop3")
    raw = socket.create_connection(("127.0.0.1", mg.port), timeout=10)
    with pytest.raises(ssl.SSLError):
        client_context(ca, alpn=["http/1.1"]).wrap_socket(raw, server_hostname="mail.test")
    good = client_context(ca, alpn=["pop3"]).wrap_socket(socket.create_connection(("127.0.0.1", mg.port), timeout=10),
                                                          server_hostname="mail.test")
    assert good.selected_alpn_protocol() == "pop3"


def test_unloadable_certificate_is_a_clear_error(make_mailgate, pop3_auth, tmp_path):
    missing = tmp_path / "missing.crt"
    mg = make_mailgate(pop3_auth.port, start=False,
                       server=f"        ssl_certificate {missing};\n        ssl_certificate_key {missing};")
    mg.write_config(mg.conf.read_text().replace(f"listen 127.0.0.1:{mg.port};", f"listen 127.0.0.1:{mg.port} ssl;"))
    for command in ("test", "start"):
        result = mg.cli(command)
        assert result.returncode == 1
        assert f'"{missing}"' in result.stderr and f"in {mg.conf}:" in result.stderr
    assert not mg.pid_path.exists()


def test_proxy_header_then_tls_on_one_listener(tls_mailgate, pop3_auth, ca):
    """The PROXY header is read before the TLS handshake (SPEC 1, 3.1)."""
    mg = tls_mailgate(pop3_auth, "pop3", params="ssl proxy_protocol", extra="set_real_ip_from 127.0.0.1;")
    raw = socket.create_connection(("127.0.0.1", mg.port), timeout=10)
    raw.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 995\r\n")
    sock = client_context(ca).wrap_socket(raw, server_hostname="mail.test")
    assert recv_until(sock, b"\r\n") == b"+OK POP3 ready\r\n"
    sock.sendall(b"USER alice\r\nPASS wonderland\r\nQUIT\r\n")
    assert b"+OK logged in" in recv_all(sock)
    request = pop3_auth.requests[0]
    assert request.header("Client-IP") == "192.0.2.7" and request.header("Auth-SSL") == "on"
