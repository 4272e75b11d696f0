"""The IMAP tokenizer before login: client bytes in, commands out.

SPEC 4.2 and 6.1; RFC 9051 / RFC 3501 section 4 (atoms, quoted strings,
literals), RFC 7888 (non-synchronising literals ``{N+}``), RFC 2971 (ID).

nginx tokenizes byte by byte. ``CommandReader`` cuts a command into segments
instead: a line up to its LF and, when that line ends with a literal header
``{N}`` or ``{N+}``, the N literal bytes and the segment that follows them.
Each segment is tokenized once it is complete, so a parse error is answered
when its line's LF has arrived and the rest of that line is discarded with it
(SPEC 4.2). The verbs, argument rules, tag rules and the close after a bad
line announcing a non-synchronising literal are nginx's (SPEC 6.1).

Where nginx's parser is buggy mailgate does not follow it (SPEC "Do better",
Appendix B item 6): ``{0}`` is an empty literal; a quoted string unterminated
at the end of its line is a parse error of that command only; ``\\`` escapes
are undone in quoted strings only, not in atoms and literals. And ``ID``
(RFC 2971) is understood, with its parenthesised list of strings, ``NIL`` and
literals, as new Outlook and OfflineIMAP send it before login (PEERS.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, NamedTuple

# --- verbs (SPEC 6.1) ------------------------------------------------------------

LOGIN: Final = b"LOGIN"
LOGOUT: Final = b"LOGOUT"
CAPABILITY: Final = b"CAPABILITY"
NOOP: Final = b"NOOP"
STARTTLS: Final = b"STARTTLS"
AUTHENTICATE: Final = b"AUTHENTICATE"
ID: Final = b"ID"  # RFC 2971; a parse error in nginx (Mailu issue 2938)
VERBS: Final = frozenset({LOGIN, LOGOUT, CAPABILITY, NOOP, STARTTLS, AUTHENTICATE, ID})

# --- limits -------------------------------------------------------------------------

# nginx's tag: 1 to 32 of these characters, then SP (SPEC 6.1, nginx 1.29.6).
# A 33rd character or any other byte is a parse error.
TAG_PATTERN: Final = rb"[A-Za-z0-9._-]{1,32}"
# nginx starts a new argument only while it holds at most two: a fourth
# argument is a parse error (SPEC 6.1). ID's list is not bound by this.
MAX_ARGUMENTS: Final = 3
# RFC 9051 section 9: a literal's size is a "number", an unsigned 32-bit
# integer; a larger (or overflowing) size is a parse error (SPEC 6.1).
MAX_LITERAL_SIZE: Final = 2**32 - 1
_MAX_LITERAL_DIGITS: Final = len(str(MAX_LITERAL_SIZE))

_SP: Final = ord(" ")
_QUOTE: Final = ord('"')
_BRACE: Final = ord("{")
_OPEN: Final = ord("(")
_CLOSE: Final = ord(")")

_TAG: Final = re.compile(rb"(" + TAG_PATTERN + rb") ")
_VERB: Final = re.compile(rb" *([^ ]*)")
_ATOM: Final = re.compile(rb"[^ ]+")  # nginx: an atom runs to SP, CR or LF
_LIST_ATOM: Final = re.compile(rb"[^ ()]+")  # inside ID's list, parentheses delimit
_QUOTED_SPECIAL: Final = re.compile(rb'["\\]')
_LITERAL_HEADER: Final = re.compile(rb"\{([0-9]{1,%d})(\+?)\}" % _MAX_LITERAL_DIGITS)
_NIL: Final = b"NIL"

Args = tuple[bytes, ...]
# ID's field/value pairs; a NIL value is None (RFC 2971 section 3.1).
IdParams = tuple[tuple[bytes, bytes | None], ...]

# --- tokens ---------------------------------------------------------------------------

ATOM: Final = "atom"
QUOTED: Final = "quoted"
LITERAL: Final = "literal"
OPEN: Final = "("
CLOSE: Final = ")"
_STRINGS: Final = frozenset({QUOTED, LITERAL})


class Token(NamedTuple):
    kind: str
    value: bytes = b""


# --- results ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """A complete command. ``args`` are the arguments of every verb but ID,
    whose field/value pairs are ``params``. ``repr`` hides the arguments:
    LOGIN's hold the password."""

    tag: bytes
    verb: bytes  # upper case
    args: Args = ()
    params: IdParams = ()

    def __repr__(self) -> str:
        return f"Command(tag={self.tag!r}, verb={self.verb!r}, <{len(self.args)} args>)"


@dataclass(frozen=True, slots=True)
class LiteralContinuation:
    """A synchronising literal was announced: send ``+ OK`` (SPEC 6.1)."""


@dataclass(frozen=True, slots=True)
class ParseError:
    """The command was refused by the tokenizer (counts towards max_errors).

    ``tag`` is None when the line has no valid tag (the reply then uses
    ``*``). ``close`` is set when the bad line announced a non-synchronising
    literal, which cannot be skipped safely: nginx answers and closes
    (SPEC 6.1).
    """

    tag: bytes | None
    close: bool = False


