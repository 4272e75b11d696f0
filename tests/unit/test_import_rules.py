"""Import rules (DESIGN.md "Rules that keep it simple"), checked in a fresh
interpreter so that nothing imported by other tests hides a violation.

* ``mailgate.config`` imports no runtime module: the master loads and
  validates configurations and must not pull in gevent, requests or ssl.
* ``mailgate.protocol`` is sans-IO: standard library only, and never
  socket, ssl, gevent or requests.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("gevent", "requests", "ssl", "urllib3")
# mailgate modules that do I/O; configuration and protocol code must not need them.
MAILGATE_RUNTIME = ("mailgate.worker", "mailgate.master", "mailgate.auth_http", "mailgate.tls_context",
                    "mailgate.upstream", "mailgate.relay", "mailgate.tls", "mailgate.sockets")
NOT_IN_PROTOCOL = ("socket", "ssl", "selectors", "asyncio", "gevent", "requests")

PROBE = """
import importlib, json, pkgutil, sys
before = set(sys.modules)
package = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def imported_by(package: str) -> list[str]:
    """Modules that importing ``package`` and all its submodules loads."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, package],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    return list(json.loads(result.stdout))


def top_level(names: list[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def test_config_imports_no_runtime_module() -> None:
    modules = imported_by("mailgate.config")
    assert not top_level(modules) & set(RUNTIME), modules
    assert not [m for m in modules if m.startswith(MAILGATE_RUNTIME)], modules


def test_protocol_imports_only_the_standard_library() -> None:
    modules = imported_by("mailgate.protocol")
    foreign = top_level(modules) - set(sys.stdlib_module_names) - {"mailgate"}
    assert not foreign, sorted(foreign)
    assert not top_level(modules) & {"gevent", "requests", "ssl"}, modules
    assert not [m for m in modules if m.startswith(MAILGATE_RUNTIME)], modules


def test_protocol_sources_import_no_io_module() -> None:
    """The sans-IO rule, read from the source: no module of the package
    imports socket, ssl or an event loop, even one the stdlib loads anyway."""
    for path in sorted((ROOT / "mailgate" / "protocol").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in NOT_IN_PROTOCOL, f"{path}: import {name}"


MASTER_PROBE = """
import json, sys
import mailgate.cli, mailgate.master.arbiter, mailgate.checks
print(json.dumps(sorted(sys.modules)))
"""


def test_master_imports_no_gevent_requests_or_ssl() -> None:
    """The master (and the CLI that becomes it) must not load what workers
    monkey-patch after fork: gevent, requests, ssl (DESIGN "Processes")."""
    result = subprocess.run([sys.executable, "-c", MASTER_PROBE], cwd=ROOT, capture_output=True, text=True,
                            check=True)
    modules = json.loads(result.stdout)
    assert not top_level(modules) & {"gevent", "requests", "ssl", "urllib3"}, sorted(
        m for m in modules if m.split(".")[0] in {"gevent", "requests", "ssl", "urllib3"})
    assert not [m for m in modules if m.startswith(("mailgate.worker.process", "mailgate.tls", "mailgate.auth_http"))]
