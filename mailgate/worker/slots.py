"""``worker_connections``: how many sessions one worker serves at once.

gevent's ``Pool`` frees a slot when the greenlet it spawned exits, but a
mailgate session outlives its greenlet: once logged in, the relay runs on the
hub's watchers (mailgate.relay) and the greenlet is gone. ``SessionSlots``
takes a slot when the listener hands over a connection and gives it back
only when the session says it has ended (``release``).
"""

from __future__ import annotations

from typing import Any, Callable

import gevent
from gevent.event import Event
from gevent.lock import BoundedSemaphore
from gevent.server import StreamServer


class SessionSlots:
    """Spawner for ``StreamServer``: it uses ``spawn`` and ``full``, and
    rawlinks ``_semaphore`` to resume accepting when a slot frees (as it does
    with a Pool)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._semaphore = BoundedSemaphore(size)
        self._idle = Event()
        self._idle.set()

    def full(self) -> bool:
        return self._semaphore.counter <= 0

    def spawn(self, func: Callable[..., Any], *args: Any) -> gevent.Greenlet:
        # The server checks full() before it accepts, so this never waits.
        self._semaphore.acquire()
        self._idle.clear()
        return gevent.spawn(func, *args)

    def release(self) -> None:
        self._semaphore.release()
        if self._semaphore.counter >= self.size:
            self._idle.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no session is left; False if ``timeout`` came first."""
        return self._idle.wait(timeout)


class SessionServer(StreamServer):
    """A StreamServer that leaves closing the client socket to the session,
    which may go on after its handler returned."""

    def do_close(self, sock: Any, *args: Any) -> None:
        pass
