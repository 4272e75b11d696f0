"""mailgate.tls on real sockets: contexts from the ssl_* directives, loading
errors, protocols, certificate choice by SNI, ALPN, client certificates and
the Auth-SSL-* facts. The server side runs in a thread; the clients are
plain ``ssl`` sockets on loopback. Certificates are made at test time."""

from __future__ import annotations

import datetime
import socket
import ssl
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# trustme >= 1.0 (ECDSA certificates); Debian bookworm's 0.9 is too old, so the
# package build (which runs the unit tests with Debian's libraries) skips these.
trustme = pytest.importorskip("trustme")
if not hasattr(trustme, "KeyType"):
    pytest.skip("needs trustme >= 1.0", allow_module_level=True)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailgate import tls
from mailgate.auth import AuthTls
from mailgate.config import load
from mailgate.config.model import Config
from mailgate.errors import ConfigError
from mailgate.tls_facts import Certificate, rfc2253

TIMEOUT = 10


# --- certificates ------------------------------------------------------------------------


@dataclass
class Pki:
    """Certificates on disk (names relative to ``dir``) and the CAs."""

    dir: Path
    ca: trustme.CA
    other_ca: trustme.CA
    client: trustme.LeafCert
    stranger: trustme.LeafCert
    deep: trustme.LeafCert
    middle: trustme.LeafCert

    def write(self, name: str, data: bytes) -> str:
        (self.dir / name).write_bytes(data)
        return name


