"""SASL decoding shared by POP3, IMAP and SMTP (SPEC 3.4, 4.4)."""

from __future__ import annotations

import base64
import re

import pytest

from mailgate.protocol import sasl
from mailgate.protocol.base import Credentials, wire
from mailgate.protocol.sasl import Challenge, SaslExchange, SaslFailure


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


# --- base64, nginx's rules ----------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        (b"", b""),
        (b"QUJD", b"ABC"),
        (b"QQ==", b"A"),
        (b"QUI=", b"AB"),
        # padding is not required
        (b"QQ", b"A"),
        (b"QUI", b"AB"),
        # scanning stops at the first "=", whatever follows
        (b"QUJD=", b"ABC"),
        (b"QQ=!!not base64", b"A"),
        (b"QUJD=QUJD", b"ABC"),
        (b"=", b""),
        (b"=QUJD", b""),
        # leftover bits are dropped
        (b"QR", b"A"),
        (b"QR==", b"A"),
        (b"QUJ", b"AB"),
        (b"+/+/", b"\xfb\xff\xbf"),
    ],
)
def test_decode_base64_accepts(encoded: bytes, decoded: bytes) -> None:
    assert sasl.decode_base64(encoded) == decoded


@pytest.mark.parametrize(
    "encoded",
    [
        b"*",  # a SASL cancel is not special (SPEC 4.4)
        b"QUJD*",
        b"QU JD",
        b"QUJD\r",
        b"QUJD-_",  # the URL-safe alphabet is not accepted
        b"Q",  # 1 mod 4
        b"QUJDR",
        b"QUJDR=",
        b"Q=",
    ],
)
def test_decode_base64_refuses(encoded: bytes) -> None:
    assert sasl.decode_base64(encoded) is None


# --- PLAIN (RFC 4616) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("decoded", "login", "password"),
    [
        (b"\0john\0secret", "john", "secret"),
        (b"admin\0john\0secret", "john", "secret"),  # the authzid is skipped
        (b"\0john\0", "john", ""),  # empty password
        (b"\0john\0se\0cr\0et", "john", "se\0cr\0et"),  # NULs after the second
        (b"\0\0secret", "", "secret"),  # empty login
        (b"\0j\xc3\xb6rg\0p w", "j\xf6rg", "p w"),
    ],
)
def test_plain(decoded: bytes, login: str, password: str) -> None:
    assert sasl.decode_plain(b64(decoded)) == (login, password)


def test_plain_keeps_any_byte() -> None:
    login, password = sasl.decode_plain(b64(b"\0\xff\x01\0\xfe"))
    assert (wire(login), wire(password)) == (b"\xff\x01", b"\xfe")


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (b"*", "client sent invalid base64 encoding in AUTH PLAIN command"),
        (b"Q", "client sent invalid base64 encoding in AUTH PLAIN command"),
        (b64(b"johnsecret"), "client sent invalid login in AUTH PLAIN command"),
        (b"", "client sent invalid login in AUTH PLAIN command"),
        # the only NUL is the last byte
        (b64(b"john\0"), "client sent invalid login in AUTH PLAIN command"),
        (b64(b"\0"), "client sent invalid login in AUTH PLAIN command"),
        (b64(b"\0johnsecret"), "client sent invalid password in AUTH PLAIN command"),
        (b64(b"admin\0john"), "client sent invalid password in AUTH PLAIN command"),
        # CR or LF would start a second backend command line (nginx PR 1620)
        (b64(b"\0john\r\nDELE 1\0x"), "client sent invalid login in AUTH PLAIN command"),
        (b64(b"\0jo\rhn\0x"), "client sent invalid login in AUTH PLAIN command"),
        (b64(b"\0john\0x\r\nDELE 1"), "client sent invalid password in AUTH PLAIN command"),
        (b64(b"\0john\0x\n"), "client sent invalid password in AUTH PLAIN command"),
    ],
)
def test_plain_failures(token: bytes, message: str) -> None:
    with pytest.raises(SaslFailure) as failure:
        sasl.decode_plain(token)
    assert failure.value.message == message


# --- LOGIN ------------------------------------------------------------------------


def test_login_username_and_password() -> None:
    assert sasl.decode_login_username(b64(b"john doe")) == "john doe"
    assert sasl.decode_login_password(b64(b"s3cret pw")) == "s3cret pw"
    # empty answers are accepted, as nginx does
    assert sasl.decode_login_username(b"") == ""
    assert sasl.decode_login_password(b"") == ""
    assert sasl.decode_login_password(b"=") == ""


