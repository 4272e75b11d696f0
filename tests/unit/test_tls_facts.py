"""Certificate facts as nginx reports them (RFC 2253 names, serial,
fingerprint, PEM) and the ALPN list of a ClientHello, from bytes alone."""

from __future__ import annotations

import datetime
import hashlib
import shutil
import ssl
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID, ObjectIdentifier

from mailgate.tls_facts import (
    Certificate,
    certificates,
    clean_host_name,
    client_hello_alpn,
    fingerprint,
    pem,
    pem_blocks,
    rfc2253,
    serial_hex,
)

KEY = ec.generate_private_key(ec.SECP256R1())
NOW = datetime.datetime(2024, 1, 1)


def make(subject: x509.Name, serial: int = 1, issuer: x509.Name | None = None,
         san: list[str] | None = None) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
               .public_key(KEY.public_key()).serial_number(serial)
               .not_valid_before(NOW).not_valid_after(NOW + datetime.timedelta(days=1)))
    if san is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), critical=False)
    return builder.sign(KEY, hashes.SHA256())


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def name(*attributes: x509.NameAttribute) -> x509.Name:
    return x509.Name(list(attributes))


def cn(value: str, kind: _ASN1Type | None = None) -> x509.NameAttribute:
    if kind is None:
        return x509.NameAttribute(NameOID.COMMON_NAME, value)
    return x509.NameAttribute(NameOID.COMMON_NAME, value, kind)


# --- RFC 2253 as OpenSSL prints it -------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (name(x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
              x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"), cn("john")),
         "CN=john,O=Example,C=DE"),
        (name(cn(' lead,+"\\<>;=trail ')), 'CN=\\ lead\\,\\+\\"\\\\\\<\\>\\;=trail\\ '),
        (name(cn("#hash#")), "CN=\\#hash#"),
        (name(cn("#")), "CN=#"),  # OpenSSL: a one-byte value counts as last, not first
        (name(cn(" ")), "CN=\\ "),
        (name(cn("Müller ☃")), "CN=M\\C3\\BCller \\E2\\98\\83"),
        (name(cn("a\x01b\x7fc\td")), "CN=a\\01b\\7Fc\\09d"),
        (name(cn("bmp ü", _ASN1Type.BMPString)), "CN=bmp \\C3\\BC"),
        (name(cn("uni 𝄞", _ASN1Type.UniversalString)), "CN=uni \\F0\\9D\\84\\9E"),
        (name(cn("latin ü", _ASN1Type.T61String)), "CN=latin \\C3\\83\\C2\\BC"),
        (name(x509.NameAttribute(NameOID.EMAIL_ADDRESS, "a@b.example"),
              x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "example"),
              x509.NameAttribute(NameOID.USER_ID, "u1"),
              x509.NameAttribute(NameOID.GIVEN_NAME, "g"),
              x509.NameAttribute(NameOID.SURNAME, "s")),
         "SN=s,GN=g,UID=u1,DC=example,emailAddress=a@b.example"),
        (name(x509.NameAttribute(ObjectIdentifier("1.2.3.4"), "x")), "1.2.3.4=#0C0178"),
        (x509.Name([x509.RelativeDistinguishedName([cn("a"), x509.NameAttribute(
            NameOID.ORGANIZATIONAL_UNIT_NAME, "b")]),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")])]),
         "C=DE,OU=b+CN=a"),
        (x509.Name([]), ""),
    ],
)
def test_rfc2253(subject: x509.Name, expected: str) -> None:
    cert = Certificate.from_der(der(make(subject, issuer=name(cn("Issuer, Inc.")))))
    assert rfc2253(cert.subject) == expected
    assert rfc2253(cert.issuer) == "CN=Issuer\\, Inc."


COUNTRIES = ("2.5.4.6", "1.3.6.1.4.1.311.60.2.1.3")
ORACLE_NAMES = [
    name(cn(' a,b+c"d\\e<f>g;h=i#j ')),
    name(cn("#")), name(cn(" # ")), name(cn("x ")),
    name(cn("日本語 ü"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ctl\x00\x1f\x7f")),
    name(cn("bmp ☃", _ASN1Type.BMPString), cn("uni 𝄞", _ASN1Type.UniversalString),
         cn("ia5", _ASN1Type.IA5String), cn("t61 é", _ASN1Type.T61String)),
    name(*[x509.NameAttribute(ObjectIdentifier(oid), "DE" if oid in COUNTRIES else "v") for oid in (
        "2.5.4.3", "2.5.4.4", "2.5.4.5", "2.5.4.6", "2.5.4.7", "2.5.4.8", "2.5.4.9", "2.5.4.10",
        "2.5.4.11", "2.5.4.12", "2.5.4.13", "2.5.4.15", "2.5.4.17", "2.5.4.18", "2.5.4.20",
        "2.5.4.41", "2.5.4.42", "2.5.4.43", "2.5.4.44", "2.5.4.46", "2.5.4.65", "2.5.4.72",
        "2.5.4.97", "1.2.840.113549.1.9.1", "1.2.840.113549.1.9.2",
        "0.9.2342.19200300.100.1.1", "0.9.2342.19200300.100.1.25",
        "1.3.6.1.4.1.311.60.2.1.1", "1.3.6.1.4.1.311.60.2.1.2", "1.3.6.1.4.1.311.60.2.1.3",
        "1.3.6.1.4.1.99999.1",
    )]),
]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize("subject", ORACLE_NAMES)
@pytest.mark.parametrize("serial", [1, 0x7F, 0x80, 0x0ABC, 2**159 - 1])
def test_matches_openssl(subject: x509.Name, serial: int) -> None:
    """The same OpenSSL nginx uses prints the same strings."""
    cert = make(subject, serial)
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-serial", "-fingerprint", "-sha1",
         "-nameopt", "RFC2253"],
        input=cert.public_bytes(serialization.Encoding.PEM), capture_output=True, check=True,
    ).stdout.decode("latin-1").splitlines()
    ours = Certificate.from_der(der(cert))
    assert "subject=" + rfc2253(ours.subject) == out[0]
    assert "serial=" + serial_hex(ours.serial) == out[1]
    assert out[2].split("=", 1)[1].replace(":", "").lower() == fingerprint(der(cert))


