"""The pid file helpers: a zombie is not a running master."""

from __future__ import annotations

import os
import time

from mailgate.master import pidfile


def test_a_zombie_is_not_alive():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        # Not reaped yet: the child is a zombie until waitpid below.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        assert not pidfile.alive(pid)
    finally:
        os.waitpid(pid, 0)
    assert not pidfile.alive(pid)


def test_this_process_is_alive_and_running_ignores_itself(tmp_path):
    assert pidfile.alive(os.getpid())
    path = tmp_path / "x.pid"
    pidfile.write(str(path))
    assert pidfile.read(str(path)) == os.getpid()
    assert pidfile.running(str(path)) is None  # our own pid is not "another master"
    pidfile.remove(str(path))
    assert not path.exists()
