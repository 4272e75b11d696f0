"""DNS message building and parsing (mailgate.dns_message), no sockets."""

from __future__ import annotations

import random
import struct

import pytest

from mailgate.dns_message import (
    RCODE_NXDOMAIN,
    RCODE_SERVFAIL,
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    TYPE_PTR,
    MessageError,
    Query,
    Record,
    decode_name,
    encode_name,
    follow_chain,
    make_queries,
    make_query,
    parse_response,
    reverse_name,
)

QUERY = Query(0x1234, "mail.example", TYPE_A)


def name(text: str) -> bytes:
    """Uncompressed wire name, written here independently of encode_name."""
    out = b""
    for label in text.split(".") if text else ():
        out += bytes([len(label)]) + label.encode("latin-1")
    return out + b"\0"


def header(ident: int = 0x1234, flags: int = 0x8180, qd: int = 1, an: int = 0) -> bytes:
    return struct.pack(">HHHHHH", ident, flags, qd, an, 0, 0)


def question(qname: str = "mail.example", qtype: int = TYPE_A) -> bytes:
    return name(qname) + struct.pack(">HH", qtype, 1)


def rr(owner: bytes, rtype: int, data: bytes, ttl: int = 300, rclass: int = 1) -> bytes:
    return owner + struct.pack(">HHIH", rtype, rclass, ttl, len(data)) + data


def response(*answers: bytes, **head: int) -> bytes:
    return header(an=len(answers), **head) + question() + b"".join(answers)


POINTER_TO_QNAME = b"\xc0\x0c"


# --- queries ----------------------------------------------------------------------


def test_query_wire_format() -> None:
    wire = Query(0xBEEF, "mail.example", TYPE_AAAA).wire()
    assert wire == struct.pack(">HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + name("mail.example") + b"\x00\x1c\x00\x01"


def test_query_ids_are_random_16_bit() -> None:
    ids = {make_query("a.example", TYPE_A).ident for _ in range(200)}
    assert len(ids) > 150
    assert all(0 <= ident < 65536 for ident in ids)


def test_queries_for_one_name_have_distinct_ids() -> None:
    for _ in range(200):
        first, second = make_queries("a.example", (TYPE_A, TYPE_AAAA))
        assert first.ident != second.ident
        assert (first.qtype, second.qtype) == (TYPE_A, TYPE_AAAA)


def test_reverse_names() -> None:
    assert reverse_name("192.0.2.10") == "10.2.0.192.in-addr.arpa"
    assert reverse_name("2001:db8::1") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    )
    with pytest.raises(ValueError):
        reverse_name("not-an-ip")


def test_encode_name() -> None:
    assert encode_name("mail.example.") == name("mail.example")
    assert encode_name("") == b"\0"
    assert encode_name(".") == b"\0"
    assert encode_name("a" * 63 + ".b") == name("a" * 63 + ".b")


@pytest.mark.parametrize("bad", ["a" * 64 + ".example", "a..example", ".a", "é€.example",
                                 ".".join(["abcdefghi"] * 26)])
def test_encode_name_refuses(bad: str) -> None:
    with pytest.raises(MessageError):
        encode_name(bad)
    with pytest.raises(MessageError):
        make_query(bad, TYPE_A)


# --- responses ---------------------------------------------------------------------


def test_parse_a_answer_with_compression() -> None:
    data = response(rr(POINTER_TO_QNAME, TYPE_A, bytes([192, 0, 2, 1]), ttl=60),
                    rr(POINTER_TO_QNAME, TYPE_A, bytes([192, 0, 2, 2]), ttl=30))
    parsed = parse_response(data, QUERY)
    assert parsed.rcode == 0 and not parsed.truncated
    assert parsed.answers() == [("192.0.2.1", 60), ("192.0.2.2", 30)]


def test_parse_aaaa_and_names_compare_without_case() -> None:
    data = header(an=1) + question("MAIL.Example", TYPE_AAAA) + rr(
        POINTER_TO_QNAME, TYPE_AAAA, bytes.fromhex("20010db8000000000000000000000001"))
    parsed = parse_response(data, Query(0x1234, "mail.example", TYPE_AAAA))
    assert parsed.answers() == [("2001:db8::1", 300)]


