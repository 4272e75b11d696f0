"""Certificate facts from DER, the way nginx reports them, and the ALPN list
of a ClientHello (pure parsing, no ssl import).

nginx fills the Auth-SSL-* headers (SPEC 8.2 item 13) from OpenSSL:

* subject and issuer: ``X509_NAME_print_ex(..., XN_FLAG_RFC2253)``: RDNs
  last first, ``,`` between them and ``+`` inside a multi-valued one, OpenSSL
  short names (``CN``, ``emailAddress``, ``DC``...), an attribute OpenSSL does
  not know as its dotted OID with the value dumped as ``#`` and the DER in hex;
  values escaped per RFC 2253 (``\\,`` ``\\+`` ``\\"`` ``\\\\`` ``\\<``
  ``\\>`` ``\\;``, a leading ``#`` or space, a trailing space) and every
  control or non-ASCII byte as ``\\XX`` (the UTF-8 bytes, upper-case hex);
* serial: ``i2a_ASN1_INTEGER``, upper-case hex, two digits per byte;
* fingerprint: SHA-1 of the DER, lower-case hex;
* the certificate: PEM as ``PEM_write_bio_X509`` writes it.

Python's ``getpeercert()`` gives decoded strings without their ASN.1 types,
so the DER is parsed here: a small reader for the parts of X.509 needed
(names, serial, subjectAltName), which raises ``ValueError`` on anything
malformed. The same parser gives the names a server certificate answers to,
for choosing a certificate by SNI.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

# OpenSSL's short names (OBJ_nid2sn) of the attributes found in names.
SHORT_NAMES: dict[str, str] = {
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "street",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "title",
    "2.5.4.13": "description",
    "2.5.4.14": "searchGuide",
    "2.5.4.15": "businessCategory",
    "2.5.4.16": "postalAddress",
    "2.5.4.17": "postalCode",
    "2.5.4.18": "postOfficeBox",
    "2.5.4.19": "physicalDeliveryOfficeName",
    "2.5.4.20": "telephoneNumber",
    "2.5.4.41": "name",
    "2.5.4.42": "GN",
    "2.5.4.43": "initials",
    "2.5.4.44": "generationQualifier",
    "2.5.4.45": "x500UniqueIdentifier",
    "2.5.4.46": "dnQualifier",
    "2.5.4.65": "pseudonym",
    "2.5.4.72": "role",
    "2.5.4.97": "organizationIdentifier",
    "1.2.840.113549.1.9.1": "emailAddress",
    "1.2.840.113549.1.9.2": "unstructuredName",
    "1.2.840.113549.1.9.8": "unstructuredAddress",
    "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.3": "mail",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
}

OID_COMMON_NAME = "2.5.4.3"
OID_SUBJECT_ALT_NAME = "2.5.29.17"

# ASN.1 universal tags.
BOOLEAN, INTEGER, OCTET_STRING, OID = 0x01, 0x02, 0x04, 0x06
UTF8_STRING, BMP_STRING, UNIVERSAL_STRING = 0x0C, 0x1E, 0x1C
SEQUENCE, SET = 0x30, 0x31
DNS_NAME = 0x82  # GeneralName dNSName [2] IMPLICIT IA5String

# Bytes per character of the string types OpenSSL prints (a_strex.c
# tag2nbyte); 0 is UTF8String, which OpenSSL prints byte by byte; any other
# type is dumped as #hex.
CHAR_WIDTH: dict[int, int] = {
    12: 0, 18: 1, 19: 1, 20: 1, 21: 1, 22: 1, 23: 1, 24: 1, 25: 1, 26: 1, 28: 4, 30: 2,
}

# RFC 2253 escaping as OpenSSL does it (charmap.h with ESC_2253): these get a
# backslash anywhere; "#" only first, space first or last.
BACKSLASHED = frozenset(',+"\\<>;')

CERTIFICATE_LABELS = ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE")
# A host name as mailgate passes it on (letters, digits, "-", "_", ".").
HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
MAX_HOST_NAME = 253

PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


# --- DER reading ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tlv:
    """One DER element: its tag byte, where it starts, and its content."""

    tag: int
    start: int  # offset of the tag in the buffer
    begin: int  # offset of the content
    end: int  # offset just after the content


def read_tlv(data: bytes, pos: int, limit: int | None = None) -> Tlv:
    """The DER element at ``pos`` (single-byte tags only, as in X.509)."""
    limit = len(data) if limit is None else limit
    if pos + 2 > limit:
        raise ValueError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("unsupported DER tag")
    begin = pos + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or begin + count > limit:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[begin:begin + count], "big")
        begin += count
    end = begin + length
    if end > limit:
        raise ValueError("truncated DER")
    return Tlv(tag, pos, begin, end)


def children(data: bytes, parent: Tlv) -> list[Tlv]:
    """The elements inside a constructed element."""
    items, pos = [], parent.begin
    while pos < parent.end:
        item = read_tlv(data, pos, parent.end)
        items.append(item)
        pos = item.end
    return items


def expect(item: Tlv, tag: int) -> Tlv:
    if item.tag != tag:
        raise ValueError(f"DER tag {item.tag:#04x} where {tag:#04x} was expected")
    return item


def oid_text(content: bytes) -> str:
    """Dotted form of an OBJECT IDENTIFIER's content."""
    if not content:
        raise ValueError("empty OID")
    arcs, value = [], 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if content[-1] & 0x80:
        raise ValueError("truncated OID")
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(arc) for arc in head + arcs[1:])


