"""The edge of a session, before its protocol speaks: the PROXY protocol
header from a load balancer (SPEC 3.1), the TLS handshake (implicit TLS and
STARTTLS, SPEC 3.2, 3.3) and, for the backend, the PROXY header mailgate
sends itself (SPEC 9.2).

The inbound header is read with MSG_PEEK and then exactly its own bytes are
consumed, so whatever follows (a TLS ClientHello, the first command) stays in
the socket for the next phase. Unlike nginx, a header split across several
TCP segments is accepted (SPEC 12 item 16).
"""

from __future__ import annotations

import socket
import ssl
import time

import gevent

from mailgate import tls

from mailgate.protocol.proxy_protocol import (
    V2_MAX_HEADER,
    ProxyError,
    ProxyHeader,
    ProxyHeaderReader,
    TlsFacts,
    encode_v1,
    encode_v2,
)

# Largest header there is: a v2 header with the most TLVs mailgate accepts.
PEEK_SIZE = V2_MAX_HEADER
# An incomplete header is looked at again this often until ``timeout``.
PEEK_INTERVAL = 0.02


class EdgeClosed(Exception):
    """The connection ends here; what happened has been logged."""


def read_proxy_header(sock: socket.socket, timeout: float, log) -> ProxyHeader:  # noqa: ANN001
    """Read one PROXY v1/v2 header within ``timeout``, consuming only it."""
    log.ctx.action = "reading PROXY protocol"
    deadline = time.monotonic() + timeout
    seen = -1
    while True:
        data = _peek(sock, deadline, log)
        if len(data) != seen:
            seen = len(data)
            result = ProxyHeaderReader().feed(data)
            if isinstance(result, ProxyError):
                log.log(result.level, result.message)
                raise EdgeClosed()
            if result is not None:
                sock.recv(result.header.consumed)  # already buffered: one read takes it
                return result.header
        if time.monotonic() >= deadline:
            _timed_out(log)
        gevent.sleep(PEEK_INTERVAL)


def _peek(sock: socket.socket, deadline: float, log) -> bytes:  # noqa: ANN001
    left = deadline - time.monotonic()
    if left <= 0:
        _timed_out(log)
    sock.settimeout(left)
    try:
        data = sock.recv(PEEK_SIZE, socket.MSG_PEEK)
    except TimeoutError:
        _timed_out(log)
    except OSError as err:
        log.log("info", f"recv() failed ({err.errno}: {err.strerror})")
        raise EdgeClosed() from None
    if not data:
        raise EdgeClosed()
    return data


def _timed_out(log) -> None:  # noqa: ANN001
    log.log("info", "client timed out (110: Connection timed out)")
    raise EdgeClosed()


def handshake(sock: socket.socket, server_tls: tls.ServerTls, timeout: float, log) -> ssl.SSLSocket:  # noqa: ANN001
    """TLS as the server within ``timeout``; a failure closes silently, with
    nginx's line when OpenSSL refused the client's certificate (SPEC 3.2)."""
    log.ctx.action = "SSL handshaking"
    sslsock = server_tls.wrap(sock)
    sslsock.settimeout(max(timeout, 0.001))
    try:
        sslsock.do_handshake()
    except TimeoutError:
        sslsock.close()
        _timed_out(log)
    except (ssl.SSLError, OSError) as err:
        sslsock.close()
        refused = tls.handshake_failure(err)
        log.log("info", refused or f"SSL_do_handshake() failed ({_ssl_reason(err)})")
        raise EdgeClosed() from None
    return sslsock


def _ssl_reason(err: BaseException) -> str:
    if isinstance(err, ssl.SSLError):
        return f"SSL: {err.reason or err.strerror or err}"
    if isinstance(err, OSError):
        return f"{err.errno}: {err.strerror}"
    return str(err)


def tlvs_of(sslsock: ssl.SSLSocket, facts) -> TlsFacts:  # noqa: ANN001
    """What PROXY v2 tells the backend of the client's TLS (SPEC 9.2)."""
    return TlsFacts(
        sni=facts.sni or None,
        alpn=sslsock.selected_alpn_protocol(),
        version=facts.protocol or None,
        cipher=facts.cipher or None,
        verified=facts.verify == "SUCCESS",
        client_cert=bool(facts.fingerprint),
    )


def proxy_header_out(version: str, client: tuple[str, int] | None, local: object, tls=None) -> bytes:  # noqa: ANN001
    """The header for the backend (``proxy_protocol on|v2``). The destination
    is mailgate's own address of the client connection, not one from an
    inbound header (SPEC 9.2)."""
    if version == "v2":
        return encode_v2(client, local, tls)
    return encode_v1(client, local)
