"""DNS messages (RFC 1035): build a query, parse a response. Pure, stdlib only.

Names are held as ``str`` whose characters are the label bytes decoded as
latin-1, labels joined with ``.`` and no trailing dot (the root is ``""``), as
nginx's resolver copies them. A hostile label such as ``evil\\r\\nX: 1``
therefore survives unchanged for the caller to reject; nothing here
interprets it. Names compare case-insensitively in ASCII only (RFC 1035 2.3.3).

``parse_response`` raises nothing but ``MessageError``, whatever the bytes.
"""

from __future__ import annotations

import ipaddress
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

# RFC 1035 3.2.2 and RFC 3596 2.1: the record types used here.
TYPE_A: Final = 1
TYPE_CNAME: Final = 5
TYPE_PTR: Final = 12
TYPE_AAAA: Final = 28
# RFC 1035 3.2.4: the Internet class.
CLASS_IN: Final = 1

# RFC 1035 4.1.1: RCODE values.
RCODE_NOERROR: Final = 0
RCODE_FORMERR: Final = 1
RCODE_SERVFAIL: Final = 2
RCODE_NXDOMAIN: Final = 3
RCODE_NOTIMP: Final = 4
RCODE_REFUSED: Final = 5

# RFC 1035 4.1.1: header flag bits within the second 16-bit word.
_FLAG_QR: Final = 0x8000
_FLAG_TC: Final = 0x0200
_FLAG_RD: Final = 0x0100
_OPCODE_MASK: Final = 0x7800
_RCODE_MASK: Final = 0x000F
_HEADER: Final = struct.Struct(">HHHHHH")
# RFC 1035 4.1.2 / 4.1.3: QTYPE QCLASS, and TYPE CLASS TTL RDLENGTH.
_QUESTION_TAIL: Final = struct.Struct(">HH")
_RR_TAIL: Final = struct.Struct(">HHIH")

# RFC 1035 2.3.4: labels of 63 octets or less, names of 255 octets or less.
MAX_LABEL: Final = 63
MAX_NAME: Final = 255
# RFC 1035 4.1.4: a pointer is two octets starting with the bits 11.
_POINTER_BITS: Final = 0xC0
# Pointers followed within one name; each must point backwards, so this only
# bounds the work (a 255-octet name has at most 127 labels).
_MAX_POINTERS: Final = 128
# CNAME records followed within one answer (nginx: NGX_RESOLVER_MAX_RECURSION).
MAX_CNAME_CHAIN: Final = 50
# RFC 2181 8: a TTL with the top bit set is treated as zero.
_TTL_LIMIT: Final = 0x7FFFFFFF

_RANDOM: Final = secrets.SystemRandom()
_ASCII_LOWER: Final = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}


class MessageError(ValueError):
    """A packet is malformed, or is not the answer to the query at hand."""


def fold(name: str) -> str:
    """``name`` for comparison: ASCII letters lower-cased (RFC 1035 2.3.3),
    other bytes left alone, no trailing dot."""
    return name.removesuffix(".").translate(_ASCII_LOWER)


def reverse_name(ip: str) -> str:
    """The PTR name of an address: ``4.3.2.1.in-addr.arpa`` (RFC 1035 3.5) or
    the nibbles under ``ip6.arpa`` (RFC 3596 2.5). ValueError if not an IP."""
    return ipaddress.ip_address(ip).reverse_pointer


# --- building a query (RFC 1035 4.1) ------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """One question, with the message id that must come back."""

    ident: int
    name: str
    qtype: int

    def wire(self) -> bytes:
        # RFC 1035 4.1.1: standard query, recursion desired, one question.
        header = _HEADER.pack(self.ident, _FLAG_RD, 1, 0, 0, 0)
        return header + encode_name(self.name) + _QUESTION_TAIL.pack(self.qtype, CLASS_IN)


def make_query(name: str, qtype: int, ident: int | None = None) -> Query:
    """A query with a random 16-bit id (RFC 5452 9.2) unless one is given.
    Raises MessageError if ``name`` cannot be encoded."""
    encode_name(name)
    return Query(secrets.randbits(16) if ident is None else ident, name, qtype)


def make_queries(name: str, qtypes: Sequence[int]) -> list[Query]:
    """Queries for several types of one name, sent together, with distinct
    random ids so that each answer finds its question."""
    encode_name(name)
    idents = _RANDOM.sample(range(1 << 16), len(qtypes))
    return [Query(ident, name, qtype) for ident, qtype in zip(idents, qtypes)]


def encode_name(name: str) -> bytes:
    """RFC 1035 3.1: length-prefixed labels ending with the root's zero octet."""
    name = name.removesuffix(".")
    out = bytearray()
    for label in name.split(".") if name else ():
        try:
            raw = label.encode("latin-1")
        except UnicodeEncodeError:
            raise MessageError(f"not a DNS label: {label!r}") from None
        if not 0 < len(raw) <= MAX_LABEL:
            raise MessageError(f"bad label length {len(raw)}")
        out += bytes((len(raw),)) + raw
    out.append(0)
    if len(out) > MAX_NAME:
        raise MessageError("name longer than 255 octets")
    return bytes(out)


# --- parsing a response -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record of a type this module understands.

    ``value``: dotted text for A, compressed text for AAAA, a name for PTR and
    CNAME. ``ttl`` in seconds."""

    name: str
    rtype: int
    ttl: int
    value: str


@dataclass(frozen=True, slots=True)
class Response:
    ident: int
    rcode: int
    truncated: bool
    qname: str
    qtype: int
    records: tuple[Record, ...]  # the answer section's IN records of known types

    def answers(self) -> list[tuple[str, int]]:
        """``(value, ttl)`` of the question's type, following CNAMEs."""
        return follow_chain(self.records, self.qname, self.qtype)