def _save(pki: Pki, name: str, cert: trustme.LeafCert) -> None:
    pki.write(f"{name}.crt", b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    pki.write(f"{name}.key", cert.private_key_pem.bytes())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca, other_ca = trustme.CA(), trustme.CA()
    middle_ca = ca.create_child_ca()
    pki = Pki(
        dir=tmp_path_factory.mktemp("pki"), ca=ca, other_ca=other_ca,
        client=ca.issue_cert("client@example.com", common_name="John, Doe+Co"),
        stranger=other_ca.issue_cert("stranger@example.com"),
        deep=middle_ca.create_child_ca().issue_cert("deep@example.com"),
        middle=middle_ca.issue_cert("middle@example.com"),
    )
    for name, cert in (
        ("mail", ca.issue_cert("mail.example.com", key_type=trustme.KeyType.RSA)),
        ("mail-ec", ca.issue_cert("mail.example.com", key_type=trustme.KeyType.ECDSA)),
        ("other", ca.issue_cert("other.example.net", "Alias.Example.Net")),
        ("wild", ca.issue_cert("*.example.org")),
    ):
        _save(pki, name, cert)
    pki.write("ca.pem", ca.cert_pem.bytes())
    pki.write("other-ca.pem", other_ca.cert_pem.bytes())
    return pki


MAIL = "ssl_certificate mail.crt; ssl_certificate_key mail.key;"


def config(pki: Pki, directives: str, *, protocol: str = "imap", more: str = "") -> Config:
    """One server (its block at line 3) with ``listen ... ssl`` and
    ``directives``; ``more`` adds servers after it."""
    text = textwrap.dedent(f"""\
        mail {{
        auth_http 127.0.0.1:9000/auth;
        server {{
        listen 127.0.0.1:1993 ssl;
        protocol {protocol};
        {directives}
        }}
        {more}
        }}
        """)
    path = pki.dir / "mailgate.conf"
    path.write_text(text)
    return load(str(path))


def server_tls(pki: Pki, directives: str = MAIL, **kw: Any) -> tls.ServerTls:
    return tls.ServerTls.from_server(config(pki, directives, **kw).servers[0])


def load_error(pki: Pki, directives: str) -> str:
    with pytest.raises(ConfigError) as err:
        server_tls(pki, directives)
    return str(err.value).replace(str(pki.dir / "mailgate.conf"), "F").replace(f"{pki.dir}/", "")


# --- one connection ----------------------------------------------------------------------


@dataclass
class Outcome:
    server_error: BaseException | None = None
    problem: tls.ClientCertProblem | None = None
    facts: AuthTls | None = None
    client_error: BaseException | None = None
    received: bytes = b""
    server_der: bytes | None = None
    alpn: str | None = None
    version: str | None = None
    session: ssl.SSLSession | None = None
    reused: bool = False

    @property
    def served(self) -> x509.Certificate:
        assert self.server_der is not None, self
        return x509.load_der_x509_certificate(self.server_der)

    @property
    def served_names(self) -> list[str]:
        san = self.served.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return san.value.get_values_for_type(x509.DNSName)


def client_context(pki: Pki, cert: trustme.LeafCert | None = None,
                   alpn: list[str] | None = None, maximum: ssl.TLSVersion | None = None,
                   ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # which certificate is served is what is tested
    pki.ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if maximum is not None:
        ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


def connect(server: tls.ServerTls, client: ssl.SSLContext,
            sni: str | None = "mail.example.com",
            session: ssl.SSLSession | None = None) -> Outcome:
    """Handshake, check_client, facts, then one line from the server ("OK",
    or the problem's kind) and close."""
    out = Outcome()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(TIMEOUT)
        sslsock = server.wrap(conn)
        try:
            sslsock.do_handshake()
            out.reused = sslsock.session_reused
            out.problem = server.check_client(sslsock)
            out.facts = server.facts(sslsock)
            sslsock.sendall(b"OK\r\n" if out.problem is None else out.problem.kind.encode())
        except OSError as err:  # ssl.SSLError included
            out.server_error = err
        finally:
            sslsock.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        sock = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        with client.wrap_socket(sock, server_hostname=sni, session=session) as sslsock:
            out.server_der = sslsock.getpeercert(binary_form=True)
            out.alpn, out.version = sslsock.selected_alpn_protocol(), sslsock.version()
            out.received = sslsock.recv(100)
            out.session = sslsock.session
            if not out.received:
                raise ConnectionResetError("closed without a reply")
    except OSError as err:
        out.client_error = err
    finally:
        thread.join(TIMEOUT)
        listener.close()
    return out


# --- contexts and loading ----------------------------------------------------------------


def test_rsa_certificate(pki: Pki) -> None:
    out = connect(server_tls(pki), client_context(pki))
    assert out.received == b"OK\r\n", out
    assert isinstance(out.served.public_key(), rsa.RSAPublicKey)
    assert out.facts == AuthTls(protocol="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384",
                                sni="mail.example.com")


def test_rsa_and_ecdsa_for_one_name(pki: Pki) -> None:
    """nginx's use of several certificates: one per key type, the client's
    ciphers decide."""
    server = server_tls(pki, MAIL + "ssl_certificate mail-ec.crt; ssl_certificate_key mail-ec.key;")
    assert len(server.identities) == 1
    tls12 = ssl.TLSVersion.TLSv1_2
    out = connect(server, client_context(pki, maximum=tls12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
    assert isinstance(out.served.public_key(), ec.EllipticCurvePublicKey), out
    assert out.facts is not None and out.facts.cipher == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert out.facts.protocol == "TLSv1.2"
    out = connect(server, client_context(pki, maximum=tls12, ciphers="ECDHE-RSA-AES128-GCM-SHA256"))
    assert isinstance(out.served.public_key(), rsa.RSAPublicKey), out


def test_data_values(pki: Pki) -> None:
    cert = (pki.dir / "mail.crt").read_text().replace("\n", "\\n")
    key = (pki.dir / "mail.key").read_text().replace("\n", "\\n")
    ca = (pki.dir / "ca.pem").read_text().replace("\n", "\\n")
    server = server_tls(pki, f'ssl_certificate "data:{cert}"; ssl_certificate_key "data:{key}";'
                             f'ssl_verify_client on; ssl_client_certificate "data:{ca}";')
    out = connect(server, client_context(pki, cert=pki.client))
    assert out.received == b"OK\r\n", out
    assert out.facts is not None and out.facts.verify == "SUCCESS"


@pytest.mark.parametrize(
    ("directives", "message"),
    [
        ("ssl_certificate nope.crt; ssl_certificate_key mail.key;",
         'cannot load certificate "nope.crt": No such file or directory in F:3'),
        ("ssl_certificate mail.key; ssl_certificate_key mail.key;",
         'cannot load certificate "mail.key": no PEM certificate found in F:3'),
        ("ssl_certificate bad.crt; ssl_certificate_key mail.key;",
         'cannot load certificate "bad.crt": bad DER length in F:3'),
        ("ssl_certificate mail.crt; ssl_certificate_key nope.key;",
         'cannot load certificate key "nope.key": No such file or directory in F:3'),
        ("ssl_certificate mail.crt; ssl_certificate_key mail.crt;",
         'cannot load certificate key "mail.crt": no PEM private key found in F:3'),
        ("ssl_certificate mail.crt; ssl_certificate_key other.key;",  # RSA with ECDSA
         'cannot load certificate key "other.key": it does not match certificate "mail.crt" '
         "in F:3"),
        ("ssl_certificate mail-ec.crt; ssl_certificate_key other.key;",  # two ECDSA keys
         'cannot load certificate key "other.key": it does not match certificate "mail-ec.crt" '
         "in F:3"),
        ("ssl_certificate mail.crt; ssl_certificate_key garbage.key;",
         'cannot load certificate "mail.crt" with key "garbage.key": PEM lib in F:3'),
        ('ssl_certificate "data:x"; ssl_certificate_key mail.key;',
         'cannot load certificate "data:...": no PEM certificate found in F:3'),
        (MAIL + "ssl_verify_client on; ssl_client_certificate nope.pem;",
         'cannot load certificate "nope.pem": No such file or directory in F:3'),
        (MAIL + "ssl_verify_client on; ssl_client_certificate mail.key;",
         'cannot load certificate "mail.key": no PEM certificate found in F:3'),
        (MAIL + "ssl_verify_client on; ssl_client_certificate ca.pem; ssl_crl ca.pem;",
         'cannot load CRL "ca.pem": the file must hold PEM CRLs only in F:3'),
        (MAIL + "ssl_dhparam ca.pem;", 'cannot load DH parameters "ca.pem": no start line in F:3'),
        (MAIL + "ssl_dhparam nope.pem;",
         'cannot load DH parameters "nope.pem": No such file or directory in F:3'),
        (MAIL + "ssl_ecdh_curve nosuchcurve;",
         'unknown curve "nosuchcurve" in "ssl_ecdh_curve" in F:3'),
        (MAIL + "ssl_ciphers NOTHING;", 'SSL_CTX_set_cipher_list("NOTHING") failed in F:3'),
        (MAIL + "ssl_protocols SSLv3;", 'no TLS protocol is enabled by "ssl_protocols" in F:3'),
        (MAIL + "ssl_session_ticket_key short.key;", '"short.key" must be 48 or 80 bytes in F:3'),
        (MAIL + "ssl_session_ticket_key nope.key;",
         'open() "nope.key" failed (2: No such file or directory) in F:3'),
        (MAIL + "ssl_password_file nope.txt;",
         'open() "nope.txt" failed (2: No such file or directory) in F:3'),
        (MAIL + "ssl_conf_command CipherString NOTHING;",
         'SSL_CONF_cmd("CipherString", "NOTHING") failed in F:3'),
        (MAIL + "ssl_conf_command Groups nosuchgroup;",
         'unknown curve "nosuchgroup" in "ssl_conf_command Groups" in F:3'),
    ],
)
def test_load_errors(pki: Pki, directives: str, message: str) -> None:
    pki.write("bad.crt", b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    pki.write("garbage.key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    pki.write("short.key", b"x" * 47)
    assert load_error(pki, directives) == message


# --- key passwords -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def encrypted_key(pki: Pki) -> str:
    key = serialization.load_pem_private_key((pki.dir / "mail.key").read_bytes(), None)
    return pki.write("encrypted.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret pass")))


def test_password_file_lines_are_tried_in_turn(pki: Pki, encrypted_key: str) -> None:
    pki.write("pass.txt", b"wrong\r\n\n\nalso wrong\ns3cret pass\r\n")
    server = server_tls(pki, f"ssl_certificate mail.crt; ssl_certificate_key {encrypted_key};"
                             "ssl_password_file pass.txt;")
    assert connect(server, client_context(pki)).received == b"OK\r\n"


def test_password_file_without_the_password(pki: Pki, encrypted_key: str) -> None:
    pki.write("pass.txt", b"wrong\n")
    assert load_error(pki, f"ssl_certificate mail.crt; ssl_certificate_key {encrypted_key};"
                           "ssl_password_file pass.txt;") == (
        f'cannot load certificate key "{encrypted_key}": no password in "pass.txt" decrypts it '
        "in F:3")


def test_encrypted_key_without_password_file(pki: Pki, encrypted_key: str) -> None:
    # Never a prompt on the terminal: the empty password is tried and fails.
    assert load_error(pki, f"ssl_certificate mail.crt; ssl_certificate_key {encrypted_key};") == (
        f'cannot load certificate key "{encrypted_key}": the key is encrypted and no '
        '"ssl_password_file" is set in F:3')


def test_password_file_for_a_plain_key(pki: Pki) -> None:
    pki.write("empty.txt", b"")
    server = server_tls(pki, MAIL + "ssl_password_file empty.txt;")
    assert connect(server, client_context(pki)).received == b"OK\r\n"


# --- protocols and options ---------------------------------------------------------------


def test_default_protocols(pki: Pki) -> None:
    ctx = server_tls(pki).context
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert not ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert ctx.options & ssl.OP_NO_RENEGOTIATION and not ctx.options & ssl.OP_NO_TICKET
    assert ctx.verify_mode == ssl.CERT_NONE


def test_tls13_only(pki: Pki) -> None:
    server = server_tls(pki, MAIL + "ssl_protocols TLSv1.3;")
    assert server.context.minimum_version == ssl.TLSVersion.TLSv1_3
    out = connect(server, client_context(pki, maximum=ssl.TLSVersion.TLSv1_2))
    assert out.client_error is not None and isinstance(out.server_error, ssl.SSLError)
    assert connect(server, client_context(pki)).version == "TLSv1.3"


def test_tls12_only(pki: Pki) -> None:
    server = server_tls(pki, MAIL + "ssl_protocols TLSv1.2;")
    assert server.context.maximum_version == ssl.TLSVersion.TLSv1_2
    out = connect(server, client_context(pki))
    assert out.version == "TLSv1.2" and out.facts is not None
    assert out.facts.protocol == "TLSv1.2" and out.facts.cipher.startswith("ECDHE-RSA-")


def test_holes_in_the_protocol_range(pki: Pki) -> None:
    ctx = server_tls(pki, MAIL + "ssl_protocols TLSv1 TLSv1.2 SSLv3;").context
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_TLSv1_1 and not ctx.options & ssl.OP_NO_TLSv1


def test_options(pki: Pki) -> None:
    ctx = server_tls(pki, MAIL + """ssl_prefer_server_ciphers on; ssl_session_tickets off;
        ssl_ecdh_curve secp384r1; ssl_session_cache builtin;""").context
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE and ctx.options & ssl.OP_NO_TICKET
    assert ctx.num_tickets == 2  # stateful TLSv1.3 tickets, backed by the cache
    ctx = server_tls(pki, MAIL + "ssl_session_tickets off; ssl_session_cache off;").context
    assert ctx.options & ssl.OP_NO_TICKET and ctx.num_tickets == 0


def test_conf_commands(pki: Pki) -> None:
    ctx = server_tls(pki, MAIL + """
        ssl_conf_command Options "-SessionTicket, PrioritizeChaCha, -Compression";
        ssl_conf_command Protocol "-TLSv1.3";
        ssl_conf_command NumTickets 1;
        ssl_conf_command MinProtocol TLSv1.2;
        ssl_conf_command MaxProtocol None;
        ssl_conf_command Groups X25519;
        ssl_conf_command CipherString ECDHE+AESGCM;""").context
    assert ctx.options & ssl.OP_NO_TICKET and ctx.options & 0x00200000  # PrioritizeChaCha
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_TLSv1_3
    assert ctx.num_tickets == 1 and ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
    names = {cipher["name"] for cipher in ctx.get_ciphers() if cipher["protocol"] == "TLSv1.2"}
    assert names and all(name.startswith("ECDHE-") and "GCM" in name for name in names)


def test_conf_command_options_clear_too(pki: Pki) -> None:
    ctx = server_tls(pki, MAIL + "ssl_prefer_server_ciphers on;"
                                 "ssl_conf_command Options -ServerPreference,SessionTicket;").context
    assert not ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert not ctx.options & ssl.OP_NO_TICKET


# --- SNI ---------------------------------------------------------------------------------


SNI_SERVER = MAIL + """
    ssl_certificate mail-ec.crt; ssl_certificate_key mail-ec.key;
    ssl_certificate other.crt; ssl_certificate_key other.key;
    ssl_certificate wild.crt; ssl_certificate_key wild.key;
"""


@pytest.mark.parametrize(
    ("sni", "served", "header"),
    [
        ("mail.example.com", ["mail.example.com"], "mail.example.com"),
        ("other.example.net", ["other.example.net", "alias.example.net"], "other.example.net"),
        ("ALIAS.example.NET", ["other.example.net", "alias.example.net"], "alias.example.net"),
        ("imap.example.org", ["*.example.org"], "imap.example.org"),
        ("example.org", ["mail.example.com"], "example.org"),  # a wildcard needs a label
        ("a.b.example.org", ["mail.example.com"], "a.b.example.org"),  # exactly one
        ("unknown.test", ["mail.example.com"], "unknown.test"),
        (None, ["mail.example.com"], ""),
        ("bad name!.example.org", ["mail.example.com"], ""),  # not a host name: ignored
    ],
)
def test_certificate_by_sni(pki: Pki, sni: str | None, served: list[str], header: str) -> None:
    server = server_tls(pki, SNI_SERVER)
    out = connect(server, client_context(pki), sni=sni)
    assert out.received == b"OK\r\n", out
    assert out.served_names == served
    assert out.facts is not None and out.facts.sni == header


def test_identities(pki: Pki) -> None:
    server = server_tls(pki, SNI_SERVER)
    assert [names for names, _ctx in server.identities] == [
        ("mail.example.com",), ("other.example.net", "alias.example.net"), ("*.example.org",)]
    assert server.select("mail.example.com") is server.context
    assert server.select("x.example.org") is server.identities[2][1]
    assert server.select("") is server.context


def test_same_names_keep_both_key_types_under_sni(pki: Pki) -> None:
    server = server_tls(pki, SNI_SERVER)
    client = client_context(pki, maximum=ssl.TLSVersion.TLSv1_2,
                            ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    out = connect(server, client, sni="mail.example.com")
    assert isinstance(out.served.public_key(), ec.EllipticCurvePublicKey), out


def test_exact_name_wins_over_wildcard(pki: Pki) -> None:
    _save(pki, "exact", pki.ca.issue_cert("imap.example.org"))
    server = server_tls(pki, SNI_SERVER + "ssl_certificate exact.crt; ssl_certificate_key exact.key;")
    assert connect(server, client_context(pki), sni="imap.example.org").served_names == [
        "imap.example.org"]
    assert connect(server, client_context(pki), sni="pop.example.org").served_names == [
        "*.example.org"]


def test_sni_switch_keeps_client_verification(pki: Pki) -> None:
    server = server_tls(pki, SNI_SERVER + "ssl_verify_client on; ssl_client_certificate ca.pem;")
    out = connect(server, client_context(pki, cert=pki.client), sni="other.example.net")
    assert out.served_names == ["other.example.net", "alias.example.net"]
    assert out.facts is not None and out.facts.verify == "SUCCESS"
    out = connect(server, client_context(pki, cert=pki.stranger), sni="imap.example.org")
    assert isinstance(out.server_error, ssl.SSLCertVerificationError)


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize("sni", ["mail.example.com", "imap.example.org"])
def test_session_resumption(pki: Pki, maximum: ssl.TLSVersion, sni: str) -> None:
    """Sessions resume (within a worker) through the SNI switch, and keep
    the client certificate's facts."""
    server = server_tls(pki, SNI_SERVER + "ssl_verify_client on; ssl_client_certificate ca.pem;")
    client = client_context(pki, cert=pki.client, maximum=maximum)
    first = connect(server, client, sni=sni)
    second = connect(server, client, sni=sni, session=first.session)
    assert not first.reused and second.reused, (first, second)
    assert second.received == b"OK\r\n" and second.served_names == first.served_names
    assert second.facts == first.facts and second.facts is not None
    assert second.facts.verify == "SUCCESS" and second.facts.subject


# --- ALPN --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "offer", "selected"),
    [("imap", ["imap"], "imap"), ("imap", ["h2", "imap"], "imap"), ("imap", None, None),
     ("pop3", ["pop3"], "pop3"), ("smtp", ["smtp", "imap"], "smtp")],
)
def test_alpn_accepted(pki: Pki, protocol: str, offer: list[str] | None,
                       selected: str | None) -> None:
    server = server_tls(pki, protocol=protocol)
    out = connect(server, client_context(pki, alpn=offer))
    assert out.received == b"OK\r\n", out
    assert out.alpn == selected


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_alpn_without_the_protocol_is_refused(pki: Pki, maximum: ssl.TLSVersion) -> None:
    """nginx: the fatal alert no_application_protocol."""
    out = connect(server_tls(pki), client_context(pki, alpn=["pop3", "h2"], maximum=maximum))
    assert out.received == b"" and out.facts is None
    assert isinstance(out.server_error, ssl.SSLError)
    assert "no application protocol" in str(out.client_error)


# --- client certificates -----------------------------------------------------------------


VERIFY_ON = MAIL + "ssl_verify_client on; ssl_client_certificate ca.pem;"


def expected_facts(client: trustme.LeafCert, **kw: Any) -> dict[str, str]:
    leaf = x509.load_pem_x509_certificate(client.cert_chain_pems[0].bytes())
    der = leaf.public_bytes(serialization.Encoding.DER)
    parsed = Certificate.from_der(der)
    serial = f"{leaf.serial_number:X}"
    return dict(verify="SUCCESS", subject=rfc2253(parsed.subject), issuer=rfc2253(parsed.issuer),
                serial=serial.zfill(len(serial) + len(serial) % 2),
                fingerprint=leaf.fingerprint(hashes.SHA1()).hex(), **kw)


def test_client_certificate_verified(pki: Pki) -> None:
    out = connect(server_tls(pki, VERIFY_ON), client_context(pki, cert=pki.client))
    assert out.received == b"OK\r\n" and out.problem is None, out
    assert out.facts is not None
    facts = {k: getattr(out.facts, k) for k in ("verify", "subject", "issuer", "serial",
                                                "fingerprint", "cert")}
    assert facts == expected_facts(pki.client, cert="")
    assert out.facts.subject.startswith("CN=John\\, Doe\\+Co,OU=Testing cert #")
    assert out.facts.issuer.startswith("OU=Testing CA #")


def test_client_certificate_passed_as_pem(pki: Pki) -> None:
    server = server_tls(pki, VERIFY_ON + "auth_http_pass_client_cert on;")
    out = connect(server, client_context(pki, cert=pki.client))
    assert out.facts is not None
    assert out.facts.cert == pki.client.cert_chain_pems[0].bytes().decode()


def test_trusted_certificate_will_do(pki: Pki) -> None:
    server = server_tls(pki, MAIL + "ssl_verify_client optional; ssl_trusted_certificate ca.pem;")
    out = connect(server, client_context(pki, cert=pki.client))
    assert out.facts is not None and out.facts.verify == "SUCCESS"


def test_no_certificate_with_on(pki: Pki) -> None:
    """SPEC 3.3: the handshake completes, then "No required SSL certificate"."""
    out = connect(server_tls(pki, VERIFY_ON), client_context(pki))
    assert out.problem == tls.ClientCertProblem("no certificate",
                                                "client sent no required SSL certificate")
    assert out.received == b"no certificate"
    assert out.facts is not None and out.facts.verify == "NONE" and not out.facts.subject


def test_no_certificate_with_optional(pki: Pki) -> None:
    server = server_tls(pki, MAIL + "ssl_verify_client optional; ssl_client_certificate ca.pem;")
    out = connect(server, client_context(pki))
    assert out.received == b"OK\r\n" and out.problem is None
    assert out.facts == AuthTls(protocol="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384",
                                verify="NONE", sni="mail.example.com")


@pytest.mark.parametrize("verify", ["on", "optional"])
@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_certificate_from_another_ca(pki: Pki, verify: str, maximum: ssl.TLSVersion) -> None:
    """OpenSSL ends the handshake (Python's ssl has no verify callback): no
    line can be sent; the worker logs nginx's message."""
    server = server_tls(pki, MAIL + f"ssl_verify_client {verify}; ssl_client_certificate ca.pem;")
    out = connect(server, client_context(pki, cert=pki.stranger, maximum=maximum))
    assert isinstance(out.server_error, ssl.SSLCertVerificationError)
    assert out.facts is None and out.received == b""
    assert tls.handshake_failure(out.server_error) == (
        "client SSL certificate verify error: (20:unable to get local issuer certificate)")
    assert "unknown ca" in str(out.client_error)


def test_handshake_failure_ignores_other_errors() -> None:
    assert tls.handshake_failure(ssl.SSLError(1, "wrong version number")) is None
    assert tls.handshake_failure(ConnectionResetError()) is None


def test_verify_depth(pki: Pki) -> None:
    """Depth 1 (the default) allows one intermediate CA: nginx's limit is
    checked after the handshake, with nginx's error and reply."""
    server = server_tls(pki, VERIFY_ON)
    assert connect(server, client_context(pki, cert=pki.middle)).received == b"OK\r\n"
    out = connect(server, client_context(pki, cert=pki.deep))
    assert out.problem == tls.ClientCertProblem(
        "certificate error", "client SSL certificate verify error: (22:certificate chain too long)")
    assert out.received == b"certificate error"
    out = connect(server_tls(pki, VERIFY_ON + "ssl_verify_depth 2;"),
                  client_context(pki, cert=pki.deep))
    assert out.received == b"OK\r\n" and out.problem is None


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_verify_depth_holds_for_resumed_sessions(pki: Pki, maximum: ssl.TLSVersion) -> None:
    """A resumed session has no verified chain: the refusal is remembered."""
    server = server_tls(pki, VERIFY_ON)
    client = client_context(pki, cert=pki.deep, maximum=maximum)
    first = connect(server, client)
    assert first.problem is not None and first.session is not None
    second = connect(server, client, session=first.session)
    assert second.reused and second.problem == first.problem
    assert second.received == b"certificate error"
    # A certificate that passed resumes without a problem.
    good = client_context(pki, cert=pki.middle, maximum=maximum)
    third = connect(server, good, session=connect(server, good).session)
    assert third.reused and third.problem is None and third.received == b"OK\r\n"


def test_verify_off_asks_for_no_certificate(pki: Pki) -> None:
    out = connect(server_tls(pki, MAIL + "ssl_client_certificate ca.pem;"),
                  client_context(pki, cert=pki.client))
    assert out.received == b"OK\r\n" and out.problem is None
    assert out.facts is not None and out.facts.verify == "" and out.facts.subject == ""


def make_crl(pki: Pki, revoked: list[trustme.LeafCert]) -> str:
    ca_cert = x509.load_pem_x509_certificate(pki.ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(pki.ca.private_key_pem.bytes(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now - datetime.timedelta(hours=1))
               .next_update(now + datetime.timedelta(days=1)))
    for cert in revoked:
        serial = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).serial_number
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    crl = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return pki.write("crl.pem", crl.public_bytes(serialization.Encoding.PEM))


def test_crl(pki: Pki) -> None:
    revoked = pki.ca.issue_cert("revoked@example.com")
    crl = make_crl(pki, [revoked])
    server = server_tls(pki, VERIFY_ON + f"ssl_crl {crl};")
    assert server.context.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN == ssl.VERIFY_CRL_CHECK_CHAIN
    assert connect(server, client_context(pki, cert=pki.client)).received == b"OK\r\n"
    out = connect(server, client_context(pki, cert=revoked))
    assert out.server_error is not None
    assert tls.handshake_failure(out.server_error) == (
        "client SSL certificate verify error: (23:certificate revoked)")


def test_crl_file_with_a_certificate_is_refused(pki: Pki) -> None:
    crl = make_crl(pki, [])
    pki.write("mixed.pem", (pki.dir / crl).read_bytes() + pki.other_ca.cert_pem.bytes())
    assert load_error(pki, VERIFY_ON + "ssl_crl mixed.pem;") == (
        'cannot load CRL "mixed.pem": the file must hold PEM CRLs only in F:3')


# --- facts without a handshake of ours ---------------------------------------------------


class FakeSocket:
    """What facts() reads from an SSL socket."""

    def __init__(self, der: bytes | None) -> None:
        self.der = der

    def version(self) -> str:
        return "TLSv1.2"

    def cipher(self) -> tuple[str, str, int]:
        return ("ECDHE-RSA-AES256-GCM-SHA384", "TLSv1.2", 256)

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        return self.der


def test_facts_off_and_on(pki: Pki) -> None:
    der = x509.load_pem_x509_certificate(pki.client.cert_chain_pems[0].bytes()).public_bytes(
        serialization.Encoding.DER)
    assert tls.facts(FakeSocket(der), "off", True) == AuthTls(
        protocol="TLSv1.2", cipher="ECDHE-RSA-AES256-GCM-SHA384")
    facts = tls.facts(FakeSocket(der), "optional", False)
    assert facts.verify == "SUCCESS" and facts.subject and not facts.cert
    assert tls.facts(FakeSocket(None), "on", True).verify == "NONE"


def test_facts_of_a_certificate_the_reader_cannot_parse() -> None:
    facts = tls.facts(FakeSocket(b"\x30\x00"), "on", True)
    assert facts.verify == "SUCCESS" and facts.fingerprint and facts.cert
    assert facts.subject == "" and facts.serial == ""


# --- whole configurations ----------------------------------------------------------------


def test_load_and_check(pki: Pki) -> None:
    more = textwrap.dedent("""\
        server {
        listen 127.0.0.1:1143;
        protocol imap;
        }
        server {
        listen 127.0.0.1:1144;
        protocol imap;
        starttls on;
        ssl_certificate other.crt; ssl_certificate_key other.key;
        }
        """)
    cfg = config(pki, MAIL, more=more)
    loaded = tls.load(cfg)
    assert loaded[1] is None and loaded[0] is not None and loaded[2] is not None
    assert loaded[2].select("") is loaded[2].context
    tls.check(cfg)


def test_check_names_the_failing_server(pki: Pki) -> None:
    more = "server {\nlisten 127.0.0.1:1144;\nprotocol imap;\nstarttls on;\n" \
           "ssl_certificate gone.crt; ssl_certificate_key other.key;\n}\n"
    cfg = config(pki, MAIL, more=more)
    with pytest.raises(ConfigError) as err:
        tls.check(cfg)
    assert err.value.line == 8 and err.value.file == str(pki.dir / "mailgate.conf")
    assert err.value.message == f'cannot load certificate "{pki.dir}/gone.crt": ' \
                                "No such file or directory"


def test_reload_reads_certificates_again(pki: Pki) -> None:
    """A new generation of workers builds new contexts from the files."""
    _save(pki, "rotating", pki.ca.issue_cert("old.example.com"))
    directives = "ssl_certificate rotating.crt; ssl_certificate_key rotating.key;"
    first = server_tls(pki, directives)
    _save(pki, "rotating", pki.ca.issue_cert("new.example.com"))
    second = server_tls(pki, directives)
    assert connect(first, client_context(pki)).served_names == ["old.example.com"]
    assert connect(second, client_context(pki)).served_names == ["new.example.com"]
