"""One client connection, from accept to close (DESIGN "One session, end to end").

The protocol logic lives in the sans-IO ``Session``; this driver feeds it the
client's bytes, performs its events, asks the authenticator, logs in to the
backend and hands both sockets to the ``Relay``. It ends with one summary line.
"""

from __future__ import annotations

import socket
import time

import gevent

from mailgate import auth
from mailgate.auth import AuthRequest, AuthResult, AuthTls
from mailgate.config.model import Route, Server
from mailgate.log import ErrorLog, SessionContext, SessionLog
from mailgate.protocol.base import Authenticate, Close, Credentials, Log, Send, StartTLS
from mailgate.protocol.proxy_protocol import ProxyHeader
from mailgate.realip import real_client
from mailgate.relay import DONE, SHUTDOWN, Relay
from mailgate.sockets import send_all
from mailgate.upstream import UpstreamError, connect_and_login
from mailgate.worker.edge import EdgeClosed, handshake, proxy_header_out, read_proxy_header, tlvs_of
from mailgate.worker.protocols import CERTIFICATE_REPLIES, client_buffer, new_session

# Outcomes for the summary line (the relay adds its own).
QUIT = "closed-before-login"
TIMEOUT = "timeout"
AUTH_FAILED = "auth-failed"
AUTH_ERROR = "auth-error"
BACKEND_ERROR = "backend-error"
CLIENT_GONE = "client-closed"
PIPELINED_EARLY = "rejected-before-greeting"
TLS_REFUSED = "certificate-refused"

# Largest read per relay direction. nginx copies through proxy_buffer (4k)
# and the client buffer; each read costs mailgate a fixed Python overhead,
# so bulk transfers need large reads (a blocked recv() holds no buffer, so
# idle sessions pay nothing for it). proxy_buffer still bounds the login.
RELAY_READ = 65536

# Client-Host and XCLIENT NAME when the name is not known (SPEC 7.1).
UNAVAILABLE = "[UNAVAILABLE]"


class ClientGone(Exception):
    """The client closed or broke the connection; close silently (SPEC 4.7)."""


