"""The HTTP side of the auth_http client: requests/urllib3 plumbing.

mailgate keeps connections to the auth server alive through one requests
transport adapter (``AuthHttpAdapter``) per worker, but what goes over them is
nginx's auth_http exchange (SPEC 8). ``scan_response_head`` is nginx's reading
of a response head (also the first step of ``auth_http.parse_response``), and
three pieces of the stack are replaced:

* ``NginxHTTPConnection.request`` writes the request line with the URI exactly
  as configured and then exactly nginx's header lines, in order, duplicates
  included: no User-Agent, Accept or Accept-Encoding, and no re-quoting of the
  URI by requests.
* ``HeadResponse.begin`` reads the response head the way nginx does (SPEC
  8.3): at most 1024 bytes, scanned with nginx's rules, whatever the status
  line looks like; a head http.client could not go on with (no status line,
  as from an HTTP/0.9-style server, a bare CR, an invalid header name...)
  aborts the exchange with ``HeadReadError`` carrying the bytes, and urllib3
  throws that connection away. It never waits for a body: a body is only read
  when Content-Length says it is small, to keep the connection for the next
  request; otherwise the connection is closed as soon as the head is in.
* ``AuthHttpAdapter`` routes each request to a pool of its own per auth server
  (TCP or UNIX socket), connecting to the address resolved at configuration
  load, never resolving again.

``AuthHttpClient`` hands each request to the adapter directly, not through a
``requests.Session``: an exchange has no use for what a session adds per call
(merging settings and the environment, cookies, hooks, redirects), and that
was about 40% of the client's CPU per exchange (bench/auth_probe.py). For
the same reason the adapter skips the cookie extraction of its responses,
and its connections check a kept socket with one non-blocking peek (see
``NginxHTTPConnection.is_connected``).

What the current exchange needs (header lines, URI, deadline) travels in a
context variable, which is per thread and per greenlet.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import SKIP_HEADER

from mailgate.sockets import send_all

# A body is read (and dropped) to keep the connection only when Content-Length
# announces at most this much; otherwise the connection is closed unread.
MAX_DRAINED_BODY = 64 * 1024
# How long a body announced by Content-Length may take to arrive once the head
# is in: the decision is already made, the wait only saves a reconnect.
DRAIN_TIMEOUT = 0.5

# urllib3 adds these unless told to skip them; nginx sends none of them.
_SKIP_DEFAULTS = {"Host": SKIP_HEADER, "User-Agent": SKIP_HEADER, "Accept-Encoding": SKIP_HEADER}


@dataclass
class Exchange:
    """One request/response with the auth server."""

    uri: str
    lines: list[tuple[str, bytes]]
    deadline: float  # time.monotonic() by which everything must be done
    reused: bool = False  # sent on a kept-alive connection
    received: int = 0  # bytes of the response read so far

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


CURRENT: ContextVar[Exchange | None] = ContextVar("mailgate_auth_exchange", default=None)


class HeadReadError(Exception):
    """The response head was read but cannot be handed to http.client (no
    status line, invalid, incomplete, too long). ``parsed`` is what
    ``scan_response_head`` made of the bytes read.

    Deliberately not an OSError or HTTPException: urllib3 and requests let it
    through unchanged, and urllib3 closes and discards the connection."""

    def __init__(self, head: bytes, parsed: ResponseHead) -> None:
        super().__init__(f"auth http response head of {len(head)} bytes")
        self.parsed = parsed


def target_url(family: str, host: str, port: int) -> str:
    """The URL requests is given for an auth server; only the pool routing
    uses it (the request line carries the configured URI)."""
    if family == "unix":
        return f"http+unix://{quote(host, safe='')}/"
    if family == "inet6":
        return f"http://[{host}]:{port}/"
    return f"http://{host}:{port}/"


# --- nginx's reading of the response head (SPEC 8.3) ----------------------------

# nginx reads the response into one buffer of 1024 bytes: the status line and
# the headers must end within it (ngx_mail_auth_http_read_handler).
MAX_HEAD = 1024

AGAIN = "again"  # the head is not complete yet
DONE = "done"  # the empty line ending the head was seen
INVALID_RESPONSE = "invalid response"  # a CR not followed by LF in the status line
INVALID_HEADER = "invalid header"  # a header line nginx's parser rejects

_NAME = re.compile(rb"[A-Za-z0-9][A-Za-z0-9-]*")


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """What nginx's parser makes of the first bytes of a response.

    ``headers`` are (name, value) in order, duplicates kept, values trimmed of
    spaces (not tabs); a line without ':' is a header with an empty value.
    ``end`` is the length of the head (through its empty line) when DONE.
    """

    state: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    end: int = 0

    @property
    def again(self) -> bool:
        return self.state == AGAIN


def scan_response_head(data: bytes) -> ResponseHead:
    """Scan a response as ngx_mail_auth_http_ignore_status_line and
    ngx_mail_auth_http_parse_header_line do. Only the first MAX_HEAD bytes
    count; more data never changes a state other than AGAIN."""
    data = data[:MAX_HEAD]
    pos = 0
    if data.startswith(b"HTTP/"):
        # The status line is skipped, whatever it says (status code ignored).
        end = data.find(b"\n")
        line = data if end < 0 else data[:end]
        cr = line.find(b"\r")
        if cr >= 0 and cr != len(line) - 1:
            return ResponseHead(INVALID_RESPONSE)
        if end < 0:
            return ResponseHead(AGAIN)
        pos = end + 1
    elif b"HTTP/".startswith(data):
        return ResponseHead(AGAIN)  # too early to tell
    headers: list[tuple[bytes, bytes]] = []
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            state = INVALID_HEADER if _partial_line_invalid(data[pos:]) else AGAIN
            return ResponseHead(state, tuple(headers))
        line = data[pos:end]
        pos = end + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if b"\r" in line:
            return ResponseHead(INVALID_HEADER, tuple(headers))
        if not line:
            return ResponseHead(DONE, tuple(headers), pos)
        name = _NAME.match(line)
        if name is None:
            return ResponseHead(INVALID_HEADER, tuple(headers))
        rest = line[name.end() :]
        if not rest:
            headers.append((name.group(), b""))
        elif rest[:1] == b":":
            headers.append((name.group(), rest[1:].lstrip(b" ").rstrip(b" ")))
        else:
            return ResponseHead(INVALID_HEADER, tuple(headers))


def _partial_line_invalid(tail: bytes) -> bool:
    """Whether an unterminated header line is already known to be invalid."""
    cr = tail.find(b"\r")
    if cr >= 0 and cr != len(tail) - 1:
        return True  # a CR must be followed by LF
    line = tail[:cr] if cr >= 0 else tail
    if not line:
        return False
    name = _NAME.match(line)
    if name is None:
        return True
    rest = line[name.end() :]
    return bool(rest) and rest[:1] != b":"


# --- the response head ---------------------------------------------------------


class HeadResponse(http.client.HTTPResponse):
    """An http.client response whose head is read by nginx's rules.

    ``mailgate_parsed`` is what ``scan_response_head`` made of the head (the
    decision is taken from that)."""

    def __init__(self, sock: Any, debuglevel: int = 0, method: str | None = None, url: str | None = None) -> None:
        super().__init__(sock, debuglevel, method, url)
        self._mg_sock = sock
        self.mailgate_parsed = ResponseHead(AGAIN)
        self.mailgate_reusable = False

    def begin(self) -> None:
        if self.headers is not None:
            return
        exchange = CURRENT.get()
        raw, head = self._read_head(exchange)
        self.mailgate_parsed = head
        match = STATUS_LINE.match(raw) if head.state == DONE else None
        if match is None:
            raise HeadReadError(raw, head)
        self.version = 10 if match.group(1) == b"0" else 11
        self.status = self.code = int(match.group(2))
        self.reason = (match.group(3) or b"").decode("latin-1").strip()
        self.headers = self.msg = http.client.HTTPMessage()
        for name, value in head.headers:
            self.msg[name.decode("latin-1")] = value.decode("latin-1")
        self.chunked = False
        self.chunk_left = None
        self.length = _body_length(head, self.status)
        self.mailgate_reusable = self.length is not None and not self._check_close()
        if self.mailgate_reusable and self.length == 0:
            self._close_conn()  # complete: the connection is free for the next request
        elif not self.mailgate_reusable:
            # nginx closes as soon as the head is parsed, and so do we.
            self.will_close = True
            self.length = 0
            self._close_conn()
            return
        self.will_close = False

    def _read_head(self, exchange: Exchange | None) -> tuple[bytes, ResponseHead]:
        """Read until nginx's scanner decides, taking no byte past the head.
        The ResponseHead returned is ``scan_response_head`` of the bytes
        returned."""
        raw = b""
        while True:
            self._arm(exchange, None)
            data = self.fp.peek(1)
            if not data:
                if not raw:
                    raise http.client.RemoteDisconnected("auth http server closed the connection")
                return raw, scan_response_head(raw)
            take = data[: MAX_HEAD - len(raw)]
            head = scan_response_head(raw + take)
            used = head.end - len(raw) if head.state == DONE else len(take)
            raw += self.fp.read(used)
            if exchange is not None:
                exchange.received = len(raw)
            if not head.again or len(raw) >= MAX_HEAD:
                return raw, head

    def _arm(self, exchange: Exchange | None, cap: float | None) -> None:
        """Bound the next socket read by the exchange's deadline and ``cap``."""
        bounds = [exchange.remaining()] if exchange is not None else []
        if cap is not None:
            bounds.append(cap)
        if not bounds:
            return
        remaining = min(bounds)
        if remaining <= 0:
            raise TimeoutError("auth http exchange deadline passed")
        self._mg_sock.settimeout(remaining)

    def drain(self, exchange: Exchange | None) -> bool:
        """Read and drop the announced body; True if the connection can be
        used again. Bounded by DRAIN_TIMEOUT and by the exchange's deadline."""
        left = self.length or 0
        until = time.monotonic() + DRAIN_TIMEOUT
        while left > 0:
            self._arm(exchange, until - time.monotonic())
            chunk = self.fp.read1(left)
            if not chunk:
                return False
            left -= len(chunk)
        self.length = 0
        self._close_conn()
        return True


