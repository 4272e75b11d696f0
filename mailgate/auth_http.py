"""The auth_http protocol (SPEC 8): the request, the response, the decision.

The pure part builds nginx's request headers (``build_headers``,
``build_request``) and turns a response head into an ``AuthResult``
(``parse_response``), exactly as nginx does. ``AuthHttpClient`` does the I/O:
one per worker process, keeping connections to auth servers alive through
requests' transport adapter; the plumbing that makes requests speak nginx's
dialect is in ``auth_transport``.

Passwords (the client's, and Auth-Pass from the server) never reach a log
message built here.
"""

from __future__ import annotations

import errno as errnos
import http.client
import ipaddress
import os
import time
from collections.abc import Iterable, Iterator

import requests
import urllib3.exceptions

from mailgate import auth
from mailgate.auth import AuthRequest, AuthResult
from mailgate.auth_transport import (
    CURRENT,
    DONE,
    INVALID_HEADER,
    INVALID_RESPONSE,
    AuthHttpAdapter,
    Exchange,
    HeadReadError,
    HeadResponse,
    ResponseHead,
    scan_response_head,
    target_url,
)
from mailgate.config.model import AuthHttpUrl
from mailgate.protocol.base import text, wire

# SMTP's reply code for a failed login when the server sends no
# Auth-Error-Code (ngx_mail_smtp_errcode, SPEC 8.5).
SMTP_DEFAULT_ERROR_CODE = "535 5.7.0"
# Client-Host when no lookup was made (nginx: resolver off).
UNAVAILABLE = "[UNAVAILABLE]"

# --- the request (SPEC 8.2) -------------------------------------------------

# NGX_ESCAPE_MAIL_AUTH: control bytes, SP and "%" become %XX (upper-case hex);
# every other byte, 0x7F and bytes >= 0x80 included, is sent raw.
_ESCAPED = frozenset(range(0x21)) | {0x25}


def escape(value: bytes) -> bytes:
    """nginx's escaping of Auth-User, Auth-Pass and Auth-SSL-Cert."""
    if not any(byte in _ESCAPED for byte in value):
        return value
    return b"".join(b"%%%02X" % byte if byte in _ESCAPED else bytes((byte,)) for byte in value)


def build_headers(
    url: AuthHttpUrl, request: AuthRequest, extra: Iterable[tuple[str, str]] = ()
) -> list[tuple[str, bytes]]:
    """The header lines of nginx's auth request, in nginx's order."""
    creds = request.credentials
    lines: list[tuple[str, bytes]] = [
        ("Host", wire(url.host_header)),
        ("Auth-Method", wire(creds.method)),
        ("Auth-User", escape(wire(creds.login))),
        ("Auth-Pass", escape(wire(creds.password))),
    ]
    # nginx: any method but plain, when the session has a salt (APOP and
    # CRAM-MD5 always do). The salt's own CRLF ends nginx's line.
    if creds.method != "plain" and creds.salt:
        salt = creds.salt[:-2] if creds.salt.endswith("\r\n") else creds.salt
        lines.append(("Auth-Salt", wire(salt)))
    lines += [
        ("Auth-Protocol", wire(request.protocol)),
        ("Auth-Login-Attempt", b"%d" % request.attempt),
        ("Client-IP", wire(request.client_ip)),
    ]
    if request.protocol == "smtp":
        lines.append(("Client-Host", wire(request.client_host or UNAVAILABLE)))
    if request.proxy_protocol is not None:
        src, sport, dst, dport = request.proxy_protocol
        lines += [
            ("Proxy-Protocol-Addr", wire(src)),
            ("Proxy-Protocol-Port", b"%d" % sport),
            ("Proxy-Protocol-Server-Addr", wire(dst)),
            ("Proxy-Protocol-Server-Port", b"%d" % dport),
        ]
    if creds.method == "none":
        # HELO, MAIL FROM and RCPT TO cannot hold CRLF: not escaped.
        lines += [
            ("Auth-SMTP-Helo", wire(creds.smtp_helo)),
            ("Auth-SMTP-From", wire(creds.smtp_from)),
            ("Auth-SMTP-To", wire(creds.smtp_to)),
        ]
    if request.tls is not None:
        lines += _tls_headers(request.tls)
    lines += [(name, wire(value)) for name, value in extra]
    return lines


