"""The chunking matrix for sans-IO protocol tests.

A transcript is a sequence of steps. A ``bytes`` step is what the peer sends;
it is fed to ``receive_data`` cut into chunks. A callable step plays the
driver, e.g. ``lambda s: s.auth_failed("Invalid login")``, and returns the
events the call produced. ``run`` plays the transcript once per chunking,
whole, line by line, byte by byte and in seeded random chunks, on a fresh
session each time, and asserts that every chunking yields the same events
(and the same ``inspect`` result, for checks of the final state such as
``pending_input()``).

Usage::

    from tests.unit.chunking import run

    result = run(lambda: Pop3Session(settings), [b"NOOP\\r\\n", b"QUIT\\r\\n"])
    assert result.sent == b"+OK POP3 ready\\r\\n+OK\\r\\n+OK\\r\\n"
"""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailgate.protocol.base import Close, Event, Log, Send
from mailgate.protocol.sasl import decode_base64

Step = bytes | Callable[[Any], list[Event]]
Splitter = Callable[[bytes], list[bytes]]

DEFAULT_SEEDS = range(8)
# Random chunks are 1..RANDOM_CHUNK_MAX bytes long: small enough to cut most
# lines, tokens and CRLFs in the middle.
RANDOM_CHUNK_MAX = 7


@dataclass
class Run:
    """The outcome of a transcript, identical under every chunking."""

    events: list[Event]
    inspected: Any = None
    chunkings: list[str] = field(default_factory=list)

    @property
    def sent(self) -> bytes:
        """Every ``Send`` payload, concatenated."""
        return b"".join(event.data for event in self.events if isinstance(event, Send))

    @property
    def logs(self) -> list[Log]:
        return [event for event in self.events if isinstance(event, Log)]

    @property
    def closed(self) -> bool:
        return any(isinstance(event, Close) for event in self.events)

    def of_type(self, kind: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]


def whole(data: bytes) -> list[bytes]:
    return [data] if data else []


def by_line(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def randomly(seed: int) -> Splitter:
    rng = random.Random(seed)

    def split(data: bytes) -> list[bytes]:
        chunks, i = [], 0
        while i < len(data):
            size = rng.randint(1, RANDOM_CHUNK_MAX)
            chunks.append(data[i : i + size])
            i += size
        return chunks

    return split


def splitters(seeds: Iterable[int] = DEFAULT_SEEDS) -> Iterator[tuple[str, Splitter]]:
    yield "whole", whole
    yield "lines", by_line
    yield "bytes", by_byte
    for seed in seeds:
        yield f"random-{seed}", randomly(seed)


def play(
    session: Any, transcript: Sequence[Step], split: Splitter, *, start: bool = True
) -> list[Event]:
    """Play ``transcript`` once, cutting each bytes step with ``split``."""
    events: list[Event] = list(session.start()) if start else []
    for step in transcript:
        if isinstance(step, bytes):
            for chunk in split(step):
                events.extend(session.receive_data(chunk))
        else:
            events.extend(step(session))
    return events


def run(
    make_session: Callable[[], Any],
    transcript: Sequence[Step],
    *,
    start: bool = True,
    seeds: Iterable[int] = DEFAULT_SEEDS,
    inspect: Callable[[Any], Any] | None = None,
) -> Run:
    """Play ``transcript`` under every chunking; all must agree."""
    reference: Run | None = None
    for name, split in splitters(seeds):
        session = make_session()
        events = play(session, transcript, split, start=start)
        inspected = inspect(session) if inspect is not None else None
        if reference is None:
            reference = Run(events, inspected, [name])
            continue
        assert events == reference.events, (
            f"chunking {name!r} differs from {reference.chunkings[0]!r}:\n"
            f"  {name}: {_describe(events)}\n  {reference.chunkings[0]}: "
            f"{_describe(reference.events)}"
        )
        assert inspected == reference.inspected, (
            f"chunking {name!r}: {inspected!r} != {reference.inspected!r}"
        )
        reference.chunkings.append(name)
    assert reference is not None
    return reference


def _describe(events: list[Event]) -> list[object]:
    # Send's repr hides its payload; show it here, where it is test data.
    return [event.data if isinstance(event, Send) else event for event in events]


def b64(data: bytes | str) -> bytes:
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


def assert_secret_kept_out(result: Run, transcript: Sequence[Step], secret: str) -> None:
    """Every log line is info, and none holds ``secret``: neither in clear
    nor as any base64 token of the transcript that decodes to contain it."""
    for log in result.logs:
        assert secret not in log.message
        assert log.level == "info"
    for step in transcript:
        if isinstance(step, bytes):
            for token in re.findall(rb"[A-Za-z0-9+/=]{8,}", step):
                if secret.encode() in (decode_base64(token) or b""):
                    assert all(token.decode() not in log.message for log in result.logs)
