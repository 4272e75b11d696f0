"""The POP3 tokenizer: one complete client line in, a command or None out.

It reproduces what ``ngx_mail_pop3_parse_command`` accepts (SPEC 4.2, 5.1).
None is a parse error: the caller answers ``-ERR invalid command`` and counts
it towards max_errors (SPEC 4.5). Lines reach the tokenizer whole, LF
included, so the rest of a bad line is discarded with it.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from mailgate.protocol.line_parse import Args, sasl_response, split_args, split_command

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


class Command(NamedTuple):
    verb: bytes  # upper case
    args: Args


def parse_command(line: bytes) -> Command | None:
    """Tokenize a command line (LF-terminated)."""
    split = split_command(line, VERBS)
    if split is None:
        return None
    _, verb, rest = split
    if verb in _WHOLE_LINE_ARGUMENT:
        argument = rest.lstrip(b" ")
        return Command(verb, (argument,) if argument else ())
    args = split_args(rest)
    if len(args) > MAX_ARGUMENTS:
        return None
    return Command(verb, args)


def parse_sasl_response(line: bytes) -> bytes | None:
    """The SASL response token of a continuation line; at most
    ``MAX_ARGUMENTS`` tokens (SPEC 4.4, ``line_parse.sasl_response``)."""
    return sasl_response(line, MAX_ARGUMENTS)
