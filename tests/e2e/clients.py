"""Real clients (curl, swaks, fetchmail) and Python's imaplib, poplib and
smtplib, each bounded in time, pointed at mailgate.

Transport security is one parameter everywhere (``Tls``): plain today. The
implicit-TLS and STARTTLS variants are filled in for each client so that the
TLS tests (test_tls.py) only need a mailgate that serves TLS.
"""

from __future__ import annotations

import dataclasses
import imaplib
import os
import poplib
import shlex
import smtplib
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

TIMEOUT = 30.0  # seconds: the bound on one client run

CLIENT_HELO = "client.e2e.example"


@dataclasses.dataclass(frozen=True)
class Tls:
    """How a client secures its connection to mailgate: ``mode`` is
    ``plain``, ``implicit`` (993/995/465 style) or ``starttls`` (STARTTLS,
    STLS); ``cafile`` is the certificate to trust."""

    mode: str = "plain"
    cafile: str | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cafile)
        context.check_hostname = False  # the test certificate names 127.0.0.1 only as CN
        return context


PLAIN = Tls()


@dataclasses.dataclass(repr=False)
class Run:
    args: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float

    def __str__(self) -> str:
        return (f"$ {shlex.join(self.args)}\nexit {self.returncode} after {self.seconds:.1f}s\n"
                f"--- stderr ---\n{self.stderr.decode(errors='replace')[-4000:]}\n"
                f"--- stdout ---\n{self.stdout.decode(errors='replace')[-2000:]}")

    __repr__ = __str__  # what an assertion message shows

    def expect(self, *codes: int) -> Run:
        """Fail the test, with the whole transcript, unless the exit status
        is one of ``codes`` (default 0)."""
        if self.returncode not in (codes or (0,)):
            pytest.fail(f"unexpected exit status {self.returncode}\n{self}", pytrace=False)
        return self