def _tls_headers(tls: auth.AuthTls) -> list[tuple[str, bytes]]:
    lines = [("Auth-SSL", b"on")]
    for name, value in (
        ("Auth-SSL-Protocol", tls.protocol),
        ("Auth-SSL-Cipher", tls.cipher),
        ("Auth-SSL-Verify", tls.verify),
        ("Auth-SSL-Subject", tls.subject),
        ("Auth-SSL-Issuer", tls.issuer),
        ("Auth-SSL-Serial", tls.serial),
        ("Auth-SSL-Fingerprint", tls.fingerprint),
    ):
        if value:
            lines.append((name, wire(value)))
    if tls.cert:
        lines.append(("Auth-SSL-Cert", escape(wire(tls.cert))))
    # mailgate's own, after nginx's headers so their order is kept: the name
    # the client asked for by SNI (already checked to be a plain host name).
    if tls.sni:
        lines.append(("Auth-SSL-Server-Name", wire(tls.sni)))
    return lines


def build_request(url: AuthHttpUrl, request: AuthRequest, extra: Iterable[tuple[str, str]] = ()) -> bytes:
    """The whole request exactly as nginx sends it (HTTP/1.0, no Connection
    header). ``AuthHttpClient`` sends the same lines over HTTP/1.1."""
    head = [b"GET " + wire(url.uri) + b" HTTP/1.0"]
    head += [name.encode("ascii") + b": " + value for name, value in build_headers(url, request, extra)]
    return b"\r\n".join(head) + b"\r\n\r\n"


# --- the response (SPEC 8.3, 8.4) -------------------------------------------


def parse_response(header_block: bytes, auth_addr: str, protocol: str, method: str) -> AuthResult:
    """Decide from the start of a response, as nginx does.

    ``header_block`` is what the server sent, from its first byte (a status
    line is optional); bytes after the empty line ending the head are ignored,
    and only the first 1024 bytes count. ``auth_addr`` names the server in log
    messages; ``method`` is the request's Auth-Method.
    """
    return decide_response(scan_response_head(header_block), auth_addr, protocol, method)


def decide_response(head: ResponseHead, auth_addr: str, protocol: str, method: str) -> AuthResult:
    """``parse_response`` from a head already scanned (``scan_response_head``)."""
    if head.state == INVALID_RESPONSE:
        return _error(f"auth http server {auth_addr} sent invalid response")
    if head.state == INVALID_HEADER:
        return _error(f"auth http server {auth_addr} sent invalid header in response")
    if head.state != DONE:
        # nginx fails the session without a log line when the connection
        # closes before the head ends, or when the head overflows its buffer.
        return _error(f"auth http server {auth_addr} sent no complete response header", "debug")
    return _decide(head.headers, auth_addr, protocol, method)


class _Fields:
    """The recognised headers; a later occurrence replaces an earlier one."""

    def __init__(self, headers: Iterable[tuple[bytes, bytes]], protocol: str) -> None:
        self.failed = False
        self.message = b""
        self.wait_status = False
        self.server = b""
        self.port = b""
        self.login: bytes | None = None
        self.password: bytes | None = None
        self.sleep = 0
        self.error_code = b""
        for name, value in headers:
            self._take(name.lower(), value, protocol)

    def _take(self, name: bytes, value: bytes, protocol: str) -> None:
        if name == b"auth-status":
            if value == b"OK":
                return
            if value == b"WAIT":
                self.wait_status = True
                return
            self.message = value
            # POP3/IMAP: any other value is a failure for good (a later OK
            # does not cancel it). SMTP judges by the last message only, and
            # an empty one is no failure.
            self.failed = bool(value) if protocol == "smtp" else True
        elif name == b"auth-server":
            self.server = value
        elif name == b"auth-port":
            self.port = value
        elif name == b"auth-user":
            self.login = value
        elif name == b"auth-pass":
            self.password = value
        elif name == b"auth-wait":
            if value.isdigit() and len(value) < 19:  # ngx_atoi: digits, no overflow
                self.sleep = int(value)
        elif name == b"auth-error-code":
            self.error_code = value