# --- certificates -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameEntry:
    """One attribute of a Name: its OID, the RDN (SET) it belongs to, its
    value's tag and content, and the whole value's DER (for #hex dumps)."""

    oid: str
    rdn: int
    tag: int
    value: bytes
    der: bytes


@dataclass(frozen=True, slots=True)
class Certificate:
    """What mailgate reads from a certificate."""

    der: bytes
    serial: bytes  # INTEGER content, two's complement as encoded
    issuer: tuple[NameEntry, ...]
    subject: tuple[NameEntry, ...]
    dns_names: tuple[str, ...]  # subjectAltName dNSName entries, as written

    @classmethod
    def from_der(cls, der: bytes) -> Certificate:
        """ValueError if ``der`` is not a certificate this reader follows."""
        try:
            return cls._parse(der)
        except IndexError:
            raise ValueError("truncated certificate") from None

    @classmethod
    def _parse(cls, der: bytes) -> Certificate:
        cert = expect(read_tlv(der, 0), SEQUENCE)
        if cert.end != len(der):
            raise ValueError("trailing data after the certificate")
        tbs = expect(children(der, cert)[0], SEQUENCE)
        fields = children(der, tbs)
        if fields and fields[0].tag == 0xA0:  # version [0] EXPLICIT
            fields = fields[1:]
        if len(fields) < 6:
            raise ValueError("short TBSCertificate")
        serial = expect(fields[0], INTEGER)
        issuer = _name(der, expect(fields[2], SEQUENCE))
        subject = _name(der, expect(fields[4], SEQUENCE))
        dns_names: tuple[str, ...] = ()
        for item in fields[6:]:
            if item.tag == 0xA3:  # extensions [3] EXPLICIT
                dns_names = _dns_names(der, expect(children(der, item)[0], SEQUENCE))
        return cls(der, der[serial.begin:serial.end], issuer, subject, dns_names)

    @property
    def common_names(self) -> tuple[str, ...]:
        return tuple(e.value.decode("latin-1") for e in self.subject if e.oid == OID_COMMON_NAME)

    @property
    def host_names(self) -> tuple[str, ...]:
        """The names the certificate is for, lower-cased: the subjectAltName
        DNS entries, or the subject's common names if it has none."""
        names = self.dns_names or self.common_names
        return tuple(dict.fromkeys(name.lower().rstrip(".") for name in names if name))


def _name(der: bytes, name: Tlv) -> tuple[NameEntry, ...]:
    entries = []
    for index, rdn in enumerate(children(der, name)):
        for attribute in children(der, expect(rdn, SET)):
            parts = children(der, expect(attribute, SEQUENCE))
            if len(parts) != 2:
                raise ValueError("bad AttributeTypeAndValue")
            oid, value = expect(parts[0], OID), parts[1]
            entries.append(NameEntry(oid_text(der[oid.begin:oid.end]), index, value.tag,
                                     der[value.begin:value.end], der[value.start:value.end]))
    return tuple(entries)


def _dns_names(der: bytes, extensions: Tlv) -> tuple[str, ...]:
    for extension in children(der, extensions):
        parts = children(der, expect(extension, SEQUENCE))
        oid = expect(parts[0], OID)
        if oid_text(der[oid.begin:oid.end]) != OID_SUBJECT_ALT_NAME:
            continue
        value = expect(parts[-1], OCTET_STRING)
        names = expect(read_tlv(der, value.begin, value.end), SEQUENCE)
        return tuple(der[n.begin:n.end].decode("latin-1")
                     for n in children(der, names) if n.tag == DNS_NAME)
    return ()


# --- nginx's formats --------------------------------------------------------------


def rfc2253(entries: tuple[NameEntry, ...]) -> str:
    """X509_NAME_print_ex(XN_FLAG_RFC2253)."""
    out: list[str] = []
    previous = None
    for entry in reversed(entries):
        if previous is not None:
            out.append("+" if entry.rdn == previous else ",")
        previous = entry.rdn
        short = SHORT_NAMES.get(entry.oid)
        out.append(f"{short or entry.oid}=")
        out.append(_value(entry) if short else _dump(entry.der))
    return "".join(out)


def _value(entry: NameEntry) -> str:
    width = CHAR_WIDTH.get(entry.tag)
    if width is None:
        return _dump(entry.der)
    data = entry.value
    if width == 0:  # UTF8String: printed byte by byte, already UTF-8
        units = list(data)
    else:
        if len(data) % width:
            return _dump(entry.der)
        codes = [int.from_bytes(data[i:i + width], "big") for i in range(0, len(data), width)]
        try:
            units = list("".join(map(chr, codes)).encode("utf-8"))
        except (ValueError, UnicodeEncodeError):
            return _dump(entry.der)
    return _escape(units)