@dataclass(frozen=True, slots=True)
class TooLong:
    """The command (literals included) or line does not fit in the buffer
    (SPEC 4.1). ``head`` is the buffered start of it, for the log."""

    tag: bytes | None
    head: bytes


Reading = Command | LiteralContinuation | ParseError | TooLong

LITERAL_CONTINUATION: Final = LiteralContinuation()


class _Invalid(Exception):
    """A parse error inside a segment."""


# --- one segment ------------------------------------------------------------------------


def _body(segment: bytes) -> bytes:
    """The segment without its LF or CRLF."""
    return segment.removesuffix(b"\n").removesuffix(b"\r")


def _no_stray_cr(body: bytes) -> None:
    """A CR not followed by LF is a parse error (SPEC 4.2)."""
    if b"\r" in body:
        raise _Invalid()


def _quoted(rest: bytes, start: int) -> tuple[Token, int]:
    """The quoted string opening at ``start`` and where it ends. ``\\x``
    yields ``x``; a backslash before the line end or a missing closing quote
    is a parse error."""
    value = bytearray()
    at = start + 1
    while True:
        special = _QUOTED_SPECIAL.search(rest, at)
        if special is None:
            raise _Invalid()
        value += rest[at : special.start()]
        at = special.end()
        if rest[special.start()] == _QUOTE:
            return Token(QUOTED, bytes(value)), at
        if at >= len(rest):
            raise _Invalid()
        value.append(rest[at])
        at += 1


def _literal_header(rest: bytes, start: int) -> tuple[int, bool]:
    """(size, synchronising) of the ``{N}`` or ``{N+}`` that must end the
    segment at ``start``."""
    header = _LITERAL_HEADER.fullmatch(rest, start)
    if header is None:
        raise _Invalid()
    size = int(header.group(1))
    if size > MAX_LITERAL_SIZE:
        raise _Invalid()
    return size, not header.group(2)


def _lex(rest: bytes, tokens: list[Token], in_list: bool) -> tuple[int, bool] | None:
    """Append the tokens of ``rest`` to ``tokens``; return (size,
    synchronising) when ``rest`` ends with a literal header, whose token is
    appended empty until the literal's bytes arrive."""
    at, end = 0, len(rest)
    while at < end:
        byte = rest[at]
        if byte == _SP:
            at += 1
            continue
        if in_list and byte in (_OPEN, _CLOSE):
            tokens.append(Token(OPEN if byte == _OPEN else CLOSE))
            at += 1
            continue
        if not in_list and len(tokens) >= MAX_ARGUMENTS:
            raise _Invalid()
        if byte == _QUOTE:
            token, at = _quoted(rest, at)
        elif byte == _BRACE:
            literal = _literal_header(rest, at)
            tokens.append(Token(LITERAL))
            return literal
        else:
            atom = (_LIST_ATOM if in_list else _ATOM).match(rest, at)
            assert atom is not None  # rest[at] is neither SP nor a parenthesis
            token, at = Token(ATOM, atom.group()), atom.end()
        tokens.append(token)
    return None


def _is_nil(token: Token) -> bool:
    return token.kind == ATOM and token.value.upper() == _NIL


def _check_id(tokens: list[Token], complete: bool) -> None:
    """RFC 2971: ``ID SP ("(" [string SP nstring *(SP string SP nstring)]
    ")" / NIL)``. ``tokens`` may be a prefix while a literal is awaited."""
    if not tokens:
        if complete:
            raise _Invalid()
        return
    if _is_nil(tokens[0]) and len(tokens) == 1:
        return
    if tokens[0].kind != OPEN:
        raise _Invalid()
    items = tokens[1:]
    closed = bool(items) and items[-1].kind == CLOSE
    if closed:
        items = items[:-1]
    for index, item in enumerate(items):
        field = index % 2 == 0
        if item.kind not in _STRINGS and (field or not _is_nil(item)):
            raise _Invalid()
    if complete and not (closed and len(items) % 2 == 0):
        raise _Invalid()
    if closed and not complete:  # a literal after the closing parenthesis
        raise _Invalid()


def _id_params(tokens: list[Token]) -> IdParams:
    if _is_nil(tokens[0]):
        return ()
    items = tokens[1:-1]
    return tuple(
        (field.value, None if _is_nil(value) else value.value)
        for field, value in zip(items[::2], items[1::2], strict=True)
    )