def test_ptr_name_through_a_pointer_into_an_earlier_record() -> None:
    # The second PTR target "mx1.example" points at "example" inside the first.
    query = Query(7, "1.2.0.192.in-addr.arpa", TYPE_PTR)
    first = rr(POINTER_TO_QNAME, TYPE_PTR, b"\x04host\x07example\x00")
    prefix = header(7, an=2) + question("1.2.0.192.in-addr.arpa", TYPE_PTR) + first
    example_at = len(prefix) - len(b"\x07example\x00")
    second = rr(POINTER_TO_QNAME, TYPE_PTR, b"\x03mx1" + struct.pack(">H", 0xC000 | example_at))
    assert parse_response(prefix + second, query).answers() == [("host.example", 300), ("mx1.example", 300)]


def test_hostile_label_bytes_survive_as_latin1() -> None:
    query = Query(9, "1.0.0.127.in-addr.arpa", TYPE_PTR)
    hostile = b'\x15evil\r\nX-Injected: 1 "' + b"\x07example\x00"
    data = header(9, an=1) + question("1.0.0.127.in-addr.arpa", TYPE_PTR) + rr(POINTER_TO_QNAME, TYPE_PTR, hostile)
    assert parse_response(data, query).answers() == [('evil\r\nX-Injected: 1 ".example', 300)]


def test_root_name_is_empty() -> None:
    query = Query(9, "1.0.0.127.in-addr.arpa", TYPE_PTR)
    data = header(9, an=1) + question("1.0.0.127.in-addr.arpa", TYPE_PTR) + rr(POINTER_TO_QNAME, TYPE_PTR, b"\0")
    assert parse_response(data, query).answers() == [("", 300)]


def test_cname_chain_is_followed_and_caps_ttl() -> None:
    data = response(
        rr(POINTER_TO_QNAME, TYPE_CNAME, name("alias.example"), ttl=20),
        rr(name("other.example"), TYPE_A, bytes([10, 0, 0, 9])),  # unrelated
        rr(name("alias.example"), TYPE_CNAME, name("real.example"), ttl=100),
        rr(name("real.example"), TYPE_A, bytes([192, 0, 2, 7]), ttl=50),
    )
    assert parse_response(data, QUERY).answers() == [("192.0.2.7", 20)]


def test_cname_loop_and_dead_end_give_nothing() -> None:
    loop = response(rr(POINTER_TO_QNAME, TYPE_CNAME, name("b.example")),
                    rr(name("b.example"), TYPE_CNAME, name("mail.example")))
    assert parse_response(loop, QUERY).answers() == []
    dead = response(rr(POINTER_TO_QNAME, TYPE_CNAME, name("b.example")))
    assert parse_response(dead, QUERY).answers() == []


def test_cname_chain_length_is_bounded() -> None:
    records = tuple(Record(f"n{i}.example", TYPE_CNAME, 300, f"n{i + 1}.example") for i in range(100))
    records += (Record("n100.example", TYPE_A, 300, "192.0.2.1"),)
    assert follow_chain(records, "n0.example", TYPE_A) == []
    assert follow_chain(records, "n60.example", TYPE_A) == [("192.0.2.1", 300)]


def test_other_classes_and_types_are_skipped() -> None:
    data = response(
        rr(POINTER_TO_QNAME, 16, b"\x05hello"),  # TXT
        rr(POINTER_TO_QNAME, TYPE_A, bytes([1, 2, 3, 4]), rclass=3),  # CHAOS
        rr(POINTER_TO_QNAME, TYPE_A, bytes([5, 6, 7, 8])),
    )
    parsed = parse_response(data, QUERY)
    assert [r.value for r in parsed.records] == ["5.6.7.8"]


def test_ttl_with_top_bit_set_is_zero() -> None:
    data = response(rr(POINTER_TO_QNAME, TYPE_A, bytes([1, 2, 3, 4]), ttl=0x80000000))
    assert parse_response(data, QUERY).answers() == [("1.2.3.4", 0)]


def test_rcode_and_truncation() -> None:
    assert parse_response(response(flags=0x8183), QUERY).rcode == RCODE_NXDOMAIN
    assert parse_response(response(flags=0x8182), QUERY).rcode == RCODE_SERVFAIL
    # TC: records are ignored, even if cut in the middle.
    cut = response(rr(POINTER_TO_QNAME, TYPE_A, bytes([1, 2, 3, 4])), flags=0x8380)[:-3]
    parsed = parse_response(cut, QUERY)
    assert parsed.truncated and parsed.records == ()


