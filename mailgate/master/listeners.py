"""Listening sockets: bound by the master, inherited by the workers.

On reload the sockets whose identity (family, address, port or path) is
unchanged are kept, file descriptor and backlog queue included, so no
connection waiting to be accepted is lost; new ones are bound and removed ones
closed (SPEC 11, HUP).
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from mailgate.config.model import Binding, Config, KeepAlive, Listen
from mailgate.errors import StartupError

FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}

# TCP keepalive knobs behind so_keepalive=idle:intvl:cnt (Linux names).
KEEPALIVE_OPTIONS = (
    ("idle", getattr(socket, "TCP_KEEPIDLE", None)),
    ("interval", getattr(socket, "TCP_KEEPINTVL", None)),
    ("count", getattr(socket, "TCP_KEEPCNT", None)),
)


def bind(listen: Listen) -> socket.socket:
    """Create, configure, bind and listen one socket, with nginx's options."""
    family = FAMILIES[listen.family]
    if family == socket.AF_UNIX:
        _remove_stale_unix_socket(listen.host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        _configure(sock, listen)
        sock.bind(_address(listen))
        sock.listen(listen.backlog)
    except OSError as err:
        sock.close()
        raise StartupError(f'bind() to {listen.text} failed ({err.errno}: {err.strerror})') from err
    sock.set_inheritable(True)
    return sock


def _address(listen: Listen) -> object:
    if listen.family == "unix":
        return listen.host
    return (listen.host, listen.port)


def _configure(sock: socket.socket, listen: Listen) -> None:
    if listen.family != "unix":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if listen.family == "inet6":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(listen.ipv6only))
    if listen.rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, listen.rcvbuf)
    if listen.sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, listen.sndbuf)
    apply_keepalive(sock, listen.so_keepalive)


def apply_keepalive(sock: socket.socket, setting: bool | KeepAlive | None) -> None:
    """so_keepalive on accepted sockets inherits from the listener on Linux."""
    if setting is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(setting is not False))
    if isinstance(setting, KeepAlive):
        for name, option in KEEPALIVE_OPTIONS:
            value = getattr(setting, name)
            if value is not None and option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


def _remove_stale_unix_socket(path: str) -> None:
    """A socket file left by a crashed run is removed; a live one is an error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f'bind() to unix:{path} failed ({errno.EADDRINUSE}: file exists and is not a socket)')
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except OSError:
        return
    finally:
        probe.close()
    raise StartupError(f"bind() to unix:{path} failed ({errno.EADDRINUSE}: Address already in use)")


class Prepared:
    """A socket set bound for a new configuration, not yet in force."""

    def __init__(self, sockets: dict, listens: dict) -> None:
        self.sockets = sockets
        self.listens = listens


class Listeners:
    """The master's set of bound sockets, keyed by Listen.key."""

    def __init__(self) -> None:
        self.sockets: dict[tuple[str, str, int], socket.socket] = {}
        self.listens: dict[tuple[str, str, int], Listen] = {}

    def bind_all(self, config: Config) -> None:
        self.sockets, self.listens = self._bind_for(config)

    def _bind_for(self, config: Config) -> tuple[dict, dict]:
        sockets: dict[tuple[str, str, int], socket.socket] = {}
        listens: dict[tuple[str, str, int], Listen] = {}
        try:
            for binding in config.bindings:
                key = binding.listen.key
                kept = self.sockets.get(key)
                if kept is not None:
                    # listen(2) again applies a changed backlog to the kept socket.
                    kept.listen(binding.listen.backlog)
                    sockets[key] = kept
                else:
                    sockets[key] = bind(binding.listen)
                listens[key] = binding.listen
        except StartupError:
            for key, sock in sockets.items():
                if key not in self.sockets:
                    self._close(sock, listens.get(key))
            raise
        return sockets, listens

    def prepare(self, config: Config) -> Prepared:
        """Reload, step 1: the socket set for ``config``, keeping matching
        sockets and binding new ones. Nothing is closed yet; a bind failure
        raises with the running set untouched."""
        sockets, listens = self._bind_for(config)
        return Prepared(sockets, listens)

    def commit(self, prepared: Prepared) -> None:
        """Reload, step 2: switch to the prepared set, closing removed sockets."""
        for key, sock in self.sockets.items():
            if key not in prepared.sockets:
                self._close(sock, self.listens[key])
        self.sockets, self.listens = prepared.sockets, prepared.listens

    def rollback(self, prepared: Prepared) -> None:
        """Reload abandoned: close what ``prepare`` newly bound."""
        for key, sock in prepared.sockets.items():
            if key not in self.sockets:
                self._close(sock, prepared.listens[key])

    def socket_for(self, binding: Binding) -> socket.socket:
        return self.sockets[binding.listen.key]

    def close_all(self, unlink: bool = True) -> None:
        for key, sock in self.sockets.items():
            self._close(sock, self.listens[key] if unlink else None)
        self.sockets.clear()
        self.listens.clear()

    @staticmethod
    def _close(sock: socket.socket, listen: Listen | None) -> None:
        sock.close()
        if listen is not None and listen.family == "unix":
            try:
                os.unlink(listen.host)
            except OSError:
                pass
