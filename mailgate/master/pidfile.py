"""The pid file: written by the master, read by ``mailgate stop|reload|...``."""

from __future__ import annotations

import os

from mailgate.errors import StartupError


def read(path: str) -> int | None:
    """The pid in ``path``, or None when there is no usable pid file."""
    try:
        with open(path, encoding="ascii") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie does not: a daemon whose parent is an
    init that does not reap (some containers) stays one after it exits, and
    ``mailgate stop`` must not wait for it forever."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def running(path: str) -> int | None:
    """The pid of a live master named by ``path``, else None."""
    pid = read(path)
    if pid is not None and pid != os.getpid() and alive(pid):
        return pid
    return None


def write(path: str) -> None:
    """Write our pid atomically; refuse when another live master owns the file."""
    other = running(path)
    if other is not None:
        raise StartupError(f'pid file "{path}" names a running process {other}: is mailgate already running?')
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "w", encoding="ascii") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(temp, path)


def remove(path: str) -> None:
    """Remove the pid file if it is still ours."""
    if read(path) == os.getpid():
        try:
            os.unlink(path)
        except OSError:
            pass
