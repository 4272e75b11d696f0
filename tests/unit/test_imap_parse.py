"""The IMAP tokenizer (SPEC 4.2, 6.1; RFC 9051, RFC 7888, RFC 2971).

``CommandReader`` is played through the chunking matrix like a session: every
input is fed whole, line by line, byte by byte and in random chunks, and must
give the same results.
"""

from __future__ import annotations

from typing import Any

import pytest

from mailgate.protocol.imap_parse import (
    LITERAL_CONTINUATION,
    Command,
    CommandReader,
    ParseError,
    Reading,
    TooLong,
    tag_of,
)
from tests.unit.chunking import run

LIMIT = 4096


class Reader:
    """Plays a CommandReader as the chunking matrix plays a session: every
    result is an "event"; reading stops for good at a TooLong."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.reader = CommandReader(limit)
        self.stopped = False

    def start(self) -> list[Reading]:
        return []

    def receive_data(self, data: bytes) -> list[Reading]:
        if self.stopped:
            return []
        self.reader.feed(data)
        results: list[Reading] = []
        while (result := self.reader.read_command()) is not None:
            results.append(result)
            if isinstance(result, TooLong):
                self.stopped = True
                self.reader.clear()
                break
        return results


def read(data: bytes, limit: int = LIMIT) -> list[Any]:
    return run(lambda: Reader(limit), [data], inspect=lambda r: len(r.reader)).events


def parse(line: bytes) -> Command:
    """The one command in ``line`` (continuations for literals left out)."""
    results = [result for result in read(line) if result != LITERAL_CONTINUATION]
    assert len(results) == 1, results
    [command] = results
    assert isinstance(command, Command), command
    return command


def args(line: bytes) -> tuple[bytes, ...]:
    return parse(line).args


def invalid(tag: bytes | None = None, close: bool = False) -> list[ParseError]:
    return [ParseError(tag, close)]


# --- tags (SPEC 6.1) -------------------------------------------------------------


@pytest.mark.parametrize(
    "tag",
    [
        b"a",
        b"1",
        b"A001",
        b"a.1",
        b"tag_1",
        b"x-y-z",
        b"...",
        b"-",
        b"_",
        b"Z" * 32,
        b"a" * 31 + b".",
    ],
)
def test_valid_tags(tag: bytes) -> None:
    assert parse(tag + b" NOOP\r\n") == Command(tag, b"NOOP")


@pytest.mark.parametrize(
    "line",
    [
        b"a" * 33 + b" NOOP\r\n",
        b"a*1 NOOP\r\n",
        b"a+1 NOOP\r\n",
        b"a{1 NOOP\r\n",
        b'"a" NOOP\r\n',
        b"a\\1 NOOP\r\n",
        b"a(1 NOOP\r\n",
        b"a\xe91 NOOP\r\n",
        b"a\t1 NOOP\r\n",
        b" NOOP\r\n",
        b"  a1 NOOP\r\n",
        b"a1\r\n",
        b"a1\n",
        b"\r\n",
        b"\n",
        b"a1\rNOOP\r\n",
    ],
)
def test_invalid_tags(line: bytes) -> None:
    assert read(line + b"b1 NOOP\r\n") == [*invalid(None), Command(b"b1", b"NOOP")]


def test_tag_of() -> None:
    assert tag_of(b"a1 LOGIN x") == b"a1"
    assert tag_of(b"a1") is None
    assert tag_of(b"a*1 x") is None


# --- verbs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "verb"),
    [
        (b"a1 capability\r\n", b"CAPABILITY"),
        (b"a1 Noop\r\n", b"NOOP"),
        (b"a1 LOGOUT\r\n", b"LOGOUT"),
        (b"a1 starttls\r\n", b"STARTTLS"),
        (b"a1    NOOP   \r\n", b"NOOP"),
        (b"a1 NOOP\n", b"NOOP"),
    ],
)
def test_verbs(line: bytes, verb: bytes) -> None:
    assert parse(line) == Command(b"a1", verb)


@pytest.mark.parametrize(
    "line",
    [
        b"a1 SELECT INBOX\r\n",
        b"a1 ENABLE UTF8=ACCEPT\r\n",
        b"a1 COMPRESS DEFLATE\r\n",
        b"a1 LOGINX a b\r\n",
        b"a1 LOG1N a b\r\n",
        b"a1 NOOP\tx\r\n",
        b"a1 \r\n",
        b"a1    \r\n",
        b"a1 NOOP\rx\r\n",
        b"a1 NOOP \r \r\n",
        b"a1 N\xc3\xb6OP\r\n",
    ],
)
def test_invalid_verbs_and_line_endings(line: bytes) -> None:
    assert read(line + b"b1 NOOP\r\n") == [*invalid(b"a1"), Command(b"b1", b"NOOP")]


# --- arguments ---------------------------------------------------------------------


def test_atoms() -> None:
    assert args(b"a1 LOGIN john secret\r\n") == (b"john", b"secret")
    # '"', '\\', '(' and '{' inside an atom are ordinary bytes (SPEC 6.1)
    assert args(b'a1 LOGIN jo"hn se\\cr{et}\r\n') == (b'jo"hn', b"se\\cr{et}")
    assert args(b"a1 LOGIN (a) b)\r\n") == (b"(a)", b"b)")
    assert args(b"a1   LOGIN    a    b   \r\n") == (b"a", b"b")


def test_quoted_strings() -> None:
    assert args(b'a1 LOGIN "john doe" "my secret"\r\n') == (b"john doe", b"my secret")
    assert args(b'a1 LOGIN "" ""\r\n') == (b"", b"")
    # \x yields x
    assert args(b'a1 LOGIN "a\\"b" "c\\\\d\\e"\r\n') == (b'a"b', b"c\\de")
    # the closing quote ends the argument; the next may start right away
    assert args(b'a1 LOGIN "a""b"\r\n') == (b"a", b"b")
    assert args(b'a1 LOGIN "a"b\r\n') == (b"a", b"b")
    assert args(b'a1 LOGIN "\xc3\xa9t\xc3\xa9" x\r\n') == (b"\xc3\xa9t\xc3\xa9", b"x")


@pytest.mark.parametrize(
    "line",
    [
        b'a1 LOGIN "john\r\n',
        b'a1 LOGIN john "secret\r\n',
        b'a1 LOGIN "john\\"\r\n',
        b'a1 LOGIN "john\\\r\n',
        b'a1 LOGIN "jo\rhn" x\r\n',
    ],
)
def test_bad_quoted_strings_do_not_poison_the_next_command(line: bytes) -> None:
    # nginx leaves its parser in "quoted" mode after an unterminated string
    # (SPEC 6.5); here only the bad command is refused.
    assert read(line + b"a2 LOGIN user pass\r\n") == [
        *invalid(b"a1"),
        Command(b"a2", b"LOGIN", (b"user", b"pass")),
    ]


def test_three_arguments_fourth_is_an_error() -> None:
    assert args(b"a1 NOOP a b c\r\n") == (b"a", b"b", b"c")
    for line in [b"a1 NOOP a b c d\r\n", b'a1 NOOP a b c "d"\r\n', b"a1 NOOP a b c {1}\r\n"]:
        assert read(line + b"a2 NOOP\r\n") == [*invalid(b"a1"), Command(b"a2", b"NOOP")]
    # a literal counts as an argument too
    assert read(b"a1 NOOP {1}\r\na b c d\r\n") == [LITERAL_CONTINUATION, *invalid(b"a1")]
    assert args(b"a1 NOOP {1}\r\na b c\r\n") == (b"a", b"b", b"c")


# --- literals ----------------------------------------------------------------------


def test_synchronising_literal_continuation_comes_with_the_header() -> None:
    assert read(b"a1 LOGIN {4}\r\njohn {6}\r\nsecret\r\n") == [
        LITERAL_CONTINUATION,
        LITERAL_CONTINUATION,
        Command(b"a1", b"LOGIN", (b"john", b"secret")),
    ]
    # the continuation is due before the literal's bytes arrive
    assert read(b"a1 LOGIN {4}\r\n") == [LITERAL_CONTINUATION]


def test_non_synchronising_literal() -> None:
    assert read(b"a1 LOGIN {4+}\r\njohn {6+}\r\nsecret\r\n") == [
        Command(b"a1", b"LOGIN", (b"john", b"secret"))
    ]


def test_literals_hold_any_bytes() -> None:
    value = b'a "b"\r\n{3}\r\n\\\x00\xff)'
    header = b"{%d}\r\n" % len(value)
    assert args(b"a1 LOGIN " + header + value + b" x\r\n") == (value, b"x")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"a1 LOGIN {0}\r\n {0}\r\n\r\n", (b"", b"")),
        (b"a1 LOGIN {0+}\r\n x\r\n", (b"", b"x")),
        (b"a1 LOGIN {00}\r\n {3}\r\nabc\r\n", (b"", b"abc")),
        (b"a1 LOGIN x {0}\r\n\r\n", (b"x", b"")),
    ],
)
def test_empty_literals(line: bytes, expected: tuple[bytes, ...]) -> None:
    # nginx swallows the byte after "{0}\r\n" as a 1-byte literal (SPEC 6.5)
    assert args(line) == expected
    assert read(line + b"a2 NOOP\r\n")[-1] == Command(b"a2", b"NOOP")


def test_literal_mixed_with_other_arguments() -> None:
    assert args(b'a1 LOGIN "john" {6}\r\nsecret\r\n') == (b"john", b"secret")
    assert args(b"a1 NOOP {1}\r\na  b {1+}\r\nc\r\n") == (b"a", b"b", b"c")


@pytest.mark.parametrize(
    "line",
    [
        b"a1 LOGIN {4}\r\njohnX\r\n",  # only SP or the line end after a literal
        b'a1 LOGIN {4}\r\njohn"x"\r\n',
        b"a1 LOGIN {4}\r\njohn{1}\r\n",
        b"a1 LOGIN {4}x\r\n",  # the header ends the line
        b"a1 LOGIN {4} \r\n",
        b"a1 LOGIN {}\r\n",
        b"a1 LOGIN {x}\r\n",
        b"a1 LOGIN { 4}\r\n",
        b"a1 LOGIN {-4}\r\n",
        b"a1 LOGIN {4++}\r\n",
        b"a1 LOGIN {4+1}\r\n",
        b"a1 LOGIN {4294967296}\r\n",  # more than RFC 9051's 32-bit number
        b"a1 LOGIN {00000000004}\r\n",
        b"a1 LOGIN {4}\rx\n",
    ],
)
def test_bad_literals(line: bytes) -> None:
    results = read(line + b"\r\na2 NOOP\r\n")
    # "{4++}" ends with "+}": that one also closes (below)
    assert ParseError(b"a1", close=line.endswith(b"+}\r\n")) in results
    assert results[-1] == Command(b"a2", b"NOOP")


@pytest.mark.parametrize(
    "line",
    [b"a1 FOO {5+}\r\n", b"a1 FOO {5+}\n", b"a1 LOGIN {x+}\r\n", b"a1 NOOP a b c {5+}\r\n"],
)
def test_bad_line_announcing_a_non_synchronising_literal_closes(line: bytes) -> None:
    assert read(line) == invalid(b"a1", close=True)


def test_bad_line_announcing_a_synchronising_literal_does_not_close() -> None:
    assert read(b"a1 FOO {5}\r\na2 NOOP\r\n") == [*invalid(b"a1"), Command(b"a2", b"NOOP")]


# --- ID (RFC 2971) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "params"),
    [
        (b"a1 ID NIL\r\n", ()),
        (b"a1 id nil\r\n", ()),
        (b"a1 ID ()\r\n", ()),
        (b'a1 ID ("name" "Thunderbird")\r\n', ((b"name", b"Thunderbird"),)),
        (
            b'a1 ID ("name" "Mail" "version" NIL "os" "x \\"y\\"")\r\n',
            ((b"name", b"Mail"), (b"version", None), (b"os", b'x "y"')),
        ),
        (b'a1 ID ( "a" "b" )\r\n', ((b"a", b"b"),)),
        (b'a1 ID ("a" "b""c" "d")\r\n', ((b"a", b"b"), (b"c", b"d"))),
        # new Outlook sends literals, synchronising or not (PEERS.md)
        (
            b'a1 ID ("name" {7}\r\nOutlook "version" {4+}\r\n16.0)\r\n',
            ((b"name", b"Outlook"), (b"version", b"16.0")),
        ),
        (b"a1 ID ({4}\r\nname {3}\r\nx)y)\r\n", ((b"name", b"x)y"),)),
        (b'a1 ID ("a" {0}\r\n)\r\n', ((b"a", b""),)),
    ],
)
def test_id(line: bytes, params: tuple[tuple[bytes, bytes | None], ...]) -> None:
    command = parse(line)
    assert command == Command(b"a1", b"ID", params=params)


@pytest.mark.parametrize(
    "line",
    [
        b"a1 ID\r\n",
        b"a1 ID \r\n",
        b"a1 ID NIL NIL\r\n",
        b"a1 ID NILS\r\n",
        b'a1 ID "name"\r\n',
        b'a1 ID ("name")\r\n',
        b'a1 ID ("name" "a" "version")\r\n',
        b'a1 ID ("name" "a"\r\n',
        b'a1 ID "name" "a")\r\n',
        b'a1 ID ("name" "a"))\r\n',
        b'a1 ID ("name" ("a"))\r\n',
        b'a1 ID ("name" "a") x\r\n',
        b'a1 ID (name "a")\r\n',
        b'a1 ID ("name" a)\r\n',
        b'a1 ID (NIL "a")\r\n',
        b'a1 ID ("name" "a\r\n',
        b'a1 ID ("name" "a") {3}\r\n',
        b'a1 ID ("name" {3}\r\nabcd)\r\n',
        b'a1 ID ("name" {3}\r\nabc"x")\r\n',
    ],
)
def test_malformed_id_is_a_parse_error(line: bytes) -> None:
    results = read(line + b"\r\na2 NOOP\r\n")
    assert ParseError(b"a1") in results
    assert results[-1] == Command(b"a2", b"NOOP")


def test_id_refused_before_its_literal_is_announced() -> None:
    # a broken prefix is refused at once, without inviting the literal
    assert read(b'a1 ID "x" {5}\r\n') == invalid(b"a1")
    assert read(b"a1 ID (NIL {5}\r\n") == invalid(b"a1")


def test_id_list_has_no_argument_limit() -> None:
    pairs = b" ".join(b'"f%d" "v%d"' % (i, i) for i in range(30))
    command = parse(b"a1 ID (" + pairs + b")\r\n")
    assert len(command.params) == 30


# --- limits (SPEC 4.1) ---------------------------------------------------------------


def test_command_exactly_filling_the_buffer() -> None:
    line = b"a1 NOOP " + b"x" * 22 + b"\r\n"
    assert len(line) == 32
    assert read(line, limit=32) == [Command(b"a1", b"NOOP", (b"x" * 22,))]
    assert read(line[:-2] + b"x\r\n", limit=32) == [TooLong(b"a1", line[:-2] + b"x\r")]


def test_command_with_literals_must_fit() -> None:
    # the whole command, literals included, counts: 14 + 6 + 6 + 8 bytes
    fits = b"a1 LOGIN {4}\r\njohn {6}\r\nsecret\r\n"
    assert len(fits) == 32
    assert read(fits, limit=32)[-1] == Command(b"a1", b"LOGIN", (b"john", b"secret"))
    assert read(fits + b"a2 NOOP\r\n", limit=32)[-1] == Command(b"a2", b"NOOP")
    # the literal cannot fit with at least an LF after it: refused at once
    result = read(fits.replace(b"{6}", b"{8}").replace(b"secret", b"secret!!"), limit=32)
    assert result == [LITERAL_CONTINUATION, TooLong(b"a1", b"a1 LOGIN {4}\r\njohn {8}\r\n")]
    # it fits with an LF, but not with the CRLF that follows
    result = read(fits.replace(b"{6}", b"{7}").replace(b"secret", b"secret!"), limit=32)
    head = b"a1 LOGIN {4}\r\njohn {7}\r\nsecret!\r"
    assert result == [LITERAL_CONTINUATION] * 2 + [TooLong(b"a1", head)]


def test_literal_that_cannot_fit_is_refused_before_the_continuation() -> None:
    assert read(b"a1 LOGIN {5000}\r\n") == [TooLong(b"a1", b"a1 LOGIN {5000}\r\n")]
    assert read(b"a1 LOGIN {4294967295+}\r\n") == [TooLong(b"a1", b"a1 LOGIN {4294967295+}\r\n")]


def test_too_long_line_without_a_valid_tag() -> None:
    assert read(b"a" * 40, limit=32) == [TooLong(None, b"a" * 32)]
    assert read(b"a1 " + b"x" * 40, limit=32) == [TooLong(b"a1", b"a1 " + b"x" * 29)]


def test_compacted_buffer_holds_many_short_commands() -> None:
    # nginx fails after 21 of these in a 128-byte buffer (SPEC 4.1)
    assert read(b"a1 NOOP\r\n" * 100, limit=16) == [Command(b"a1", b"NOOP")] * 100


def test_read_line() -> None:
    reader = CommandReader(8)
    reader.feed(b"abc\r\nde")
    assert reader.read_line() == b"abc\r\n"
    assert reader.read_line() is None
    reader.feed(b"fghij")
    assert reader.read_line() is None
    reader.feed(b"k")
    assert reader.read_line() == TooLong(None, b"defghijk")
    reader.clear()
    assert len(reader) == 0
    reader.feed(b"x\ny")
    assert reader.read_line() == b"x\n"
    assert reader.take() == b"y"


def test_reader_keeps_what_follows_a_command() -> None:
    reader = CommandReader(LIMIT)
    reader.feed(b"a1 LOGIN {1+}\r\nx y\r\na2 SELECT")
    assert reader.read_command() == Command(b"a1", b"LOGIN", (b"x", b"y"))
    assert reader.take() == b"a2 SELECT"


def test_reader_validation() -> None:
    with pytest.raises(ValueError):
        CommandReader(0)


def test_command_repr_hides_arguments() -> None:
    command = parse(b"a1 LOGIN john s3cret\r\n")
    assert "s3cret" not in repr(command)
    assert "john" not in repr(command)
