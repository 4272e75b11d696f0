"""Listening sockets as the master binds them."""

from __future__ import annotations

import socket

import pytest

from mailgate.config.model import KeepAlive, Listen, Source
from mailgate.errors import StartupError
from mailgate.master.listeners import bind

SRC = Source("test.conf", 1)


def listen(**kwargs) -> Listen:
    defaults = dict(text="127.0.0.1:0", family="inet", host="127.0.0.1", port=0, source=SRC)
    defaults.update(kwargs)
    return Listen(**defaults)


def test_binds_ipv4_with_options():
    sock = bind(listen(rcvbuf=65536, sndbuf=65536, backlog=16, so_keepalive=KeepAlive(30, 10, 3)))
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert sock.get_inheritable()
    finally:
        sock.close()


def test_so_keepalive_off_is_set_off():
    sock = bind(listen(so_keepalive=False))
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    finally:
        sock.close()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_binds_ipv6_only_by_default():
    try:
        sock = bind(listen(text="[::1]:0", family="inet6", host="::1"))
    except StartupError:
        pytest.skip("::1 not available")
    try:
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        sock.close()


def test_bind_failure_names_the_address():
    first = bind(listen())
    port = first.getsockname()[1]
    try:
        with pytest.raises(StartupError, match=rf"bind\(\) to 127.0.0.1:{port} failed \(98: Address already in use\)"):
            bind(listen(text=f"127.0.0.1:{port}", port=port))
    finally:
        first.close()


def test_stale_unix_socket_is_replaced(tmp_path):
    path = str(tmp_path / "s.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: what a crash leaves
    sock = bind(listen(text=f"unix:{path}", family="unix", host=path))
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        client.close()
    finally:
        sock.close()


def test_live_unix_socket_is_not_stolen(tmp_path):
    path = str(tmp_path / "s.sock")
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen(1)
    try:
        with pytest.raises(StartupError, match="Address already in use"):
            bind(listen(text=f"unix:{path}", family="unix", host=path))
    finally:
        live.close()


def test_regular_file_is_not_removed(tmp_path):
    path = tmp_path / "not-a-socket"
    path.write_text("data")
    with pytest.raises(StartupError, match="not a socket"):
        bind(listen(text=f"unix:{path}", family="unix", host=str(path)))
    assert path.read_text() == "data"
