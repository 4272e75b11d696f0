"""The SMTP tokenizer: one complete client line in, a command or None out.

It reproduces what ``ngx_mail_smtp_parse_command`` accepts (SPEC 4.2, 7.3).
None is a parse error: the caller answers ``500 5.5.1 Invalid command`` and
counts it towards max_errors (SPEC 4.5). Lines reach the tokenizer whole, LF
included, so the rest of a bad line is discarded with it.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from mailgate.protocol.base import text
from mailgate.protocol.line_parse import Args, sasl_response, split_args, split_command
from mailgate.protocol.session import LOGGED_COMMAND_MAX, loggable_head

# The verbs nginx recognises before login (RFC 5321 section 4.1.1, RFC 4954
# AUTH, RFC 3207 STARTTLS). Anything else is a parse error, DATA and BDAT
# included: mail data is never accepted before the backend login (SPEC 7.3).
HELO: Final = b"HELO"
EHLO: Final = b"EHLO"
QUIT: Final = b"QUIT"
AUTH: Final = b"AUTH"
NOOP: Final = b"NOOP"
MAIL: Final = b"MAIL"
RSET: Final = b"RSET"
RCPT: Final = b"RCPT"
VRFY: Final = b"VRFY"
EXPN: Final = b"EXPN"
HELP: Final = b"HELP"
STARTTLS: Final = b"STARTTLS"
VERBS: Final = frozenset(
    {HELO, EHLO, QUIT, AUTH, NOOP, MAIL, RSET, RCPT, VRFY, EXPN, HELP, STARTTLS}
)

# nginx starts a new argument only while it holds at most ten: a twelfth is a
# parse error (SPEC 7.3). A SASL response line obeys the same limit, its
# first token being the response (SPEC 4.4).
MAX_ARGUMENTS: Final = 11


class Command(NamedTuple):
    verb: bytes  # upper case
    args: Args
    # The command as typed, from the verb to the end of its last argument
    # (spacing inside kept, trailing spaces dropped): what smtp_auth none
    # remembers of MAIL and RCPT and replays to the backend (SPEC 7.6).
    text: bytes
    # The whole line as received, LF included (for log messages).
    line: bytes


def parse_command(line: bytes) -> Command | None:
    """Tokenize a command line (LF-terminated)."""
    split = split_command(line, VERBS)
    if split is None:
        return None
    body, verb, rest = split
    args = split_args(rest)
    if len(args) > MAX_ARGUMENTS:
        return None
    return Command(verb, args, body.rstrip(b" "), line)


def parse_sasl_response(line: bytes) -> bytes | None:
    """The SASL response token of a continuation line; at most
    ``MAX_ARGUMENTS`` tokens (SPEC 4.4, ``line_parse.sasl_response``)."""
    return sasl_response(line, MAX_ARGUMENTS)


# --- client bytes in log messages ---------------------------------------------------

# An AUTH command up to its mechanism name: what follows it on the line, and
# on the lines after it, may be SASL data holding a password.
_AUTH_LINE: Final = re.compile(rb"(?im)^AUTH +[^ \r\n]+")


def loggable(data: bytes) -> str:
    """Client bytes for a ``client was rejected`` message: CR and LF become
    ``_`` (SPEC 7.2, 7.4)."""
    return text(data).replace("\r", "_").replace("\n", "_")


def without_sasl_data(data: bytes) -> bytes:
    """``data`` cut after the first AUTH command's mechanism, `` ...`` marking
    the cut."""
    found = _AUTH_LINE.search(data)
    return data if found is None else data[: found.end()] + b" ..."


_AUTH_MECHANISM: Final = re.compile(rb"(?i)AUTH +[^ \r\n]+")


def loggable_command(line: bytes, sasl_response: bool) -> str:
    """The head of a too long line for ``client sent too long command``,
    with any SASL data (a whole SASL response line, or what follows an AUTH
    mechanism) left out."""
    if sasl_response:
        return "..."
    mechanism = _AUTH_MECHANISM.match(line[:LOGGED_COMMAND_MAX])
    if mechanism:
        return text(mechanism.group()) + " ..."
    return loggable_head(line)