def _decide(headers: Iterable[tuple[bytes, bytes]], addr: str, protocol: str, method: str) -> AuthResult:
    f = _Fields(headers, protocol)
    login = None if f.login is None else text(f.login)
    password = None if f.password is None else text(f.password)
    if f.failed:
        message = text(f.message)
        code = (text(f.error_code) or SMTP_DEFAULT_ERROR_CODE) if protocol == "smtp" else ""
        return AuthResult(
            auth.FAIL,
            login=login,
            password=password,
            message=message,
            wait=f.sleep,
            error_code=code,
            log_message=f'client login failed: "{message}"',
            log_level="info",
        )
    if f.wait_status:
        return AuthResult(auth.WAIT, login=login, password=password, wait=f.sleep)
    if not f.server or not f.port:
        return _error(f"auth http server {addr} did not send server or port", login=login)
    if password is None and protocol != "smtp" and method != "plain":
        # APOP and CRAM-MD5 digests and EXTERNAL cannot be replayed.
        return _error(f"auth http server {addr} did not send password", login=login)
    server = backend_address(f.server)
    if server is None:
        return _error(f'auth http server {addr} sent invalid server address:"{text(f.server)}"', login=login)
    port = int(f.port) if f.port.isdigit() and len(f.port) < 19 else 0
    if not 1 <= port <= 65535:
        return _error(f'auth http server {addr} sent invalid server port:"{text(f.port)}"', login=login)
    return AuthResult(
        auth.OK,
        server=server,
        port=port,
        login=login,
        password=password,
        upstream_name=text(f.server + b":" + f.port),
    )


def _error(message: str, level: str = "error", login: str | None = None) -> AuthResult:
    return AuthResult(auth.ERROR, login=login, log_message=message, log_level=level)


def backend_address(value: bytes) -> str | None:
    """The IP literal of Auth-Server in canonical form, or None (ngx_parse_addr:
    IPv4 as ngx_inet_addr reads it, or IPv6 without brackets)."""
    v4 = _inet_addr(value)
    if v4 is not None:
        return v4
    if b":" not in value or value.translate(None, b"0123456789abcdefABCDEF:."):
        return None  # only hex digits, ':' and '.': no brackets, no zone
    try:
        return str(ipaddress.IPv6Address(value.decode("ascii")))
    except ValueError:
        return None


def _inet_addr(value: bytes) -> str | None:
    """ngx_inet_addr: four dot-separated decimal octets; empty octets read as
    0, leading zeros are decimal, and 255.255.255.255 (INADDR_NONE) fails."""
    parts = value.split(b".")
    if len(parts) != 4 or any(part and not part.isdigit() for part in parts):
        return None
    octets = [int(part or b"0") for part in parts]
    if any(octet > 255 for octet in octets) or octets == [255, 255, 255, 255]:
        return None
    return ".".join(map(str, octets))


# --- the client --------------------------------------------------------------


