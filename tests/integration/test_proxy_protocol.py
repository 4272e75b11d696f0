"""PROXY protocol through the real mailgate: from a load balancer in front
(v1 and v2, trusted or not, split across reads, malformed), and towards the
backend (``proxy_protocol on|v2``), checked byte for byte."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from mailgate.protocol.proxy_protocol import crc32c, encode_v2
from tests.fakes.auth_server import FakeAuthServer, ok
from tests.integration.harness import recv_all, recv_tagged, recv_until

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


@pytest.fixture
def auth(imap_backend) -> FakeAuthServer:
    with FakeAuthServer(ok("127.0.0.1", imap_backend.port)) as server:
        yield server


@pytest.fixture
def imap(make_mailgate, auth):
    def make(listen_params: str = "proxy_protocol", server: str = ""):
        mg = make_mailgate(auth.port, protocol="imap", start=False, server=server)
        text = mg.conf.read_text().replace(f"listen 127.0.0.1:{mg.port};", f"listen 127.0.0.1:{mg.port} {listen_params};")
        mg.write_config(text)
        return mg.start()

    return make


def login(sock: socket.socket, prefix: bytes = b"") -> bytes:
    sock.sendall(prefix)
    assert recv_until(sock, b"\r\n") == b"* OK IMAP4 ready\r\n"
    sock.sendall(b"a1 LOGIN alice wonderland\r\n")
    return recv_tagged(sock, b"a1")


def connect(port: int) -> socket.socket:
    for _ in range(100):
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except ConnectionRefusedError:
            time.sleep(0.05)
    raise AssertionError("mailgate is not listening")


def test_v1_from_a_trusted_balancer_sets_the_client_address(imap, auth):
    mg = imap(server="        set_real_ip_from 127.0.0.0/8;")
    sock = connect(mg.port)
    reply = login(sock, f"PROXY TCP4 192.0.2.7 127.0.0.1 40000 {mg.port}\r\n".encode())
    assert reply.endswith(b"a1 OK Logged in\r\n")
    request = auth.requests[0]
    assert request.header("Client-IP") == "192.0.2.7"
    assert request.header("Proxy-Protocol-Addr") == "192.0.2.7"
    assert request.header("Proxy-Protocol-Port") == "40000"
    assert request.header("Proxy-Protocol-Server-Addr") == "127.0.0.1"
    assert request.header("Proxy-Protocol-Server-Port") == str(mg.port)
    # The accept line shows the balancer; later lines the real client (SPEC 3.1).
    mg.wait_log(rf"client 127\.0\.0\.1:\d+ connected to 127\.0\.0\.1:{mg.port}")
    mg.wait_log(r"client logged in, client: 192\.0\.2\.7, server:")


def test_v1_from_an_untrusted_peer_is_reported_but_not_believed(imap, auth):
    mg = imap()
    sock = connect(mg.port)
    assert login(sock, b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 143\r\n").endswith(b"a1 OK Logged in\r\n")
    request = auth.requests[0]
    assert request.header("Client-IP") == "127.0.0.1"
    assert request.header("Proxy-Protocol-Addr") == "192.0.2.7"


def test_v2_split_across_reads(imap, auth):
    mg = imap(server="        set_real_ip_from 127.0.0.1;")
    header = encode_v2(("2001:db8::7", 40000), ("::1", 143))
    sock = connect(mg.port)
    for offset in range(0, len(header), 7):  # seven bytes at a time, with pauses
        sock.sendall(header[offset:offset + 7])
        time.sleep(0.03)
    assert login(sock).endswith(b"a1 OK Logged in\r\n")
    assert auth.requests[0].header("Client-IP") == "2001:db8::7"


def test_v2_local_command_keeps_the_peer(imap, auth):
    mg = imap(server="        set_real_ip_from 127.0.0.1;")
    local = V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    sock = connect(mg.port)
    assert login(sock, local).endswith(b"a1 OK Logged in\r\n")
    request = auth.requests[0]
    assert request.header("Client-IP") == "127.0.0.1" and request.header("Proxy-Protocol-Addr") is None


@pytest.mark.parametrize(
    ("header", "log"),
    [
        (b"PROXY TCP4 300.1.2.3 127.0.0.1 1 2\r\n", r'broken header: "PROXY TCP4 300\.1\.2\.3 127\.0\.0\.1 1 2"'),
        (b"GET / HTTP/1.0\r\n", r'broken header: "GET / HTTP/1\.0"'),
        (V2_SIGNATURE + bytes([0x31, 0x11]) + struct.pack("!H", 12) + bytes(12), "unknown PROXY protocol version: 3"),
    ],
    ids=["bad-address", "not-proxy", "v3"],
)
def test_malformed_header_closes_without_a_word(imap, header, log):
    mg = imap()
    sock = connect(mg.port)
    sock.sendall(header)
    assert recv_all(sock) == b""
    mg.wait_log(rf"\[error\] .*{log} while reading PROXY protocol, client: 127\.0\.0\.1")


def test_no_header_times_out(imap):
    mg = imap()
    mg.write_config(mg.conf.read_text().replace("timeout 10s;", "timeout 1s;"))
    mg.reload()
    sock = connect(mg.port)
    assert recv_all(sock) == b""
    mg.wait_log(r"client timed out \(110: Connection timed out\) while reading PROXY protocol")


def test_header_v1_to_the_backend(imap, imap_backend):
    mg = imap(server="        set_real_ip_from 127.0.0.1;\n        proxy_protocol on;")
    sock = connect(mg.port)
    local_port = mg.port
    assert login(sock, b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 143\r\n").endswith(b"a1 OK Logged in\r\n")
    # Source: the real client; destination: mailgate's own end (SPEC 9.2).
    assert imap_backend.proxy_headers == [f"PROXY TCP4 192.0.2.7 127.0.0.1 40000 {local_port}\r\n".encode()]


def test_header_v2_to_the_backend(imap, imap_backend):
    mg = imap(listen_params="", server="        proxy_protocol v2;")
    sock = connect(mg.port)
    assert login(sock).endswith(b"a1 OK Logged in\r\n")
    (header,) = imap_backend.proxy_headers
    assert header[:12] == V2_SIGNATURE and header[12:14] == b"\x21\x11"
    length = struct.unpack("!H", header[14:16])[0]
    assert length == 19 and len(header) == 16 + 19  # 12 address bytes + the CRC32C TLV
    src, dst, sport, dport = header[16:20], header[20:24], header[24:26], header[26:28]
    assert socket.inet_ntoa(src) == "127.0.0.1" and socket.inet_ntoa(dst) == "127.0.0.1"
    assert struct.unpack("!H", dport)[0] == mg.port and struct.unpack("!H", sport)[0] != 0
    assert header[28:31] == b"\x03\x00\x04"
    zeroed = header[:31] + bytes(4)
    assert struct.unpack("!I", header[31:35])[0] == crc32c(zeroed)
