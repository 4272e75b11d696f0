"""The nginx-syntax front-end: ``mailgate.conf`` or a whole ``nginx.conf``.

The lexer is nginx's ``ngx_conf_read_token`` (ngx_conf_file.c) state for
state, so that what nginx accepts reads the same here, down to its error
messages: words split on whitespace, ``;`` ends a directive, ``{`` opens a
block, ``#`` starts a comment only where a word could start, single and
double quotes, and backslash escapes (``\\"``, ``\\'``, ``\\\\``, ``\\t``,
``\\r``, ``\\n``; any other backslash is kept).

``include`` is expanded while parsing, in place, as nginx does. Relative
include paths start from the directory of the main configuration file
(nginx's conf prefix), not from the including file, so that nested includes
of an existing nginx.conf resolve as they do for nginx.
"""

from __future__ import annotations

import glob
import os

from mailgate.config.directives import OPAQUE_BLOCKS
from mailgate.config.nodes import Directive
from mailgate.errors import ConfigError

# Includes nested deeper than this are surely a loop (nginx has no limit and
# fails only when it runs out of file descriptors).
MAX_INCLUDE_DEPTH = 32

_SPACE = " \t\r\n"
# Token kinds returned by the lexer (ngx_conf_read_token's return codes).
DIRECTIVE, BLOCK_START, BLOCK_DONE, FILE_DONE = "directive", "block", "end", "eof"


def parse(path: str) -> tuple[Directive, ...]:
    """Parse ``path`` and everything it includes into directive nodes."""
    path = os.path.abspath(path)
    return tuple(_Parser(os.path.dirname(path)).parse_file(path, depth=0))


def read_text(path: str, where: tuple[str | None, int | None] = (None, None)) -> str:
    """A configuration file's text, or nginx's open() error."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ConfigError(f'open() "{path}" failed ({err.errno}: {err.strerror})', *where) from None
    # nginx takes bytes as they are; undecodable ones survive a round trip.
    return data.decode("utf-8", "surrogateescape")


class _Lexer:
    """ngx_conf_read_token over one file's text."""

    def __init__(self, text: str, file: str) -> None:
        self.text = text
        self.file = file
        self.pos = 0
        self.line = 1

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, self.file, self.line)

    def next(self) -> tuple[str, list[str], int]:
        """The next directive's words and how it ended, with its line."""
        text = self.text
        words: list[str] = []
        need_space = quoted = s_quoted = d_quoted = sharp = variable = False
        last_space, start = True, self.pos
        while True:
            if self.pos >= len(text):
                if words or not last_space:
                    raise self.error('unexpected end of file, expecting ";" or "}"')
                return FILE_DONE, words, self.line
            ch = text[self.pos]
            self.pos += 1
            if ch == "\n":
                self.line += 1
                sharp = False
            if sharp:
                continue
            if quoted:
                quoted = False
                continue
            if need_space:
                if ch in _SPACE:
                    last_space, need_space = True, False
                    continue
                if ch == ";":
                    return DIRECTIVE, words, self.line
                if ch == "{":
                    return BLOCK_START, words, self.line
                if ch != ")":
                    raise self.error(f'unexpected "{ch}"')
                last_space, need_space = True, False
            if last_space:
                start = self.pos - 1
                if ch in _SPACE:
                    continue
                if ch in ";{":
                    if not words:
                        raise self.error(f'unexpected "{ch}"')
                    return (BLOCK_START if ch == "{" else DIRECTIVE), words, self.line
                if ch == "}":
                    if words:
                        raise self.error('unexpected "}"')
                    return BLOCK_DONE, words, self.line
                last_space = False
                if ch == "#":
                    sharp, last_space = True, True
                elif ch == "\\":
                    quoted = True
                elif ch == '"':
                    start, d_quoted = start + 1, True
                elif ch == "'":
                    start, s_quoted = start + 1, True
                elif ch == "$":
                    variable = True
                continue
            if ch == "{" and variable:
                continue  # "${name}" is one word
            variable = False
            found = False
            if ch == "\\":
                quoted = True
                continue
            if ch == "$":
                variable = True
                continue
            if d_quoted:
                if ch == '"':
                    d_quoted, need_space, found = False, True, True
            elif s_quoted:
                if ch == "'":
                    s_quoted, need_space, found = False, True, True
            elif ch in _SPACE or ch in ";{":
                last_space, found = True, True
            if found:
                words.append(unescape(text[start: self.pos - 1]))
                if ch == ";":
                    return DIRECTIVE, words, self.line
                if ch == "{":
                    return BLOCK_START, words, self.line


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}


def unescape(raw: str) -> str:
    """The escapes nginx decodes in a word; any other backslash stays."""
    if "\\" not in raw:
        return raw
    out, i = [], 0
    while i < len(raw):
        if raw[i] == "\\" and i + 1 < len(raw) and raw[i + 1] in _ESCAPES:
            out.append(_ESCAPES[raw[i + 1]])
            i += 2
            continue
        out.append(raw[i])
        i += 1
    return "".join(out)


class _Parser:
    """ngx_conf_parse: blocks and includes, over lexers of several files."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def parse_file(self, path: str, depth: int,
                   where: tuple[str | None, int | None] = (None, None)) -> list[Directive]:
        lexer = _Lexer(read_text(path, where), path)
        return self.parse_block(lexer, in_block=False, opaque=False, depth=depth)

    def parse_block(self, lexer: _Lexer, in_block: bool, opaque: bool,
                    depth: int) -> list[Directive]:
        """Directives up to the ``}`` closing this block (or the end of the
        file, which is an error inside a block). In an ``opaque`` block
        (``http {}``) includes are kept as they are, not read."""
        nodes: list[Directive] = []
        while True:
            kind, words, line = lexer.next()
            if kind == BLOCK_DONE:
                if not in_block:
                    raise lexer.error('unexpected "}"')
                return nodes
            if kind == FILE_DONE:
                if in_block:
                    raise lexer.error('unexpected end of file, expecting "}"')
                return nodes
            name, args = words[0], tuple(words[1:])
            if kind == BLOCK_START:
                inner = self.parse_block(lexer, True, opaque or name in OPAQUE_BLOCKS, depth)
                nodes.append(Directive(name, args, lexer.file, line, tuple(inner)))
            elif name == "include" and not opaque:
                nodes.extend(self.include(Directive(name, args, lexer.file, line), depth))
            else:
                nodes.append(Directive(name, args, lexer.file, line))

    def include(self, d: Directive, depth: int) -> list[Directive]:
        """ngx_conf_include: a file, or a glob whose matches are read in
        sorted order (no match is fine for a glob, not for a plain name)."""
        if len(d.args) != 1:
            raise ConfigError('invalid number of arguments in "include" directive', *d.where)
        if depth >= MAX_INCLUDE_DEPTH:
            raise ConfigError(f'include nesting too deep at "{d.args[0]}"', *d.where)
        pattern = os.path.join(self.prefix, d.args[0])
        names = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        nodes: list[Directive] = []
        for name in names:
            nodes.extend(self.parse_file(os.path.normpath(name), depth + 1, d.where))
        return nodes