class _CommandInProgress:
    """The tag, verb and tokens of the command being read."""

    __slots__ = ("tag", "tokens", "verb")

    def __init__(self) -> None:
        self.tag: bytes | None = None
        self.verb: bytes | None = None
        self.tokens: list[Token] = []

    @property
    def _in_list(self) -> bool:
        return self.verb == ID

    def add(self, segment: bytes) -> tuple[int, bool] | None:
        """Tokenize the next segment; (size, synchronising) if a literal
        follows it. Raises _Invalid on a parse error."""
        body = _body(segment)
        if self.verb is None:
            rest = self._tag_and_verb(body)
        else:
            _no_stray_cr(body)
            # Every later segment follows a literal's bytes: only SP or the
            # line end may come next (SPEC 6.1), or the end of ID's list.
            rest = body
            if rest and rest[0] != _SP and not (self._in_list and rest[0] == _CLOSE):
                raise _Invalid()
        literal = _lex(rest, self.tokens, self._in_list)
        if self._in_list:
            _check_id(self.tokens, complete=literal is None)
        return literal

    def fill_literal(self, data: bytes) -> None:
        self.tokens[-1] = Token(LITERAL, data)

    def command(self) -> Command:
        assert self.tag is not None and self.verb is not None
        if self.verb == ID:
            return Command(self.tag, self.verb, params=_id_params(self.tokens))
        return Command(self.tag, self.verb, tuple(token.value for token in self.tokens))

    def _tag_and_verb(self, body: bytes) -> bytes:
        tag = _TAG.match(body)
        if tag is None:
            raise _Invalid()
        self.tag = tag.group(1)
        # The tag is known first, so a bad byte after it gets a tagged reply.
        _no_stray_cr(body)
        # One or more spaces, then letters only, matched case-insensitively
        # and ending at SP or the line end (SPEC 4.2).
        verb = _VERB.match(body, tag.end())
        assert verb is not None  # the pattern matches the empty string
        name = verb.group(1).upper()
        if not name.isalpha() or name not in VERBS:
            raise _Invalid()
        self.verb = name
        return body[verb.end() :]


def _announces_non_sync_literal(segment: bytes) -> bool:
    """The line ends with ``+}`` (and maybe CR) right before its LF."""
    return _body(segment).endswith(b"+}")


def tag_of(data: bytes | bytearray) -> bytes | None:
    """The tag at the start of ``data`` if it is valid and followed by SP."""
    tag = _TAG.match(data)
    return tag.group(1) if tag else None


# --- the reader ---------------------------------------------------------------------------


class CommandReader:
    """Client bytes received and not yet handled.

    ``read_command`` hands out commands, ``read_line`` SASL response lines.
    Like ``base.LineBuffer`` the buffer is compacted (SPEC "Do better"): each
    command is removed once read, and only one command, literals included,
    must fit in ``limit`` bytes (imap_client_buffer, SPEC 4.1).
    """

    __slots__ = ("_command", "_data", "_literal", "_pos", "_scanned", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"buffer limit must be positive, not {limit}")
        self.limit = limit
        self._data = bytearray()
        self._pos = 0  # bytes of the current command already tokenized
        self._scanned = 0  # bytes known to hold no LF
        self._literal: int | None = None  # size of the literal awaited
        self._command = _CommandInProgress()

    def __len__(self) -> int:
        return len(self._data)

    def feed(self, data: bytes) -> None:
        self._data += data

    def read_command(self) -> Reading | None:
        """The next result, or None until more bytes arrive."""
        while True:
            if self._literal is not None:
                if not self._receive_literal(self._literal):
                    return None
                continue
            segment = self._next_segment()
            if segment is None:
                return self._too_long(self.limit) if len(self._data) >= self.limit else None
            try:
                literal = self._command.add(segment)
            except _Invalid:
                close = _announces_non_sync_literal(segment)
                return self._finish(ParseError(self._command.tag, close))
            if literal is None:
                return self._finish(self._command.command())
            size, synchronising = literal
            if self._pos + size + len(b"\n") > self.limit:
                # It cannot fit: refused at once, before the client sends it.
                return self._too_long(self._pos)
            self._literal = size
            if synchronising:
                return LITERAL_CONTINUATION

    def read_line(self) -> bytes | TooLong | None:
        """The next LF-terminated line (a SASL response), or None."""
        segment = self._next_segment()
        if segment is not None:
            self._finish(None)
            return segment
        return self._too_long(self.limit) if len(self._data) >= self.limit else None

    def take(self) -> bytes:
        """Everything buffered; the reader is left empty."""
        data = bytes(self._data)
        self.clear()
        return data

    def clear(self) -> None:
        self._data.clear()
        self._finish(None)

    def _next_segment(self) -> bytes | None:
        end = self._data.find(b"\n", max(self._scanned, self._pos), self.limit)
        if end < 0:
            self._scanned = max(self._pos, min(len(self._data), self.limit))
            return None
        segment = bytes(self._data[self._pos : end + 1])
        self._pos = self._scanned = end + 1
        return segment

    def _receive_literal(self, size: int) -> bool:
        if len(self._data) - self._pos < size:
            return False
        self._command.fill_literal(bytes(self._data[self._pos : self._pos + size]))
        self._pos = self._scanned = self._pos + size
        self._literal = None
        return True

    def _too_long(self, end: int) -> TooLong:
        """The command does not fit; ``head`` is its first ``end`` bytes."""
        tag = self._command.tag if self._command.tag is not None else tag_of(self._data)
        return TooLong(tag, bytes(self._data[:end]))

    def _finish(self, result: Reading | None) -> Reading | None:
        """Drop the bytes of the command just read and start a new one."""
        del self._data[: self._pos]
        self._pos = self._scanned = 0
        self._literal = None
        self._command = _CommandInProgress()
        return result