@pytest.mark.parametrize(
    ("decoder", "token", "message"),
    [
        (sasl.decode_login_username, b"*", "invalid base64 encoding"),
        (sasl.decode_login_password, b"abcde", "invalid base64 encoding"),
        (sasl.decode_login_username, b64(b"john\r\nDELE 1"), "invalid login"),
        (sasl.decode_login_username, b64(b"john\n"), "invalid login"),
        (sasl.decode_login_password, b64(b"pw\r\nDELE 1"), "invalid password"),
        (sasl.decode_login_password, b64(b"\rpw"), "invalid password"),
    ],
)
def test_login_failures(decoder: object, token: bytes, message: str) -> None:
    with pytest.raises(SaslFailure) as failure:
        decoder(token)  # type: ignore[operator]
    assert failure.value.message == f"client sent {message} in AUTH LOGIN command"


# --- CRAM-MD5 (RFC 2195) ---------------------------------------------------------------

DIGEST = b"b913a602c7eda7a495b4e6e7334d3890"


def test_cram_md5() -> None:
    assert sasl.decode_cram_md5(b64(b"tim " + DIGEST)) == ("tim", DIGEST.decode())
    # only the length is checked, not that the digest is hex
    assert sasl.decode_cram_md5(b64(b"tim " + b"z" * 32)) == ("tim", "z" * 32)
    # the login ends at the first space; the digest may hold spaces
    assert sasl.decode_cram_md5(b64(b"t " + b" " * 32)) == ("t", " " * 32)
    assert sasl.decode_cram_md5(b64(b" " + DIGEST)) == ("", DIGEST.decode())


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (b"*", "client sent invalid base64 encoding in AUTH CRAM-MD5 command"),
        (b64(b"tim"), "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command"),
        (b64(b"tim " + DIGEST[:-1]), "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command"),
        (
            b64(b"tim " + DIGEST + b"0"),
            "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command",
        ),
        (b"", "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command"),
        (
            b64(b"tim " + DIGEST[:-2] + b"\r\n"),
            "client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command",
        ),
        (b64(b"t\r\nm " + DIGEST), "client sent invalid login in AUTH CRAM-MD5 command"),
    ],
)
def test_cram_md5_failures(token: bytes, message: str) -> None:
    with pytest.raises(SaslFailure) as failure:
        sasl.decode_cram_md5(token)
    assert failure.value.message == message


# --- EXTERNAL ---------------------------------------------------------------------


def test_external() -> None:
    assert sasl.decode_external(b64(b"john")) == "john"
    assert sasl.decode_external(b"") == ""
    for token, message in [
        (b"*", "client sent invalid base64 encoding in AUTH EXTERNAL command"),
        (b64(b"john\r\nDELE 1"), "client sent invalid login in AUTH EXTERNAL command"),
    ]:
        with pytest.raises(SaslFailure) as failure:
            sasl.decode_external(token)
        assert failure.value.message == message


# --- salt -------------------------------------------------------------------------


def test_salt_format() -> None:
    salt = sasl.make_salt("mail.example.com", lambda: 1181532555, lambda: 1795570090.9)
    assert salt == "<1181532555.1795570090@mail.example.com>\r\n"


def test_salt_defaults() -> None:
    salt = sasl.make_salt("mx")
    match = re.fullmatch(r"<(\d+)\.(\d+)@mx>\r\n", salt)
    assert match is not None
    assert 0 <= int(match.group(1)) < 2**31


def test_cram_md5_challenge_is_the_salt_without_crlf() -> None:
    salt = "<1896.697170952@postoffice.reston.mci.net>\r\n"
    # RFC 2195 section 2 example
    assert (
        sasl.cram_md5_challenge(salt) == b"PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
    )


# --- choosing the mechanism ----------------------------------------------------------

ALL = ("plain", "cram-md5", "external")


