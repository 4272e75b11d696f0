"""The worker's entry point, called in the child right after fork.

gevent must patch the standard library before anything that uses sockets is
imported, so this module imports nothing of the worker until it has done so.
The master imports only this module, lazily, in the child.
"""

from __future__ import annotations


def run_worker(config, sockets: dict, registry, master_pid: int, ready_fd: int) -> int:  # noqa: ANN001
    """Patch, then serve until told to stop; returns the exit code."""
    from gevent import monkey

    monkey.patch_all()
    from mailgate.worker.process import Worker

    return Worker(config, sockets, registry, master_pid).run(ready_fd)
