"""A worker process: gevent, the inherited listeners, and the sessions.

Imported by ``mailgate.worker.boot`` in the child right after fork, once
gevent has monkey-patched the process, so ``requests`` (auth_http) and every
socket call cooperate. Worker signals follow nginx: QUIT graceful, TERM/INT fast,
USR1 reopen logs, HUP ignored (SPEC 11).
"""

from __future__ import annotations

import itertools
import os
import resource
import signal

import gevent
import gevent.socket
from gevent.event import Event
from gevent.server import StreamServer

from mailgate import tls
from mailgate.config.model import Binding, Config
from mailgate.dns import ACTION_ADDRESS, UNAVAILABLE, resolve_client_host, shared_resolver
from mailgate.errors import MailgateError
from mailgate.realip import TrustedProxies
from mailgate.log import ErrorLog, SinkRegistry
from mailgate.master.arbiter import WORKER_BOOT_ERROR
from mailgate.master.privileges import drop_privileges
from mailgate.master.process_title import set_title
from mailgate.worker.authenticators import Authenticators
from mailgate.worker.connection import Connection
from mailgate.worker.slots import SessionServer, SessionSlots

# How often a worker checks that its master is still there.
PARENT_CHECK_INTERVAL = 1.0


# nginx keeps only TZ of the master's environment for workers, plus what
# ``env`` lists (ngx_set_environment).
KEPT_ENVIRONMENT = ("TZ",)


def apply_env(entries: tuple[str, ...]) -> None:
    """``env NAME`` keeps NAME from the master's environment, ``env NAME=value``
    sets it; everything else is removed, as nginx does for its workers."""
    kept = {name: os.environ[name] for name in KEPT_ENVIRONMENT if name in os.environ}
    for entry in entries:
        name, sep, value = entry.partition("=")
        if sep:
            kept[name] = value
        elif name in os.environ:
            kept[name] = os.environ[name]
    os.environ.clear()
    os.environ.update(kept)


class Worker:
    def __init__(self, config: Config, sockets: dict, registry: SinkRegistry, master_pid: int) -> None:
        self.config = config
        self.raw_sockets = sockets
        self.registry = registry
        self.master_pid = master_pid
        self.log = ErrorLog.build(config.main.error_log, registry)
        self.server_logs = tuple(
            ErrorLog.build(server.error_log or config.main.error_log, registry) for server in config.servers
        )
        self.slots = SessionSlots(config.main.worker_connections)
        self.connections: set[Connection] = set()
        self.numbers = itertools.count(1)
        self.servers: list[StreamServer] = []
        self.stopped = Event()
        self.stopping = False
        self.auth: Authenticators | None = None
        self.tls: tuple[tls.ServerTls | None, ...] = ()
        self.trusted = tuple(TrustedProxies.from_directive_values(s.set_real_ip_from) for s in config.servers)

    def run(self, ready_fd: int) -> int:
        try:
            self._boot()
        except (MailgateError, OSError) as err:
            self.log.log("emerg", str(err))
            return WORKER_BOOT_ERROR
        os.write(ready_fd, b"R")
        os.close(ready_fd)
        self.stopped.wait()
        return 0

    # --- boot -----------------------------------------------------------------

    def _boot(self) -> None:
        set_title("mailgate: worker process")
        main = self.config.main
        if main.worker_rlimit_nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (main.worker_rlimit_nofile, main.worker_rlimit_nofile))
        drop_privileges(main.user)
        self.auth = Authenticators(self.config)
        # Certificates are read here, so every new generation (reload) re-reads them.
        self.tls = tls.load(self.config)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        gevent.signal_handler(signal.SIGQUIT, self.graceful)
        gevent.signal_handler(signal.SIGTERM, self.fast)
        gevent.signal_handler(signal.SIGINT, self.fast)
        gevent.signal_handler(signal.SIGUSR1, self.reopen)
        apply_env(self.config.main.env)
        for binding in self.config.bindings:
            self._serve(binding)
        gevent.spawn(self._watch_master)
        self.log.log("debug", f"worker serving {len(self.servers)} listeners, {self.config.main.worker_connections}"
                     " connections at most")

    def _serve(self, binding: Binding) -> None:
        raw = self.raw_sockets[binding.listen.key]
        listener = gevent.socket.socket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        server = SessionServer(listener, self._handler(binding), spawn=self.slots)
        server.start()
        self.servers.append(server)

    def _handler(self, binding: Binding):  # noqa: ANN202 - a StreamServer handler
        def handle(sock, peer) -> None:  # noqa: ANN001 - gevent's signature
            try:
                route = binding.default
                if binding.by_address:
                    route = binding.route(sock.getsockname()[0])
                server = self.config.servers[route.server]
                conn = Connection(self, sock, peer, route, server, self.server_logs[route.server], next(self.numbers))
            except BaseException:
                sock.close()
                self.slots.release()
                raise
            self.connections.add(conn)
            conn.run()  # the session calls session_ended(), now or when its relay ends

        return handle

    # --- what sessions call ---------------------------------------------------

    def session_ended(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.slots.release()

    def authenticate(self, server, request):  # noqa: ANN001, ANN201
        assert self.auth is not None
        return self.auth.authenticate(server, request)

    def server_tls(self, server_index: int) -> tls.ServerTls:
        server_tls = self.tls[server_index]
        assert server_tls is not None, "TLS asked of a server without certificates"
        return server_tls

    def trusted_proxies(self, server_index: int) -> TrustedProxies:
        """Whose PROXY header may change the client address (set_real_ip_from)."""
        return self.trusted[server_index]

    def client_host(self, server, client_ip: str, log) -> str:  # noqa: ANN001
        """SMTP's client host name (SPEC 7.1): a PTR name confirmed by a forward
        lookup, or ``[UNAVAILABLE]``/``[TEMPUNAVAIL]``. The lookups are plain
        socket calls, cooperative under gevent."""
        resolver = shared_resolver(server.resolver, server.resolver_timeout)
        if resolver is None:
            return UNAVAILABLE
        log.ctx.action = ACTION_ADDRESS
        found = resolve_client_host(resolver, None if client_ip == "unix:" else client_ip)
        log.ctx.action = found.action
        for level, message in found.logs:
            log.log(level, message)
        return found.host

    # --- signals --------------------------------------------------------------

    def graceful(self) -> None:
        """Stop accepting, let sessions finish (SPEC 11 graceful shutdown)."""
        if self.stopping:
            return
        self.stopping = True
        self.log.log("notice", "gracefully shutting down")
        for server in self.servers:
            server.close()
        gevent.spawn(self._drain)

    def _drain(self) -> None:
        timeout = self.config.main.worker_shutdown_timeout
        if timeout is not None and not self.slots.join(timeout=timeout):
            for conn in list(self.connections):
                conn.shutdown_timeout()
        self.slots.join()
        self.log.log("notice", "exiting")
        self.stopped.set()

    def fast(self) -> None:
        """Exit at once; the kernel cuts the sessions (SPEC 11 TERM/INT)."""
        self.log.log("notice", "exiting")
        os._exit(0)

    def reopen(self) -> None:
        self.log.log("notice", "reopening logs")
        self.registry.reopen()

    def _watch_master(self) -> None:
        """A worker whose master is gone (killed) stops gracefully."""
        while not self.stopping:
            gevent.sleep(PARENT_CHECK_INTERVAL)
            if os.getppid() != self.master_pid:
                self.graceful()