def _body_length(head: ResponseHead, status: int) -> int | None:
    """The body size if it is known and small enough to read, else None."""
    if 100 <= status < 200:
        return None  # another response follows on this connection: do not keep it
    lengths = set()
    for name, value in head.headers:
        key = name.lower()
        if key == b"transfer-encoding":
            return None
        if key == b"content-length":
            lengths.add(value)
    if status in (204, 304):
        return 0
    if len(lengths) != 1:
        return None
    value = lengths.pop()
    if not value.isdigit() or int(value) > MAX_DRAINED_BODY:
        return None
    return int(value)


# "HTTP/1.x NNN reason": the heads http.client can go on with.
STATUS_LINE = re.compile(rb"HTTP/1\.([0-9]) +([0-9]{3})(?:[ \t]+([^\r\n]*))?[ \t]*\r?\n")


# --- connections and pools -----------------------------------------------------


class NginxHTTPConnection(HTTPConnection):
    """Sends nginx's request head when an exchange is current."""

    response_class = HeadResponse

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mg_uses = 0
        self._mg_lines: list[tuple[str, bytes]] | None = None

    def _new_conn(self) -> socket.socket:
        # The host is the IP literal resolved when the configuration was
        # loaded: connect to it directly. urllib3's create_connection() would
        # call getaddrinfo() again, under gevent a round trip through the hub's
        # thread pool, which no socket timeout bounds.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        return self._mg_connect(family, (self.host, self.port), self.host, self.socket_options)

    def _mg_connect(self, family: int, address: Any, name: str, options: Any) -> socket.socket:
        """A connected stream socket, errors raised as urllib3's own."""
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            for option in options or ():
                sock.setsockopt(*option)
            if isinstance(self.timeout, (int, float)):
                sock.settimeout(self.timeout)
            sock.connect(address)
            exchange = CURRENT.get()
            if exchange is not None:
                # The send that follows gets what the connect left of the
                # exchange's time (each read of the head re-arms likewise).
                left = exchange.remaining()
                if left <= 0:
                    raise TimeoutError("auth http exchange deadline passed")
                sock.settimeout(left)
        except TimeoutError as err:
            sock.close()
            raise ConnectTimeoutError(self, f"Connection to {name} timed out") from err
        except OSError as err:
            sock.close()
            raise NewConnectionError(self, f"Failed to establish a new connection: {err}") from err
        except BaseException:
            sock.close()
            raise
        return sock

    @property
    def is_connected(self) -> bool:
        """Whether a kept connection is still usable (urllib3 asks before each
        request that reuses it): False once the server has closed it or sent
        anything unasked. urllib3 asks poll() with a zero timeout, which under
        gevent is a trip through the hub; a non-blocking MSG_PEEK of one byte
        answers the same question with one system call."""
        sock = self.sock
        if sock is None:
            return False
        timeout = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            sock.recv(1, socket.MSG_PEEK)  # b"" (closed) or data: not reusable
        except BlockingIOError:
            return True  # nothing to read: still open
        except OSError:
            pass  # reset: not reusable
        finally:
            sock.settimeout(timeout)
        return False

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **kwargs: Any) -> None:
        exchange = CURRENT.get()
        if exchange is None:
            super().request(method, url, body=body, headers=headers, **kwargs)
            return
        if self.sock is None:
            self._mg_uses = 0  # http.client connects on the first send
        exchange.reused = self._mg_uses > 0
        self._mg_uses += 1
        self._mg_lines = exchange.lines
        try:
            super().request(method, exchange.uri, body=None, headers=_SKIP_DEFAULTS, **kwargs)
        finally:
            self._mg_lines = None

    def send(self, data: Any) -> None:
        # The request head is one bytes object: one send() (mailgate.sockets),
        # not gevent's sendall(), which asks for SO_SNDBUF on every call.
        if self.sock is not None and isinstance(data, bytes):
            send_all(self.sock, data)
        else:
            super().send(data)  # connects first, or a body http.client iterates

    def endheaders(self, message_body: Any = None, *, encode_chunked: bool = False) -> None:
        lines, self._mg_lines = self._mg_lines, None
        for name, value in lines or ():
            http.client.HTTPConnection.putheader(self, name, value)
        super().endheaders(message_body, encode_chunked=encode_chunked)


