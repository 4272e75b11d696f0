"""What the POP3 and SMTP tokenizers share: nginx's rules for a command line.

``ngx_mail_pop3_parse_command`` and ``ngx_mail_smtp_parse_command`` read a
line the same way and differ in their verbs and how many arguments they
take (SPEC 4.2, 5.1, 7.3). Lines reach the tokenizers whole, LF included,
so the rest of a bad line is discarded with it.
"""

from __future__ import annotations

from collections.abc import Container

Args = tuple[bytes, ...]


def _body(line: bytes) -> bytes | None:
    """The line without its LF or CRLF; None if a CR is not followed by LF
    (SPEC 4.2)."""
    body = line.removesuffix(b"\n").removesuffix(b"\r")
    return None if b"\r" in body else body


def split_args(rest: bytes) -> Args:
    # Runs of spaces separate arguments; only SP counts, not other whitespace.
    return tuple(part for part in rest.split(b" ") if part)


def split_command(line: bytes, verbs: Container[bytes]) -> tuple[bytes, bytes, bytes] | None:
    """(body, verb, rest) of a command line: ``body`` the line without its
    line end, ``verb`` in upper case and one of ``verbs``, ``rest`` what
    follows the verb's SP. None for a parse error."""
    body = _body(line)
    if body is None:
        return None
    verb, _, rest = body.partition(b" ")
    # The verb is ASCII letters only, matched case-insensitively, and ends at
    # SP or the line end: leading spaces or an empty line are parse errors.
    verb = verb.upper()
    if not verb.isalpha() or verb not in verbs:
        return None
    return body, verb, rest


def sasl_response(line: bytes, max_arguments: int) -> bytes | None:
    """The SASL response token of a continuation line (SPEC 4.4).

    nginx parses this line as further AUTH arguments: the response is the
    text up to the first space (empty for an empty line), further tokens are
    ignored, but more than ``max_arguments`` tokens is a parse error.
    """
    body = _body(line)
    if body is None:
        return None
    response, _, rest = body.partition(b" ")
    if 1 + len(split_args(rest)) > max_arguments:
        return None
    return response
