"""Used only by bench/memory_probe.py (on PYTHONPATH for the mailgate it starts).

When MAILGATE_BENCH_TRACEMALLOC names a file prefix, each mailgate worker
starts tracemalloc when it starts serving, and whenever ``<prefix>.<n>``
appears it writes a tracemalloc snapshot to ``<prefix>.<n>.snap``. mailgate
itself is not changed: its worker module is wrapped as it is imported.
"""

import importlib.abc
import importlib.util
import os
import sys

_PREFIX = os.environ.get("MAILGATE_BENCH_TRACEMALLOC")
_FRAMES = int(os.environ.get("MAILGATE_BENCH_TRACEMALLOC_FRAMES", "12"))


def _patch(module) -> None:
    original = module.Worker.run

    def run(self, ready_fd):
        import tracemalloc

        import gevent

        tracemalloc.start(_FRAMES)

        def watch() -> None:
            n = 0
            while True:
                gevent.sleep(0.2)
                trigger = f"{_PREFIX}.{n}"
                if os.path.exists(trigger):
                    tracemalloc.take_snapshot().dump(trigger + ".snap.tmp")
                    os.rename(trigger + ".snap.tmp", trigger + ".snap")
                    n += 1

        gevent.spawn(watch)
        return original(self, ready_fd)

    module.Worker.run = run


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "mailgate.worker.process":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if _PREFIX:
    sys.meta_path.insert(0, _Hook())
