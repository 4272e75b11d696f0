"""Messages for the end-to-end tests: deterministic, CRLF line ends, every
header a mail server would otherwise add already present (so the copy
Postfix delivers differs only by the trace headers it prepends), and bodies
that exercise what proxies get wrong: lines starting with a dot, a lone dot
with trailing text, "From " lines, 8-bit text, long lines, sizes of several
megabytes."""

from __future__ import annotations

import base64
import hashlib
import random

CRLF = b"\r\n"


def message(subject: str, body: bytes, *, sender: str = "alice@e2e.test", to: str = "alice@e2e.test",
            message_id: str | None = None, extra: list[bytes] | None = None) -> bytes:
    """A complete RFC 5322 message; ``body`` lines are joined with CRLF."""
    mid = message_id or f"<{hashlib.sha1(subject.encode() + body).hexdigest()[:20]}@e2e.test>"
    headers = [
        f"From: {sender}".encode(),
        f"To: {to}".encode(),
        f"Subject: {subject}".encode(),
        f"Message-ID: {mid}".encode(),
        b"Date: Mon, 02 Nov 2026 10:00:00 +0000",
        b"MIME-Version: 1.0",
    ]
    headers += extra or [b"Content-Type: text/plain; charset=us-ascii"]
    body = body.replace(CRLF, b"\n").replace(b"\n", CRLF)
    if not body.endswith(CRLF):
        body += CRLF
    return CRLF.join(headers) + CRLF + CRLF + body


def message_id(data: bytes) -> bytes:
    """The Message-ID header value of ``data``."""
    for line in data.split(b"\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip()
    raise ValueError("no Message-ID")


def tricky_body() -> bytes:
    return CRLF.join([
        b"Lines a proxy must pass untouched:",
        b".",
        b"..",
        b". a line that starts with a dot",
        b".. two dots",
        b"From the start of a line",
        b">From an escaped one",
        b"",
        b"",
        b"tab\tand trailing space ",
        b"x" * 990,
        b"* 1 EXISTS",
        b"+OK not a reply",
        b"A1 OK not a tagged reply",
        b"250 not a reply either",
        b"end",
    ]) + CRLF


def eight_bit() -> bytes:
    return message(
        "8-bit body",
        "Grüße aus Köln, ½ € — ünïcödé\r\nΚαλημέρα κόσμε\r\n".encode(),
        extra=[b"Content-Type: text/plain; charset=utf-8", b"Content-Transfer-Encoding: 8bit"],
    )


def large(size: int, seed: int, subject: str = "large", **fields: str) -> bytes:
    """A message of about ``size`` bytes: base64 lines of random data, with
    a dot-stuffing trap every so often."""
    rng = random.Random(seed)
    lines = []
    total = 0
    n = 0
    while total < size:
        n += 1
        if n % 997 == 0:
            line = b"." + base64.b64encode(rng.randbytes(54))
        else:
            line = base64.b64encode(rng.randbytes(57))
        lines.append(line)
        total += len(line) + 2
    body = CRLF.join(lines) + CRLF
    return message(subject, body, extra=[b"Content-Type: application/octet-stream",
                                         b"Content-Transfer-Encoding: base64"], **fields)


def corpus() -> list[bytes]:
    """What the fetch tests put in a mailbox and expect back byte for byte."""
    return [
        message("plain", b"Hello from the end-to-end suite.\r\n"),
        message("dots and lookalikes", tricky_body()),
        eight_bit(),
        message("empty body", b""),
        large(4 * 1024 * 1024, seed=1, subject="four megabytes"),
    ]


def body_of(data: bytes) -> bytes:
    """The body of a message, line ends normalised to LF."""
    data = data.replace(CRLF, b"\n")
    _, sep, body = data.partition(b"\n\n")
    assert sep, "no header/body separator"
    return body


def headers_of(data: bytes) -> bytes:
    data = data.replace(CRLF, b"\n")
    return data.partition(b"\n\n")[0] + b"\n"