class Connection:
    """Drives one mail session. ``worker`` provides auth and bookkeeping."""

    def __init__(self, worker, sock: socket.socket, peer, route: Route, server: Server,
                 errlog: ErrorLog, number: int) -> None:
        self.worker = worker
        self.sock = sock
        self.route = route
        self.server = server
        self.client_ip, self.client_port = _peer(peer, route)
        ctx = SessionContext(number=number, client=self.client_ip, server=route.listen.text)
        self.log = SessionLog(errlog, ctx)
        self.session = None  # made once any implicit TLS is up
        self.tls_facts: AuthTls | None = None
        self.read_size = client_buffer(server)
        self.started = time.monotonic()
        self.bytes_in = 0
        self.bytes_out = 0
        self.attempt = 0
        self.outcome = QUIT
        self.relay: Relay | None = None
        self.backend: socket.socket | None = None
        self.deadline = 0.0
        self.client_host = UNAVAILABLE
        self.proxy_header: ProxyHeader | None = None
        self.ended = False

    # --- the whole session ----------------------------------------------------

    def run(self) -> None:
        """Serve the session up to the relay. When the relay starts, this
        returns and the session goes on in the hub's watchers, which end it;
        otherwise the session ends here. Either way ``_end`` runs once."""
        peer = f"{self.client_ip}:{self.client_port}" if self.client_port else self.client_ip
        self.log.bare("info", f"client {peer} connected to {self.route.listen.text}")
        relaying = False
        try:
            if self.route.listen.proxy_protocol:
                self._proxy_protocol()
            if self.route.listen.ssl:
                self._start_tls(self.server.timeout)
            self.session = new_session(self.server, tls_active=self.route.listen.ssl)
            result = self._pre_auth()
            if result is not None:
                relaying = self._proxy(result)
        except (ClientGone, EdgeClosed):
            self.outcome = CLIENT_GONE if self.outcome == QUIT else self.outcome
        finally:
            if not relaying:
                self._end()

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            self.sock.close()
            self._summary()
        finally:
            self.worker.session_ended(self)

    def _proxy_protocol(self) -> None:
        """The load balancer's header comes first (SPEC 3.1). A trusted peer's
        header gives the real client address, used from here on in logs,
        auth_http and XCLIENT; any header's addresses go to the auth server."""
        header = read_proxy_header(self.sock, self.server.timeout, self.log)
        self.proxy_header = header
        if not header.has_addresses:
            return
        peer = None if self.client_ip == "unix:" else self.client_ip
        ip, port = real_client(peer, self.client_port, header, self.worker.trusted_proxies(self.route.server))
        if ip is not None and ip != peer:
            self.client_ip, self.client_port = ip, port
            self.log.ctx.client = ip

    def _start_tls(self, timeout: float) -> None:
        """Handshake, then nginx's client certificate checks (SPEC 3.2, 3.3)."""
        server_tls = self.worker.server_tls(self.route.server)
        sslsock = handshake(self.sock, server_tls, timeout, self.log)
        self.sock = sslsock
        problem = server_tls.check_client(sslsock)
        if problem is not None:
            self.log.log("info", problem.log)
            self.outcome = TLS_REFUSED
            self._send_client(CERTIFICATE_REPLIES[self.server.protocol][problem.kind])
            raise ClientGone()
        self.tls_facts = server_tls.facts(sslsock)

    def _pre_auth(self) -> tuple[AuthResult, Credentials] | None:
        if self.server.protocol == "smtp" and not self._smtp_prelude():
            return None
        self._arm_deadline()
        self.log.ctx.action = "sending client greeting line"
        events = self.session.start()
        while True:
            self.log.ctx.action = "in auth state"
            blocking = self._perform(events)
            if isinstance(blocking, Close):
                return None
            if isinstance(blocking, Authenticate):
                outcome = self._authenticate(blocking.credentials)
                if isinstance(outcome, tuple):
                    return outcome
                if outcome is None:
                    return None
                events = outcome
                continue
            if isinstance(blocking, StartTLS):
                # The deadline runs on through STARTTLS (SPEC 4.6).
                self._start_tls(self.deadline - time.monotonic())
                self.log.ctx.starttls = True
                events = self.session.tls_started()
                continue
            events = self.session.receive_data(self._recv_client())

    def _smtp_prelude(self) -> bool:
        """SMTP before its greeting (SPEC 7.1, 7.2): learn the client's host
        name, then wait ``smtp_greeting_delay``; a client that talks first is
        refused. False when the session is over."""
        self.client_host = self.worker.client_host(self.server, self.client_ip, self.log)
        delay = self.server.smtp_greeting_delay
        if delay <= 0:
            return True
        self.log.ctx.action = "in delay pipelining state"
        self.sock.settimeout(delay)
        try:
            data = self.sock.recv(self.read_size)
        except TimeoutError:
            return True
        except OSError as err:
            self.log.log("info", f"recv() failed ({err.errno}: {err.strerror})")
            raise ClientGone() from None
        if not data:
            raise ClientGone()
        self.bytes_in += len(data)
        self.outcome = PIPELINED_EARLY
        self._perform(self.session.early_data(data))
        return False

    def _arm_deadline(self) -> None:
        # ``timeout`` is a deadline from the greeting, not an idle timer
        # (SPEC 4.6, kept as nginx does it: Appendix B item 1).
        self.deadline = time.monotonic() + self.server.timeout

    def _recv_client(self) -> bytes:
        left = self.deadline - time.monotonic()
        if left <= 0:
            return self._client_timed_out()
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(self.read_size)
        except TimeoutError:
            return self._client_timed_out()
        except OSError as err:
            self.log.log("info", f"recv() failed ({err.errno}: {err.strerror})")
            raise ClientGone() from None
        if not data:
            raise ClientGone()
        self.bytes_in += len(data)
        if self.log.enabled("debug"):
            self.log.log("debug", f"client sent {len(data)} bytes")
        return data

    def _client_timed_out(self) -> bytes:
        # Closed without a word to the client (SPEC 4.6).
        self.log.log("info", "client timed out (110: Connection timed out)")
        self.outcome = TIMEOUT
        raise ClientGone()

    def _perform(self, events: list) -> object | None:
        """Send replies and log lines in order; return the event that needs
        the driver (Authenticate, StartTLS, Close) or None."""
        for event in events:
            if isinstance(event, Send):
                self._send_client(event.data)
            elif isinstance(event, Log):
                self.log.log(event.level, event.message)
            else:
                return event
        return None

    def _send_client(self, data: bytes) -> None:
        self.sock.settimeout(self.server.timeout)
        try:
            send_all(self.sock, data)
        except TimeoutError:
            self.log.log("info", "client timed out (110: Connection timed out)")
            raise ClientGone() from None
        except OSError as err:
            self.log.log("info", f"send() failed ({err.errno}: {err.strerror})")
            raise ClientGone() from None
        self.bytes_out += len(data)

    # --- authentication -------------------------------------------------------

    def _authenticate(self, creds: Credentials):
        """Ask until the answer is final (SPEC 8.4). Returns (result, creds) to
        log in, a list of events to go on with, or None when the session ends."""
        self.attempt += 1
        self.log.ctx.login = creds.login
        self.log.ctx.action = "in http auth state"
        host = self.client_host if self.server.protocol == "smtp" else None
        addresses = self.proxy_header.addresses if self.proxy_header is not None else None
        request = AuthRequest(creds, self.server.protocol, self.attempt, self.client_ip, client_host=host,
                              proxy_protocol=addresses, tls=self.tls_facts)
        while True:
            asked = time.monotonic()
            result = self.worker.authenticate(self.server, request)
            if self.log.enabled("debug"):
                self.log.log("debug", f"auth method {creds.method}, attempt {self.attempt}: {result.outcome}"
                             f" after {time.monotonic() - asked:.3f}s{_target(result)}")
            if result.outcome != auth.WAIT:
                break
            gevent.sleep(result.wait)  # Auth-Status: WAIT re-asks, same attempt
        if result.outcome == auth.OK:
            return result, creds
        if result.outcome == auth.FAIL:
            return self._login_failed(result)
        self.log.log(result.log_level, result.log_message)
        self.outcome = AUTH_ERROR
        self._perform(self.session.internal_error())
        return None

    def _login_failed(self, result: AuthResult):
        self.log.log("info", f'client login failed: "{result.message}"')
        self.outcome = AUTH_FAILED
        if result.wait <= 0:
            self._perform(self.session.auth_rejected(result.message, result.error_code))
            return None
        # Auth-Wait: the client may try again after the delay (SPEC 8.4.1).
        gevent.sleep(result.wait)
        self._arm_deadline()
        self.outcome = QUIT
        return self.session.auth_failed(result.message, result.error_code)

    # --- backend and relay ----------------------------------------------------

    def _proxy(self, decision: tuple[AuthResult, Credentials]) -> bool:
        """Log in to the backend; True once the relay is armed."""
        result, creds = decision
        login = result.login if result.login is not None else creds.login
        password = result.password if result.password is not None else creds.password
        self.log.ctx.login = login
        self.log.ctx.upstream = result.upstream
        try:
            upstream = connect_and_login(
                (result.server, result.port),
                self.session.upstream_login(login, password, client_ip=self.client_ip, client_host=self.client_host),
                timeout=self.server.timeout,
                buffer_size=self.server.proxy_buffer,
                pass_error=self.server.proxy_pass_error_message,
                log=self.log,
                proxy_header=self._proxy_header_out(),
            )
        except UpstreamError as err:
            self.outcome = BACKEND_ERROR
            if err.reply is not None:
                self._send_client(err.reply)
            else:
                self._perform(self.session.internal_error())
            return False
        self.log.log("info", "client logged in", with_action=False)
        self._relay(upstream.sock, upstream.client_reply)
        return True

    def _proxy_header_out(self) -> bytes | None:
        """``proxy_protocol on|v2``: the client (after realip) and mailgate's
        own end of the client connection (SPEC 9.2)."""
        version = self.server.proxy_protocol
        if version == "off":
            return None
        client = None if self.client_ip == "unix:" else (self.client_ip, self.client_port)
        facts = tlvs_of(self.sock, self.tls_facts) if self.tls_facts is not None else None
        return proxy_header_out(version, client, self.sock.getsockname(), facts)

    def _relay(self, backend: socket.socket, client_reply: bytes) -> None:
        self.log.ctx.action = "proxying"
        pending = self.session.pending_input()
        if self.log.enabled("debug"):
            self.log.log("debug", f"relay starts: {len(client_reply)} bytes to the client, {len(pending)} pipelined"
                         f" bytes to the backend, proxy_timeout {self.server.proxy_timeout:g}s")
        self.session = None  # the login state is not needed any more: idle sessions stay small
        self.backend = backend
        self.relay = Relay(
            self.sock,
            backend,
            client_buffer=max(self.read_size, RELAY_READ),
            backend_buffer=max(self.server.proxy_buffer, RELAY_READ),
            idle_timeout=self.server.proxy_timeout,
            log=self.log,
            on_done=self._relay_done,
        )
        self.relay.start(client_reply, pending)

    def _relay_done(self, outcome: str) -> None:
        """The relay is over (called from the hub, or from whoever aborted it)."""
        assert self.relay is not None and self.backend is not None
        self.outcome = outcome
        self.backend.close()
        self.bytes_in += self.relay.counters.from_client
        self.bytes_out += self.relay.counters.to_client
        if outcome == SHUTDOWN:
            self.log.log("info", "shutdown timeout")
        elif outcome == DONE:
            self.log.log("info", "proxied session done", with_action=False)
        self._end()

    def shutdown_timeout(self) -> None:
        """worker_shutdown_timeout expired: proxied sessions end now; sessions
        still before login go on until they finish (SPEC 11)."""
        if self.relay is not None:
            self.relay.abort(SHUTDOWN)

    # --- the summary line -----------------------------------------------------

    def _summary(self) -> None:
        ctx = self.log.ctx
        duration = time.monotonic() - self.started
        login = f' login="{ctx.login}"' if ctx.login else ""
        upstream = f" upstream={ctx.upstream}" if ctx.upstream else ""
        peer = f"{self.client_ip}:{self.client_port}" if self.client_port else self.client_ip
        self.log.bare(
            "info",
            f"session summary: protocol={self.server.protocol} client={peer} server={ctx.server}"
            f"{login}{upstream} bytes_in={self.bytes_in} bytes_out={self.bytes_out}"
            f" duration={duration:.3f}s outcome={self.outcome}",
        )


def _target(result: AuthResult) -> str:
    return f", upstream {result.upstream}" if result.outcome == auth.OK else ""


def _peer(peer, route: Route) -> tuple[str, int]:
    """(ip, port) of the client; a unix-socket client shows as ``unix:``."""
    if route.listen.family == "unix" or not isinstance(peer, tuple):
        return "unix:", 0
    return peer[0], peer[1]