# --- serial, fingerprint, PEM ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"\x01", "01"), (b"\x00\x80", "80"), (b"\x0a\xbc", "0ABC"), (b"\x00", "00"),
     (b"\xff", "-01"), (b"\xff\x7f", "-81"), (b"\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff",
                                              "FFFFFFFFFFFFFFFFFF")],
)
def test_serial_hex(content: bytes, expected: str) -> None:
    assert serial_hex(content) == expected


def test_serial_of_a_certificate() -> None:
    cert = Certificate.from_der(der(make(name(cn("x")), serial=0xDEADBEEF01)))
    assert serial_hex(cert.serial) == "DEADBEEF01"


def test_fingerprint_and_pem() -> None:
    data = der(make(name(cn("x"))))
    assert fingerprint(data) == hashlib.sha1(data).hexdigest()
    assert pem(data) == ssl.DER_cert_to_PEM_cert(data)
    assert pem(data).endswith("-----END CERTIFICATE-----\n")
    assert all(len(line) <= 64 for line in pem(data).splitlines())
    assert pem_blocks(pem(data).encode()) == [("CERTIFICATE", data)]


def test_pem_blocks() -> None:
    text = (b"junk\n-----BEGIN X509 CRL-----\r\nAAEC\r\n-----END X509 CRL-----\r\n"
            b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: x\n\nAwQ=\n"
            b"-----END RSA PRIVATE KEY-----\n")
    assert pem_blocks(text) == [("X509 CRL", b"\x00\x01\x02"), ("RSA PRIVATE KEY", b"\x03\x04")]
    with pytest.raises(ValueError, match="bad base64"):
        pem_blocks(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")


# --- names a certificate is for ----------------------------------------------------------


def test_host_names_from_subject_alt_name() -> None:
    cert = Certificate.from_der(der(make(name(cn("ignored.example")),
                                         san=["Mail.Example.com", "*.example.org", "a.test."])))
    assert cert.dns_names == ("Mail.Example.com", "*.example.org", "a.test.")
    assert cert.host_names == ("mail.example.com", "*.example.org", "a.test")


def test_host_names_fall_back_to_the_common_name() -> None:
    cert = Certificate.from_der(der(make(name(cn("Mail.Example.com")))))
    assert cert.host_names == ("mail.example.com",)
    assert Certificate.from_der(der(make(name()))).host_names == ()


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30", b"\x30\x05\x02\x01", b"\x04\x00", b"\x30\x84\xff\xff\xff\xff",
     b"\x30\x03\x02\x01\x01\x00"],
)
def test_malformed_der(data: bytes) -> None:
    with pytest.raises(ValueError):
        Certificate.from_der(data)


# --- ALPN in a ClientHello ---------------------------------------------------------------


def client_hello(alpn: list[str] | None) -> bytes:
    """A real ClientHello from Python's ssl, without its record header."""
    ctx = ssl.create_default_context()
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(incoming, outgoing, server_hostname="mail.example.com")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    record = outgoing.read()
    assert record[0] == 22  # handshake
    return record[5:5 + int.from_bytes(record[3:5], "big")]


def test_alpn_of_a_client_hello() -> None:
    assert client_hello_alpn(client_hello(["imap", "h2"])) == ("imap", "h2")
    assert client_hello_alpn(client_hello(None)) is None


def test_client_hello_without_extensions() -> None:
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    assert client_hello_alpn(b"\x01" + len(body).to_bytes(3, "big") + body) is None


@pytest.mark.parametrize("data", [b"", b"\x02\x00\x00\x00", b"\x01\x00\x00\x10\x03\x03"])
def test_client_hello_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        client_hello_alpn(data)


def test_client_hello_with_truncated_alpn() -> None:
    hello = client_hello(["imap"])
    with pytest.raises(ValueError):
        client_hello_alpn(hello[:-3])


# --- SNI names and certificate blocks ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Mail.Example.COM", "mail.example.com"), ("mail.example.com.", "mail.example.com"),
     ("a_b-c.d9", "a_b-c.d9"), ("localhost", "localhost"), (None, ""), ("", ""),
     ("a b.example", ""), ("x\r\nAuth-User: root", ""), ("a..b", ""), (".a", ""),
     ("ü.example", ""), ("a" * 254, ""), ("a." * 126 + "b", "a." * 126 + "b")],
)
def test_clean_host_name(name: str | None, expected: str) -> None:
    assert clean_host_name(name) == expected


def test_certificates_among_blocks() -> None:
    data = der(make(name(cn("x"))))
    blocks = [("CERTIFICATE", data), ("X509 CRL", b"\x30\x00"),
              ("TRUSTED CERTIFICATE", data + b"\x30\x00"), ("PRIVATE KEY", b"k")]
    assert certificates(blocks) == [data, data]