def _escape(units: list[int]) -> str:
    """OpenSSL's do_esc_char over the bytes of one value (ESC_2253,
    ESC_CTRL, ESC_MSB). Like OpenSSL, a one-byte value counts as last, not
    first: a lone "#" is not escaped."""
    out = []
    last = len(units) - 1
    for index, byte in enumerate(units):
        char = chr(byte)
        first_or_last = ("last" if index == last else "first" if index == 0 else "")
        if byte > 0x7F or byte < 0x20 or byte == 0x7F:
            out.append(f"\\{byte:02X}")
        elif char in BACKSLASHED:
            out.append("\\" + char)
        elif char == " " and first_or_last or char == "#" and first_or_last == "first":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _dump(der: bytes) -> str:
    return "#" + der.hex().upper()


def certificate_facts(der: bytes, pass_cert: bool) -> dict[str, str]:
    """The Auth-SSL-* values of a client certificate (AuthTls fields):
    fingerprint, subject, issuer, serial, and the PEM if ``pass_cert``."""
    values = {"fingerprint": fingerprint(der)}
    if pass_cert:
        values["cert"] = pem(der)
    try:
        cert = Certificate.from_der(der)
    except ValueError:
        return values  # OpenSSL accepted what this reader cannot: send the rest
    values.update(subject=rfc2253(cert.subject), issuer=rfc2253(cert.issuer),
                  serial=serial_hex(cert.serial))
    return values


def serial_hex(serial: bytes) -> str:
    """i2a_ASN1_INTEGER: the magnitude's bytes in upper-case hex, ``-`` for
    a negative number, ``00`` for zero."""
    value = int.from_bytes(serial, "big", signed=True)
    sign, magnitude = ("-", -value) if value < 0 else ("", value)
    if magnitude == 0:
        return sign + "00"
    return sign + magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big").hex().upper()


def fingerprint(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest()


def pem(der: bytes) -> str:
    """PEM_write_bio_X509: 64-column base64 between the markers, ending with
    a newline."""
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


# --- the ClientHello ------------------------------------------------------------------

EXTENSION_ALPN = 16


def client_hello_alpn(message: bytes) -> tuple[str, ...] | None:
    """The protocol names of a ClientHello's ALPN extension (RFC 7301), None
    without one. ``message`` is the handshake message with its 4-byte header.
    ValueError if it does not parse."""
    reader = _Reader(message)
    if reader.take(1) != b"\x01":
        raise ValueError("not a ClientHello")
    reader = _Reader(reader.vector(3))
    reader.take(2 + 32)  # legacy_version, random
    reader.vector(1)  # legacy_session_id
    reader.vector(2)  # cipher_suites
    reader.vector(1)  # legacy_compression_methods
    if reader.done():
        return None
    extensions = _Reader(reader.vector(2))
    while not extensions.done():
        kind = int.from_bytes(extensions.take(2), "big")
        body = extensions.vector(2)
        if kind == EXTENSION_ALPN:
            names = _Reader(_Reader(body).vector(2))
            protocols = []
            while not names.done():
                protocols.append(names.vector(1).decode("latin-1"))
            return tuple(protocols)
    return None


class _Reader:
    """Length-prefixed fields of TLS messages (RFC 8446 section 3.4)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise ValueError("truncated TLS message")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def vector(self, size: int) -> bytes:
        return self.take(int.from_bytes(self.take(size), "big"))

    def done(self) -> bool:
        return self.pos >= len(self.data)


def certificates(blocks: list[tuple[str, bytes]]) -> list[bytes]:
    """The DER certificates among PEM blocks. A TRUSTED CERTIFICATE is the
    certificate followed by OpenSSL's trust settings: the certificate is kept."""
    return [der[:read_tlv(der, 0).end] if label == "TRUSTED CERTIFICATE" else der
            for label, der in blocks if label in CERTIFICATE_LABELS]


def clean_host_name(name: str | None) -> str:
    """An SNI name as mailgate uses it: lower-cased, without a final dot,
    "" unless it is a plain host name (it goes into an auth header)."""
    if not name:
        return ""
    name = name.lower()
    if len(name) > MAX_HOST_NAME or not HOST_NAME.fullmatch(name):
        return ""
    return name.rstrip(".")


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """(label, DER) of each PEM block in ``data``; ValueError on bad base64."""
    blocks = []
    for match in PEM_BLOCK.finditer(data):
        body = b"".join(line for line in match.group(2).splitlines()
                        if line.strip() and b":" not in line)
        try:
            blocks.append((match.group(1).decode("ascii"), base64.b64decode(body, validate=True)))
        except ValueError:
            raise ValueError(f'bad base64 in the "{match.group(1).decode()}" block') from None
    return blocks
