"""The configuration files shipped in etc/: both load, and the YAML and the
nginx-syntax file mean exactly the same thing."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mailgate.config import load, load_with_warnings
from mailgate.config.model import Config, Source

ETC = Path(__file__).resolve().parents[2] / "etc"
NO_SOURCE = Source("", 0)


def without_sources(value: Any) -> Any:
    """``value`` with every Source blanked and Config.path emptied, so that
    two configurations read from different files compare by meaning."""
    if isinstance(value, Source):
        return NO_SOURCE
    if isinstance(value, tuple):
        return tuple(without_sources(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: without_sources(getattr(value, f.name))
                   for f in dataclasses.fields(value)}
        if isinstance(value, Config):
            changes["path"] = ""
        return dataclasses.replace(value, **changes)
    return value


def test_yaml_and_nginx_syntax_files_are_equal() -> None:
    native = load(str(ETC / "mailgate.yaml"))
    nginx = load(str(ETC / "mailgate.conf"))
    assert native != nginx  # they differ by where things were written...
    assert without_sources(native) == without_sources(nginx)  # ...and only by that


def test_shipped_config_content() -> None:
    config, warnings = load_with_warnings(str(ETC / "mailgate.yaml"))
    assert warnings == []
    assert config.main.worker_processes == 1
    assert config.main.pid == str(ETC.parent / "run" / "mailgate.pid")
    assert [(t.kind, t.level) for t in config.main.error_log] == [("stderr", "info")]
    (server,) = config.servers
    assert server.protocol == "pop3" and server.server_name == "localhost"
    assert [l.text for l in server.listens] == ["127.0.0.1:1110"]
    assert server.auth_file == str(ETC / "users.yaml") and server.auth_http is None
    assert server.proxy_pass_error_message is True
    assert [b.listen.text for b in config.bindings] == ["127.0.0.1:1110"]