class UnixHTTPConnection(NginxHTTPConnection):
    """The same over an AF_UNIX stream socket (``auth_http unix:/path``)."""

    def __init__(self, *args: Any, socket_path: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.socket_path = socket_path

    def _new_conn(self) -> socket.socket:
        return self._mg_connect(socket.AF_UNIX, self.socket_path, self.socket_path, ())


class NginxPool(HTTPConnectionPool):
    ConnectionCls = NginxHTTPConnection


class UnixPool(HTTPConnectionPool):
    ConnectionCls = UnixHTTPConnection


class AuthHttpAdapter(HTTPAdapter):
    """One keep-alive pool per auth server, keyed by its resolved address
    (the URL ``target_url`` makes of it)."""

    def __init__(self, pool_size: int) -> None:
        self._pool_size = max(1, pool_size)
        self._pools: dict[str, HTTPConnectionPool] = {}
        self._pools_lock = threading.Lock()
        super().__init__(pool_connections=1, pool_maxsize=self._pool_size, max_retries=0)

    def get_connection_with_tls_context(
        self, request: Any, verify: Any, proxies: Any = None, cert: Any = None
    ) -> HTTPConnectionPool:
        return self._pool_for(request.url)

    def get_connection(self, url: str, proxies: Any = None) -> HTTPConnectionPool:
        return self._pool_for(url)

    def _pool_for(self, url: str) -> HTTPConnectionPool:
        pool = self._pools.get(url)
        if pool is not None:
            return pool
        parts = urlsplit(url)
        with self._pools_lock:
            pool = self._pools.get(url)
            if pool is None:
                if parts.scheme == "http+unix":
                    pool = UnixPool("localhost", None, maxsize=self._pool_size, socket_path=unquote(parts.netloc))
                else:
                    pool = NginxPool(parts.hostname or "", parts.port or 80, maxsize=self._pool_size)
                self._pools[url] = pool
        return pool

    def request_url(self, request: PreparedRequest, proxies: Any) -> str:
        # The path of a target_url(), which is always "/" (and no proxy is
        # ever used): spares requests three URL parses per request. What goes
        # on the request line is the configured URI (NginxHTTPConnection).
        return "/"

    def build_response(self, req: PreparedRequest, resp: Any) -> Response:
        """requests' Response around urllib3's, as HTTPAdapter makes it but
        without the cookie jar work (mailgate keeps no cookies) or a text
        encoding: the client reads nothing but ``raw``."""
        response = Response()
        response.status_code = resp.status
        response.headers = CaseInsensitiveDict(resp.headers)
        response.reason = resp.reason
        response.raw = resp
        response.url = req.url or ""  # always set: a target_url()
        response.request = req
        response.connection = self
        return response

    def close(self) -> None:
        super().close()
        with self._pools_lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
