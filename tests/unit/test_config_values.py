"""nginx's value syntaxes: times, sizes, numbers (ngx_parse.c)."""

from __future__ import annotations

import pytest

from mailgate.config.values import atoi, parse_size, parse_time_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("30", 30_000),
        ("0", 0),
        ("30s", 30_000),
        ("500ms", 500),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("1w", 7 * 86_400_000),
        ("1h30m", 5_400_000),
        ("1h 30m", 5_400_000),
        ("1m 30", 90_000),
        ("1s 500ms", 1_500),
        ("24h", 86_400_000),
    ],
)
def test_times(text: str, ms: int) -> None:
    assert parse_time_ms(text) == ms


@pytest.mark.parametrize(
    "text",
    ["", "s", "abc", "1x", "-1", "1.5s", "30m 1h", "1s1s", "1M", "1y", "30 5s", "1 h", " "],
)
def test_invalid_times(text: str) -> None:
    assert parse_time_ms(text) is None


def test_seconds_only_times_allow_months_and_years_but_not_ms() -> None:
    assert parse_time_ms("1y", seconds_only=True) == 365 * 86_400_000
    assert parse_time_ms("1M", seconds_only=True) == 30 * 86_400_000
    assert parse_time_ms("5ms", seconds_only=True) is None


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("512", 512), ("4k", 4096), ("4K", 4096), ("1m", 1 << 20), ("1M", 1 << 20),
     ("1g", 1 << 30)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "k", "4kb", "-1", "1.5k", "4 k", "x"])
def test_invalid_sizes(text: str) -> None:
    assert parse_size(text) is None


def test_atoi() -> None:
    assert atoi("0") == 0 and atoi("0123") == 123
    assert atoi("") is None and atoi("+1") is None and atoi("1 ") is None
    assert atoi("١") is None  # a non-ASCII digit
    assert atoi("9" * 30) is None
