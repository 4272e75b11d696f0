"""The ``env`` directive: what a worker's environment keeps (nginx's rule)."""

from __future__ import annotations

import os

from mailgate.worker.process import apply_env


def test_env_keeps_tz_and_listed_names_and_sets_values(monkeypatch):
    env = {"TZ": "UTC", "HOME": "/root", "PATH": "/bin", "SECRET": "x"}
    monkeypatch.setattr(os, "environ", env)
    apply_env(("HOME", "GREETING=hello world", "ABSENT"))
    assert env == {"TZ": "UTC", "HOME": "/root", "GREETING": "hello world"}
