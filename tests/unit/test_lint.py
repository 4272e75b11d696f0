"""DESIGN.md's checks: ruff over the package, mypy --strict on the sans-IO
protocol layer and the configuration. Skipped only where the tools are not
installed (the Debian package build runs the unit tests with Debian's
libraries); ``make test`` installs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip(module)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=170)


def test_ruff_finds_nothing() -> None:
    result = run("ruff", "check", "--output-format", "concise", "mailgate")
    assert result.returncode == 0, result.stdout + result.stderr


def test_protocol_and_config_are_strictly_typed() -> None:
    result = run("mypy", "--strict", "--no-error-summary", "mailgate/protocol", "mailgate/config")
    assert result.returncode == 0, result.stdout + result.stderr