@pytest.mark.parametrize("data, reason", [
    (header(ident=0x4321) + question(), "wrong message id"),
    (header(flags=0x0180) + question(), "not a response"),
    (header(flags=0x8980) + question(), "not a response"),  # opcode 1
    (header(qd=0), "questions"),
    (header(qd=2) + question() + question(), "questions"),
    (header() + question("other.example"), "another question"),
    (header() + question(qtype=TYPE_AAAA), "another question"),
    (header() + name("mail.example") + struct.pack(">HH", TYPE_A, 3), "another class"),
])
def test_responses_to_something_else_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        parse_response(data, QUERY)


def test_every_truncated_packet_is_refused() -> None:
    full = response(rr(POINTER_TO_QNAME, TYPE_CNAME, name("alias.example")),
                    rr(name("alias.example"), TYPE_A, bytes([1, 2, 3, 4])))
    assert parse_response(full, QUERY).answers() == [("1.2.3.4", 300)]
    for size in range(len(full)):
        with pytest.raises(MessageError):
            parse_response(full[:size], QUERY)


def test_trailing_bytes_after_name_in_rdata_are_refused() -> None:
    data = response(rr(POINTER_TO_QNAME, TYPE_CNAME, name("alias.example") + b"x"))
    with pytest.raises(MessageError, match="fill"):
        parse_response(data, QUERY)


@pytest.mark.parametrize("size", [3, 5, 16])
def test_a_record_of_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(MessageError):
        parse_response(response(rr(POINTER_TO_QNAME, TYPE_A, bytes(size))), QUERY)


# --- names and compression pointers ---------------------------------------------


def test_pointer_to_itself_is_refused() -> None:
    data = header(an=1) + question() + b"\xc0" + bytes([12 + len(question())])
    with pytest.raises(MessageError, match="backwards"):
        decode_name(data, 12 + len(question()))


def test_pointer_loop_between_two_names_is_refused() -> None:
    # offset 0: label "a" then pointer to 4; offset 4: label "b" then pointer to 0.
    data = b"\x01a\xc0\x04\x01b\xc0\x00"
    with pytest.raises(MessageError, match="backwards"):
        decode_name(data, 0)
    with pytest.raises(MessageError, match="backwards"):
        decode_name(data, 4)


def test_loop_in_a_response_is_refused() -> None:
    rdata_at = len(header()) + len(question()) + len(POINTER_TO_QNAME) + 10
    looping = b"\x03www" + struct.pack(">H", 0xC000 | rdata_at)  # points at its own start
    data = response(rr(POINTER_TO_QNAME, TYPE_CNAME, looping))
    with pytest.raises(MessageError):
        parse_response(data, QUERY)


def test_pointer_chains_backwards_are_followed() -> None:
    data = b"\x07example\x00" + b"\x04mail\xc0\x00" + b"\x02mx\xc0\x09"
    assert decode_name(data, 0) == ("example", 9)
    assert decode_name(data, 9) == ("mail.example", 16)
    assert decode_name(data, 16) == ("mx.mail.example", 21)


@pytest.mark.parametrize("data", [b"\x41abc\x00", b"\x81abc\x00", b"\x05ab", b"\xc0", b""])
def test_bad_labels_are_refused(data: bytes) -> None:
    with pytest.raises((MessageError, IndexError)):
        decode_name(data, 0)
    with pytest.raises(MessageError):
        parse_response(header() + data, QUERY)


def test_names_longer_than_255_octets_are_refused() -> None:
    long_name = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\0"  # 257 octets
    with pytest.raises(MessageError, match="255"):
        decode_name(long_name, 0)
    ok = b"".join(b"\x3f" + b"a" * 63 for _ in range(3)) + b"\x3d" + b"a" * 61 + b"\0"  # 255
    assert len(decode_name(ok, 0)[0]) == 253


def test_random_garbage_raises_only_message_error() -> None:
    rng = random.Random(1035)
    valid = response(rr(POINTER_TO_QNAME, TYPE_CNAME, name("alias.example")),
                     rr(name("alias.example"), TYPE_A, bytes([1, 2, 3, 4])))
    for _ in range(3000):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            parse_response(bytes(data), QUERY)
        except MessageError:
            pass
    for _ in range(2000):
        noise = bytes(rng.randrange(256) for _ in range(rng.randint(0, 80)))
        try:
            parse_response(header() + noise, QUERY)
        except MessageError:
            pass