@pytest.mark.parametrize(
    ("args", "enabled", "expected"),
    [
        ([b"PLAIN"], (), ("plain", None)),
        ([b"plain", b"AGEAYg=="], (), ("plain", b"AGEAYg==")),
        ([b"LOGIN"], (), ("login", None)),
        ([b"Login", b"am9obg=="], (), ("login", b"am9obg==")),
        ([b"CRAM-MD5"], ALL, ("cram-md5", None)),
        ([b"cram-md5"], ALL, ("cram-md5", None)),
        ([b"EXTERNAL"], ALL, ("external", None)),
        ([b"EXTERNAL", b"am9obg=="], ALL, ("external", b"am9obg==")),
        # refused
        ([], ALL, None),
        ([b"DIGEST-MD5"], ALL, None),
        ([b"XOAUTH2", b"x"], ALL, None),
        ([b"PLAIN", b"a", b"b"], ALL, None),
        ([b"LOGIN", b"a", b"b"], ALL, None),
        ([b"CRAM-MD5", b"x"], ALL, None),
        ([b"CRAM-MD5"], ("plain",), None),
        ([b"EXTERNAL"], ("plain",), None),
        ([b"EXTERNAL", b"am9obg=="], ("plain", "cram-md5"), None),
    ],
)
def test_select_mechanism(
    args: list[bytes], enabled: tuple[str, ...], expected: tuple[str, bytes | None] | None
) -> None:
    assert sasl.select_mechanism(args, enabled) == expected


# --- exchanges ------------------------------------------------------------------

SALT = "<1.2@mx>\r\n"


def test_plain_exchange() -> None:
    exchange = SaslExchange("plain")
    assert exchange.start() == Challenge(b"")
    assert exchange.respond(b64(b"\0john\0pw")) == Credentials("plain", "john", "pw")
    assert SaslExchange("plain").start(b64(b"\0john\0pw")) == Credentials("plain", "john", "pw")


def test_login_exchange() -> None:
    exchange = SaslExchange("login")
    assert exchange.start() == Challenge(b"VXNlcm5hbWU6")
    assert exchange.respond(b64(b"john")) == Challenge(b"UGFzc3dvcmQ6")
    assert exchange.login == "john"
    assert exchange.respond(b64(b"pw")) == Credentials("plain", "john", "pw")

    initial = SaslExchange("login")
    assert initial.start(b64(b"john")) == Challenge(b"UGFzc3dvcmQ6")
    assert initial.respond(b64(b"pw")) == Credentials("plain", "john", "pw")


def test_login_exchange_keeps_the_login_after_a_bad_password() -> None:
    exchange = SaslExchange("login")
    exchange.start(b64(b"john"))
    with pytest.raises(SaslFailure):
        exchange.respond(b"*")
    assert exchange.login == "john"


def test_cram_md5_exchange() -> None:
    exchange = SaslExchange("cram-md5", SALT)
    assert exchange.start() == Challenge(base64.b64encode(b"<1.2@mx>"))
    assert exchange.respond(b64(b"tim " + DIGEST)) == Credentials(
        "cram-md5", "tim", DIGEST.decode(), salt=SALT
    )


def test_cram_md5_exchange_keeps_a_partial_login() -> None:
    # nginx leaves the text before the space as the login (SPEC 4.4)
    exchange = SaslExchange("cram-md5", SALT)
    exchange.start()
    with pytest.raises(SaslFailure):
        exchange.respond(b64(b"tim short"))
    assert exchange.login == "tim"
    exchange = SaslExchange("cram-md5", SALT)
    with pytest.raises(SaslFailure):
        exchange.respond(b64(b"nospace"))
    assert exchange.login == "nospace"
    exchange = SaslExchange("cram-md5", SALT)
    with pytest.raises(SaslFailure):
        exchange.respond(b64(b"t\r\nx short"))
    assert exchange.login is None


def test_external_exchange() -> None:
    exchange = SaslExchange("external")
    assert exchange.start() == Challenge(b"VXNlcm5hbWU6")
    assert exchange.respond(b64(b"john")) == Credentials("external", "john")
    assert SaslExchange("external").start(b64(b"john")) == Credentials("external", "john")


def test_exchange_misuse() -> None:
    with pytest.raises(ValueError):
        SaslExchange("digest-md5")
    with pytest.raises(ValueError):
        SaslExchange("cram-md5")
    with pytest.raises(ValueError):
        SaslExchange("cram-md5", SALT).start(b"x")


def test_failures_never_carry_the_password() -> None:
    for token in [b64(b"\0john\0s3cret\n"), b64(b"\0johns3cret")]:
        with pytest.raises(SaslFailure) as failure:
            sasl.decode_plain(token)
        assert "s3cret" not in str(failure.value)