def run(args: list[str], *, timeout: float = TIMEOUT, env: dict[str, str] | None = None,
        input: bytes | None = None, cwd: Path | None = None) -> Run:
    started = time.monotonic()
    try:
        done = subprocess.run(args, input=input, capture_output=True, timeout=timeout, env=env, cwd=cwd,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        return Run(args, -1, err.stdout or b"", (err.stderr or b"") + b"\n[timed out]", time.monotonic() - started)
    return Run(args, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


# --- curl ---------------------------------------------------------------------


def curl_scheme(protocol: str, tls: Tls) -> str:
    if tls.mode == "implicit":
        return protocol + "s"
    return protocol


def curl_tls_args(tls: Tls) -> list[str]:
    if tls.mode == "plain":
        return []
    args = ["--cacert", tls.cafile] if tls.cafile else ["--insecure"]
    if tls.mode == "starttls":
        args.append("--ssl-reqd")
    return args


def curl(url_path: str, protocol: str, port: int, user: str, password: str, *, tls: Tls = PLAIN,
         extra: list[str] | None = None, timeout: float = TIMEOUT, interface: str | None = None) -> Run:
    """curl against mailgate; ``url_path`` is what follows host:port."""
    args = ["curl", "--silent", "--show-error", "--max-time", str(int(timeout)), "--connect-timeout", "10",
            "--user", f"{user}:{password}", *curl_tls_args(tls)]
    if interface:
        args += ["--interface", interface]
    args += extra or []
    args.append(f"{curl_scheme(protocol, tls)}://127.0.0.1:{port}{url_path}")
    return run(args, timeout=timeout + 10)


def curl_smtp_send(port: int, user: str, password: str, sender: str, recipients: list[str], message: Path, *,
                   tls: Tls = PLAIN, interface: str | None = None, timeout: float = TIMEOUT) -> Run:
    extra = ["--mail-from", sender, "--upload-file", str(message)]
    for rcpt in recipients:
        extra += ["--mail-rcpt", rcpt]
    return curl(f"/{CLIENT_HELO}", "smtp", port, user, password, tls=tls, extra=extra, timeout=timeout,
                interface=interface)


# --- swaks --------------------------------------------------------------------


def swaks(port: int, *, user: str | None, password: str | None, auth: str | None, sender: str, to: str,
          data: Path | None = None, pipeline: bool = False, tls: Tls = PLAIN, interface: str | None = None,
          timeout: float = TIMEOUT, extra: list[str] | None = None) -> Run:
    args = ["swaks", "--server", f"127.0.0.1:{port}", "--helo", CLIENT_HELO, "--from", sender, "--to", to,
            "--timeout", str(int(timeout))]
    if auth:
        args += ["--auth", auth, "--auth-user", user or "", "--auth-password", password or ""]
    if pipeline:
        args.append("--pipeline")
    if data is not None:
        args += ["--data", str(data)]
    if interface:
        args += ["--local-interface", interface]
    if tls.mode == "implicit":
        args.append("--tls-on-connect")
    elif tls.mode == "starttls":
        args.append("--tls")
    args += extra or []
    return run(args, timeout=timeout + 10)


# --- fetchmail ----------------------------------------------------------------

FETCHMAIL_RC = """\
set no syslog
set invisible
poll 127.0.0.1 with protocol {protocol} service {port} auth {auth} timeout {timeout}:
    user "{user}" there with password "{password}" is "root" here
    options keep fetchall no rewrite no mimedecode {tls}
    mda "{mda}"
"""


def fetchmail(directory: Path, protocol: str, port: int, user: str, password: str, *, tls: Tls = PLAIN,
              auth: str | None = None, timeout: float = TIMEOUT) -> tuple[Run, list[bytes]]:
    """Fetch every message with fetchmail (``keep``), delivering each to a
    file through an MDA; returns the run and the messages as delivered
    (fetchmail hands its MDA LF line ends). ``protocol`` is pop3, imap or
    apop; ``auth`` fetchmail's mechanism (default: password, i.e. USER/PASS
    or LOGIN; apop needs none)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "delivered"
    out.mkdir(exist_ok=True)
    mda = directory / "mda.sh"
    mda.write_text(f'#!/bin/sh\nexec cat > "{out}/$(date +%s%N).$$"\n')
    mda.chmod(0o755)
    if tls.mode == "plain":
        tls_opts = "sslproto ''"
    else:
        # fetchmail matches DNS names only; the test certificate names localhost.
        tls_opts = ("ssl" if tls.mode == "implicit" else "sslproto tls1.2+") + " sslcertck sslcommonname localhost"
        if tls.cafile:
            tls_opts += f" sslcertfile '{tls.cafile}'"
    for char in '"\\':
        assert char not in user + password, "fetchmailrc quoting kept simple"
    rc = directory / "fetchmailrc"
    if auth is None:
        auth = "any" if protocol == "apop" else "password"
    rc.write_text(FETCHMAIL_RC.format(protocol=protocol.upper(), port=port, user=user, password=password, auth=auth,
                                      timeout=int(timeout), tls=tls_opts, mda=mda))
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(directory), FETCHMAILHOME=str(directory))
    result = run(["fetchmail", "--verbose", "--nodetach", "--nosyslog", "--fetchmailrc", str(rc), "--pidfile",
                  str(directory / "fetchmail.pid"), "--idfile", str(directory / "fetchids")],
                 env=env, timeout=timeout + 10, cwd=directory)
    delivered = [path.read_bytes() for path in sorted(out.iterdir())]
    return result, delivered


# --- Python's standard library ------------------------------------------------


def imap(port: int, tls: Tls = PLAIN, timeout: float = TIMEOUT) -> imaplib.IMAP4:
    if tls.mode == "implicit":
        return imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=tls.context(), timeout=timeout)
    conn = imaplib.IMAP4("127.0.0.1", port, timeout=timeout)
    if tls.mode == "starttls":
        conn.starttls(tls.context())
    return conn


def pop3(port: int, tls: Tls = PLAIN, timeout: float = TIMEOUT) -> poplib.POP3:
    if tls.mode == "implicit":
        return poplib.POP3_SSL("127.0.0.1", port, context=tls.context(), timeout=timeout)
    conn = poplib.POP3("127.0.0.1", port, timeout=timeout)
    if tls.mode == "starttls":
        conn.stls(tls.context())
    return conn


def smtp(port: int, tls: Tls = PLAIN, source: str | None = None, timeout: float = TIMEOUT) -> smtplib.SMTP:
    source_address = (source, 0) if source else None
    if tls.mode == "implicit":
        conn: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", port, local_hostname=CLIENT_HELO, timeout=timeout,
                                              source_address=source_address, context=tls.context())
    else:
        conn = smtplib.SMTP("127.0.0.1", port, local_hostname=CLIENT_HELO, timeout=timeout,
                            source_address=source_address)
    conn.ehlo()
    if tls.mode == "starttls":
        conn.starttls(context=tls.context())
        conn.ehlo()
    return conn


def close_imap(conn: imaplib.IMAP4) -> None:
    """Drop the connection unless LOGOUT already did."""
    if conn.state != "LOGOUT":
        try:
            conn.shutdown()
        except OSError:
            pass


def imap_fetch_all(conn: imaplib.IMAP4) -> dict[int, bytes]:
    """UID -> BODY[] of every message in the selected mailbox."""
    typ, data = conn.uid("SEARCH", "ALL")
    assert typ == "OK", data
    uids = [int(x) for x in data[0].split()]
    found = {}
    for uid in uids:
        typ, data = conn.uid("FETCH", str(uid), "(RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK", data
        parts = [item for item in data if isinstance(item, tuple)]
        assert len(parts) == 1, data
        meta, body = parts[0]
        size = int(meta.split(b"RFC822.SIZE ")[1].split()[0].rstrip(b")"))
        assert size == len(body), (uid, size, len(body))
        found[uid] = body
    return found


class Idle:
    """IMAP IDLE on an imaplib connection (imaplib has no IDLE before 3.14)."""

    def __init__(self, conn: imaplib.IMAP4, tag: bytes = b"IDLE1") -> None:
        self.conn = conn
        self.tag = tag
        self.lines: list[bytes] = []

    def start(self, timeout: float = TIMEOUT) -> bytes:
        self.conn.send(self.tag + b" IDLE\r\n")
        return self.read_until(lambda line: line.startswith(b"+"), timeout)

    def read_until(self, done, timeout: float = TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        sock: socket.socket = self.conn.sock
        while time.monotonic() < deadline:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                line = self.conn.readline()
            except (TimeoutError, socket.timeout):
                break
            if not line:
                raise ConnectionError(f"connection closed during IDLE after {self.lines!r}")
            self.lines.append(line)
            if done(line):
                return line
        raise TimeoutError(f"no matching line within {timeout}s; got {self.lines!r}")

    def wait_exists(self, count: int, timeout: float = TIMEOUT) -> bytes:
        want = b"* %d EXISTS" % count
        return self.read_until(lambda line: line.rstrip() == want, timeout)

    def done(self, timeout: float = TIMEOUT) -> bytes:
        self.conn.send(b"DONE\r\n")
        line = self.read_until(lambda line: line.startswith(self.tag + b" "), timeout)
        self.conn.sock.settimeout(timeout)
        return line
