"""Checks of a loaded configuration that need more than the config package.

The config package checks syntax and meaning without importing runtime
modules; what it cannot see is checked here, before anything serves: every
``auth_file`` loads, every ``resolver`` names usable servers. Used by
``mailgate test|start|reload`` and by the master before it reloads.
"""

from __future__ import annotations

from mailgate.auth_file import load_users
from mailgate.config.model import Config
from mailgate.dns import Resolver
from mailgate.errors import ConfigError
from mailgate.realip import TrustedProxies


def check(config: Config) -> None:
    """Raise ConfigError (with file and line) for the first problem found."""
    for path in sorted({server.auth_file for server in config.servers if server.auth_file}):
        load_users(path)
    for server in config.servers:
        try:
            TrustedProxies.from_directive_values(server.set_real_ip_from)
        except ValueError as err:
            raise ConfigError(f"{err} in \"set_real_ip_from\"", server.source.file, server.source.line) from None
        if not server.resolver:
            continue
        try:
            Resolver.from_directive(server.resolver, server.resolver_timeout)
        except ConfigError as err:
            if err.file is not None:
                raise
            raise ConfigError(err.message, server.source.file, server.source.line) from None
