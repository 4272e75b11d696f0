"""auth_transport's connection plumbing: the kept-socket check and the connect."""

from __future__ import annotations

import socket
import time

import pytest
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from mailgate.auth_transport import CURRENT, Exchange, NginxHTTPConnection, UnixHTTPConnection


@pytest.fixture
def pair():  # noqa: ANN201
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def kept(sock: socket.socket) -> NginxHTTPConnection:
    conn = NginxHTTPConnection("127.0.0.1", 80)
    conn.sock = sock
    return conn


def test_an_open_quiet_socket_is_connected(pair) -> None:  # noqa: ANN001
    ours, _ = pair
    ours.settimeout(7.5)
    assert kept(ours).is_connected
    assert ours.gettimeout() == 7.5  # the check leaves the socket as it found it


def test_a_socket_closed_by_the_peer_is_not(pair) -> None:  # noqa: ANN001
    ours, theirs = pair
    theirs.close()
    assert not kept(ours).is_connected


def test_unasked_data_makes_a_socket_unusable_and_is_not_consumed(pair) -> None:  # noqa: ANN001
    ours, theirs = pair
    ours.settimeout(None)
    theirs.sendall(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    time.sleep(0.05)
    assert not kept(ours).is_connected
    assert ours.gettimeout() is None
    assert ours.recv(4) == b"HTTP"


def test_a_socket_in_error_or_none_is_not() -> None:
    with socket.socket() as never:
        assert not kept(never).is_connected  # recv() fails: ENOTCONN
    assert not NginxHTTPConnection("127.0.0.1", 80).is_connected  # no socket at all


def test_connects_to_the_ip_literal_with_nodelay() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        conn = NginxHTTPConnection("127.0.0.1", listener.getsockname()[1], timeout=2.0)
        conn.connect()
        try:
            assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert conn.sock.gettimeout() == 2.0
        finally:
            conn.close()


def test_connects_over_ipv6() -> None:
    try:
        listener = socket.socket(socket.AF_INET6)
        listener.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with listener:
        listener.listen()
        conn = NginxHTTPConnection("::1", listener.getsockname()[1], timeout=2.0)
        conn.connect()
        try:
            assert conn.sock.family == socket.AF_INET6
        finally:
            conn.close()


def test_the_send_after_a_connect_gets_what_is_left_of_the_exchange() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        conn = NginxHTTPConnection("127.0.0.1", listener.getsockname()[1], timeout=30.0)
        token = CURRENT.set(Exchange("/", [], time.monotonic() + 2.0))
        try:
            conn.connect()
            assert 1.0 < conn.sock.gettimeout() <= 2.0
        finally:
            CURRENT.reset(token)
            conn.close()


def test_a_connect_past_the_deadline_is_a_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        conn = NginxHTTPConnection("127.0.0.1", listener.getsockname()[1], timeout=30.0)
        token = CURRENT.set(Exchange("/", [], time.monotonic() - 1.0))
        try:
            with pytest.raises(ConnectTimeoutError) as caught:
                conn.connect()
            assert not isinstance(caught.value, NewConnectionError)
        finally:
            CURRENT.reset(token)
            conn.close()


def test_connect_errors_are_urllib3s() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(NewConnectionError) as caught:
        NginxHTTPConnection("127.0.0.1", port, timeout=2.0).connect()
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    with pytest.raises(NewConnectionError) as caught:
        UnixHTTPConnection("localhost", None, timeout=2.0, socket_path="/nonexistent/auth.sock").connect()
    assert isinstance(caught.value.__cause__, FileNotFoundError)
