"""Which real mail software is on this machine, its versions, and what a test
does when some is missing.

Outside CI a missing program skips the tests that need it, with the reason
and the command that installs it; in CI (``CI=true``) it fails them, so a CI
machine that lost a package cannot pass by skipping the suite.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

import pytest

INSTALL_HINT = "install with: sudo tests/e2e/install-deps.sh"

# Debian puts the servers in sbin, which a non-login PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])

# program -> (Debian package, command printing its version, pattern of the version)
PROGRAMS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "dovecot": ("dovecot-core, dovecot-imapd, dovecot-pop3d", ("--version",), r"^(\S+)"),
    "postfix": ("postfix", (), r""),  # from postconf below
    "postconf": ("postfix", ("-d", "-h", "mail_version"), r"^(\S+)"),
    "curl": ("curl", ("--version",), r"^curl (\S+)"),
    "swaks": ("swaks", ("--version",), r"swaks version (\S+)"),
    "fetchmail": ("fetchmail", ("--version",), r"fetchmail release (\S+?)\+"),
    "openssl": ("openssl", ("version",), r"^OpenSSL (\S+)"),
}

# System accounts the private servers run their processes as; the Debian
# packages create them.
ACCOUNTS = {
    "dovecot": ("dovecot", "dovenull"),
    "postfix": ("postfix",),
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(reason: str) -> None:
    """Skip (dev box) or fail (CI) the current test or fixture."""
    reason = f"{reason}; {INSTALL_HINT}"
    if in_ci():
        pytest.fail(f"CI=true and the end-to-end suite cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def which(program: str) -> str | None:
    return shutil.which(program, path=SEARCH_PATH)


def require(*programs: str) -> dict[str, str]:
    """Paths of ``programs``; skips or fails when one is missing."""
    paths = {}
    for program in programs:
        path = which(program)
        if path is None:
            package = PROGRAMS.get(program, (program,))[0]
            missing(f"{program} not found (Debian package {package})")
        paths[program] = path  # type: ignore[assignment]
    return paths


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        missing(f"{what} runs a private server instance that switches to its own system users: run as root")


def require_accounts(server: str) -> None:
    import pwd

    for name in ACCOUNTS[server]:
        try:
            pwd.getpwnam(name)
        except KeyError:
            missing(f"system user {name!r} missing (created by the {server} package)")


@functools.cache
def version(program: str) -> str | None:
    """The version ``program`` reports, or None if it is not installed."""
    if program == "postfix":
        return version("postconf") if which("postfix") else None
    path = which(program)
    if path is None:
        return None
    _, args, pattern = PROGRAMS[program]
    try:
        done = subprocess.run([path, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, done.stdout + done.stderr, re.MULTILINE)
    return match.group(1) if match else None


def debian_version(package: str) -> str | None:
    """The installed Debian package version (``dpkg-query``), if any."""
    if which("dpkg-query") is None:
        return None
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def summary() -> str:
    """One line naming the real software found, for the test report."""
    parts = []
    for program, package in (("dovecot", "dovecot-core"), ("postfix", "postfix"), ("curl", "curl"),
                             ("swaks", "swaks"), ("fetchmail", "fetchmail")):
        found = version(program)
        deb = debian_version(package)
        if found is None:
            parts.append(f"{program} missing")
        else:
            parts.append(f"{program} {found}" + (f" (deb {deb})" if deb else ""))
    return ", ".join(parts)