def parse_response(data: bytes, query: Query) -> Response:
    """The response to ``query`` in ``data``; MessageError if ``data`` is
    malformed or answers something else (id, question: RFC 5452 9.1)."""
    try:
        return _parse(data, query)
    except MessageError:
        raise
    except (IndexError, struct.error, ValueError) as err:
        raise MessageError(f"malformed DNS message: {err}") from None


def _parse(data: bytes, query: Query) -> Response:
    if len(data) < _HEADER.size:
        raise MessageError("short DNS message")
    ident, flags, qdcount, ancount, _, _ = _HEADER.unpack_from(data)
    _check_header(ident, flags, qdcount, query)
    qname, qtype, offset = _parse_question(data, _HEADER.size)
    if fold(qname) != fold(query.name) or qtype != query.qtype:
        raise MessageError("response to another question")
    rcode = flags & _RCODE_MASK
    if flags & _FLAG_TC:
        # RFC 1035 4.1.1 TC: what fit is partial; the answer is asked again over TCP.
        return Response(ident, rcode, True, qname, qtype, ())
    records: list[Record] = []
    for _ in range(ancount):
        record, offset = _parse_record(data, offset)
        if record is not None:
            records.append(record)
    return Response(ident, rcode, False, qname, qtype, tuple(records))


def _check_header(ident: int, flags: int, qdcount: int, query: Query) -> None:
    if ident != query.ident:
        raise MessageError("wrong message id")
    if not flags & _FLAG_QR or flags & _OPCODE_MASK:
        raise MessageError("not a response to a standard query")
    if qdcount != 1:
        raise MessageError(f"{qdcount} questions in response")


def _parse_question(data: bytes, offset: int) -> tuple[str, int, int]:
    """RFC 1035 4.1.2: QNAME QTYPE QCLASS."""
    name, offset = decode_name(data, offset)
    qtype, qclass = _QUESTION_TAIL.unpack_from(data, offset)
    if qclass != CLASS_IN:
        raise MessageError("question of another class")
    return name, qtype, offset + _QUESTION_TAIL.size


def _parse_record(data: bytes, offset: int) -> tuple[Record | None, int]:
    """RFC 1035 4.1.3: NAME TYPE CLASS TTL RDLENGTH RDATA; None for records
    of other classes or types, which are skipped."""
    name, offset = decode_name(data, offset)
    rtype, rclass, ttl, rdlength = _RR_TAIL.unpack_from(data, offset)
    start = offset + _RR_TAIL.size
    end = start + rdlength
    if end > len(data):
        raise MessageError("record data beyond the message")
    if rclass != CLASS_IN:
        return None, end
    value = _parse_rdata(data, start, end, rtype)
    if value is None:
        return None, end
    return Record(name, rtype, ttl if ttl <= _TTL_LIMIT else 0, value), end


def _parse_rdata(data: bytes, start: int, end: int, rtype: int) -> str | None:
    if rtype == TYPE_A:  # RFC 1035 3.4.1
        return _address(data[start:end], 4)
    if rtype == TYPE_AAAA:  # RFC 3596 2.2
        return _address(data[start:end], 16)
    if rtype in (TYPE_CNAME, TYPE_PTR):  # RFC 1035 3.3.1, 3.3.12
        name, after = decode_name(data, start)
        if after != end:
            raise MessageError("name does not fill its record")
        return name
    return None


def _address(raw: bytes, size: int) -> str:
    if len(raw) != size:
        raise MessageError(f"address of {len(raw)} octets")
    return str(ipaddress.ip_address(raw))


def decode_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` and the offset just after it in place.

    RFC 1035 4.1.4: a name is labels ending in a zero octet or a pointer to
    an earlier name. Pointers must point strictly before the name part that
    holds them, which rules out loops; labels types 01 and 10 are refused."""
    labels: list[bytes] = []
    size = 1  # the root's zero octet
    after: int | None = None
    floor = offset  # a pointer must go below this
    for _ in range(_MAX_POINTERS + MAX_NAME):
        length = data[offset]
        if length == 0:
            return b".".join(labels).decode("latin-1"), offset + 1 if after is None else after
        if length & _POINTER_BITS == _POINTER_BITS:
            target = ((length & ~_POINTER_BITS) << 8) | data[offset + 1]
            if target >= floor:
                raise MessageError("compression pointer does not point backwards")
            after = offset + 2 if after is None else after
            offset = floor = target
            continue
        if length & _POINTER_BITS:
            raise MessageError("unknown label type")
        label = data[offset + 1 : offset + 1 + length]
        if len(label) != length:
            raise MessageError("label beyond the message")
        size += 1 + length
        if size > MAX_NAME:
            raise MessageError("name longer than 255 octets")
        labels.append(label)
        offset += 1 + length
    raise MessageError("name too long")


def follow_chain(records: tuple[Record, ...], qname: str, qtype: int) -> list[tuple[str, int]]:
    """Records of ``qtype`` owned by ``qname``, or by the end of the CNAME
    chain starting there (RFC 1034 3.6.2). Each TTL is capped by the CNAMEs'
    TTLs. A chain that loops or runs too long gives nothing, as nginx
    treats it as "Host not found". Unrelated records are ignored."""
    name, cap = fold(qname), _TTL_LIMIT
    for _ in range(MAX_CNAME_CHAIN + 1):
        found = [(r.value, min(r.ttl, cap)) for r in records if r.rtype == qtype and fold(r.name) == name]
        if found:
            return found
        alias = next((r for r in records if r.rtype == TYPE_CNAME and fold(r.name) == name), None)
        if alias is None:
            return []
        name, cap = fold(alias.value), min(cap, alias.ttl)
    return []