class AuthHttpClient:
    """Asks auth_http servers, keeping connections alive (one per worker).

    ``authenticate`` blocks (under gevent: the calling greenlet only) for at
    most ``timeout`` seconds in all: connect, send, and read the head. Every
    failure becomes an ERROR result with nginx's log message; a
    ``gevent.Timeout`` raised around the call propagates and leaves the pool
    usable (the connection in use is discarded).

    On the wire it differs from nginx only where SPEC's preamble asks: the
    request line says HTTP/1.1 and the connection is kept when the response
    allows it (HTTP/1.1, or HTTP/1.0 with keep-alive, and a Content-Length
    of at most 64 KiB). A kept connection the server has meanwhile closed is
    retried once on a new one, when nothing of a response had arrived.
    ``pool_size`` bounds the idle connections kept per auth server.
    """

    def __init__(self, pool_size: int = 32) -> None:
        # Requests go straight to the transport adapter, without a
        # requests.Session: nothing a session adds per call (settings and
        # environment merging, cookies, hooks, redirects) applies to nginx's
        # exchange, and it was about 40% of the client's CPU per exchange
        # (bench/auth_probe.py). So there is no proxy or .netrc from the
        # environment, no cookie, no redirect (nginx follows none either).
        self._adapter = AuthHttpAdapter(pool_size)
        self._prepared: dict[tuple[str, str, int], requests.PreparedRequest] = {}

    def close(self) -> None:
        self._adapter.close()

    def __enter__(self) -> AuthHttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def authenticate(
        self,
        url: AuthHttpUrl,
        request: AuthRequest,
        extra_headers: Iterable[tuple[str, str]] = (),
        timeout: float = 60.0,
    ) -> AuthResult:
        lines = build_headers(url, request, extra_headers)
        deadline = time.monotonic() + timeout
        for first in (True, False):
            exchange = Exchange(url.uri, lines, deadline)
            try:
                head = self._exchange(url, exchange)
            except Exception as exc:  # noqa: BLE001 - every failure is an ERROR result
                if first and _stale(exc, exchange):
                    continue  # the server closed a kept-alive connection: once more, anew
                return _failure(exc, url.address, exchange)
            return decide_response(head, url.address, request.protocol, request.credentials.method)
        raise AssertionError("unreachable")

    def _request(self, url: AuthHttpUrl) -> requests.PreparedRequest:
        """The request handed to the adapter for this auth server, prepared
        once and shared by every exchange with it: the adapter only reads it
        (method, URL for the pool, no headers, no body), and what goes on the
        wire comes from the exchange (auth_transport.NginxHTTPConnection)."""
        key = (url.family, url.host, url.port)
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = requests.Request("GET", target_url(*key)).prepare()
            self._prepared[key] = prepared
        return prepared

    def _exchange(self, url: AuthHttpUrl, exchange: Exchange) -> ResponseHead:
        """Send the request, return the response head as nginx reads it; the
        connection goes back to the pool only when nothing of this response is
        left on it.

        Every wait is bounded by the exchange's deadline: the connect and the
        send by the socket timeouts given here, each read of the head by
        ``HeadResponse`` (which re-arms the socket with what is left), so no
        gevent.Timeout is needed around the call."""
        remaining = exchange.remaining()
        if remaining <= 0:
            raise TimeoutError("auth http exchange deadline passed")
        token = CURRENT.set(exchange)
        try:
            try:
                # What requests.Session.get(stream=True, allow_redirects=False)
                # would end in, without the session's work around it.
                response = self._adapter.send(self._request(url), stream=True, timeout=(remaining, remaining))
            except HeadReadError as err:
                return err.parsed
            keep = False
            try:
                raw: HeadResponse = response.raw._original_response
                head = raw.mailgate_parsed
                if raw.mailgate_reusable:
                    try:
                        keep = raw.isclosed() or raw.drain(exchange)
                    except OSError:
                        keep = False
            finally:
                if keep:
                    response.raw.release_conn()
                else:
                    response.close()
            return head
        finally:
            CURRENT.reset(token)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (requests and urllib3 nest them)."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [getattr(current, "reason", None), current.__cause__, current.__context__, *current.args]
        stack.extend(item for item in inner if isinstance(item, BaseException))


def _stale(exc: Exception, exchange: Exchange) -> bool:
    """A kept-alive connection the server had closed: nothing was answered."""
    if not exchange.reused or exchange.received or exchange.remaining() <= 0:
        return False
    return any(isinstance(c, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)) for c in _causes(exc))


def _failure(exc: Exception, addr: str, exchange: Exchange) -> AuthResult:
    """nginx's log line for a failed exchange. Exception texts are not used:
    some quote the request's header values."""
    causes = list(_causes(exc))
    connect = next((c for c in causes if isinstance(c, urllib3.exceptions.NewConnectionError)), None)
    oserror = next((c for c in causes if isinstance(c, OSError) and c.errno), None)
    if connect is not None and oserror is not None and not isinstance(oserror, TimeoutError):
        return _error(f"connect() to {addr} failed{_errno_text(oserror)}")
    timed_out = exchange.remaining() <= 0 or any(
        isinstance(c, (TimeoutError, requests.Timeout))
        or (isinstance(c, urllib3.exceptions.TimeoutError) and c is not connect)
        for c in causes
    )
    if timed_out:
        return _error(f"auth http server {addr} timed out ({errnos.ETIMEDOUT}: {os.strerror(errnos.ETIMEDOUT)})")
    if connect is not None:
        return _error(f"connect() to {addr} failed{_errno_text(oserror)}")
    if oserror is not None:
        # The driver appends " while in http auth state, client: ...".
        return _error(f"{'send()' if oserror.errno == errnos.EPIPE else 'recv()'} failed{_errno_text(oserror)}")
    if any(isinstance(c, http.client.RemoteDisconnected) for c in causes):
        # nginx logs nothing of its own here (SPEC 8.6).
        return _error(f"auth http server {addr} closed the connection without a response", "debug")
    return _error(f"auth http request to {addr} failed ({type(exc).__name__})")


def _errno_text(err: OSError | None) -> str:
    if err is None or not err.errno:
        return ""
    return f" ({err.errno}: {os.strerror(err.errno)})"
