"""Who decides a login: the auth_http server, or the embedded users file.

One ``AuthHttpClient`` per worker (one keep-alive pool for every session of
the worker) and one ``FileAuthenticator`` per users file. A server with
``auth_http`` asks the auth server; otherwise it uses its ``auth_file``.
"""

from __future__ import annotations

from gevent import get_hub

from mailgate.auth import AuthRequest, AuthResult
from mailgate.auth_file import FileAuthenticator
from mailgate.auth_http import AuthHttpClient
from mailgate.config.model import Config, Server


class Authenticators:
    def __init__(self, config: Config) -> None:
        self.http = AuthHttpClient(pool_size=config.main.worker_connections)
        self.files: dict[str, FileAuthenticator] = {}
        for server in config.servers:
            if server.auth_http is None and server.auth_file and server.auth_file not in self.files:
                self.files[server.auth_file] = FileAuthenticator(server.auth_file)

    def authenticate(self, server: Server, request: AuthRequest) -> AuthResult:
        if server.auth_http is not None:
            return self._ask_http(server, request)
        assert server.auth_file is not None
        # Password hashing is CPU-bound and releases the GIL: run it in the
        # hub's thread pool so the worker keeps serving other sessions.
        return get_hub().threadpool.apply(self.files[server.auth_file].authenticate, (request,))

    def _ask_http(self, server: Server, request: AuthRequest) -> AuthResult:
        url = server.auth_http
        assert url is not None
        # The whole exchange must finish within auth_http_timeout of the
        # connect (SPEC 8.1). The client bounds every connect, send and read
        # by that deadline and answers "timed out" itself, so no
        # gevent.Timeout (a timer armed and cancelled per login) is needed.
        return self.http.authenticate(url, request, server.auth_http_header, server.auth_http_timeout)
