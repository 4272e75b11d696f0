"""The POP3 tokenizer: one complete client line in, a command or None out.

It reproduces what ``ngx_mail_pop3_parse_command`` accepts (SPEC 4.2, 5.1).
None is a parse error: the caller answers ``-ERR invalid command`` and counts
it towards max_errors (SPEC 4.5). Lines reach the tokenizer whole, LF
included, so the rest of a bad line is discarded with it.
"""

from __future__ import annotations

from typing import Final, NamedTuple

# The verbs nginx recognises before login, exactly four letters each
# (RFC 1939, RFC 2449 CAPA, RFC 5034 AUTH, RFC 2595 STLS). Anything else,
# STAT or RETR included, is a parse error (SPEC 5.1).
USER: Final = b"USER"
PASS: Final = b"PASS"
APOP: Final = b"APOP"
QUIT: Final = b"QUIT"
CAPA: Final = b"CAPA"
AUTH: Final = b"AUTH"
NOOP: Final = b"NOOP"
STLS: Final = b"STLS"
VERBS: Final = frozenset({USER, PASS, APOP, QUIT, CAPA, AUTH, NOOP, STLS})

# nginx starts a new argument only while it holds at most two: a fourth
# argument is a parse error (SPEC 5.1). A SASL response line obeys the same
# limit, its first token being the response (SPEC 4.4).
MAX_ARGUMENTS: Final = 3

# For USER and PASS the single argument runs to the end of the line, spaces
# included: logins and passwords may contain them (SPEC 5.1).
_WHOLE_LINE_ARGUMENT: Final = frozenset({USER, PASS})

Args = tuple[bytes, ...]


class Command(NamedTuple):
    verb: bytes  # upper case
    args: Args


def _body(line: bytes) -> bytes | None:
    """The line without its LF or CRLF; None if a CR is not followed by LF
    (SPEC 4.2)."""
    body = line.removesuffix(b"\n").removesuffix(b"\r")
    return None if b"\r" in body else body


def _split(rest: bytes) -> Args:
    # Runs of spaces separate arguments; only SP counts, not other whitespace.
    return tuple(part for part in rest.split(b" ") if part)


def parse_command(line: bytes) -> Command | None:
    """Tokenize a command line (LF-terminated)."""
    body = _body(line)
    if body is None:
        return None
    verb, _, rest = body.partition(b" ")
    # The verb is ASCII letters only, matched case-insensitively, and ends at
    # SP or the line end: leading spaces or an empty line are parse errors.
    verb = verb.upper()
    if not verb.isalpha() or verb not in VERBS:
        return None
    if verb in _WHOLE_LINE_ARGUMENT:
        argument = rest.lstrip(b" ")
        return Command(verb, (argument,) if argument else ())
    args = _split(rest)
    if len(args) > MAX_ARGUMENTS:
        return None
    return Command(verb, args)


def parse_sasl_response(line: bytes) -> bytes | None:
    """The SASL response token of a continuation line (SPEC 4.4).

    nginx parses this line as further AUTH arguments: the response is the
    text up to the first space (empty for an empty line), further tokens are
    ignored, but more than ``MAX_ARGUMENTS`` tokens is a parse error.
    """
    body = _body(line)
    if body is None:
        return None
    response, _, rest = body.partition(b" ")
    if 1 + len(_split(rest)) > MAX_ARGUMENTS:
        return None
    return response
