"""The end-to-end stack: real Dovecot and Postfix behind the real mailgate.

One stack for the whole e2e package (it starts in about three seconds and
is stopped after the package's last test):

    client (curl, swaks, fetchmail, imaplib, poplib, smtplib)
      -> mailgate (master + 2 workers; IMAP, POP3, SMTP submission, SMTP relay)
           -> auth_http: tests.fakes.auth_server with a routing rule (Router)
           -> Dovecot (IMAP, POP3) / Postfix (SMTP, XCLIENT from loopback)
                -> one maildir tree under the stack's temporary directory

Everything listens on free ports of 127.0.0.1 (clients also connect from
127.0.0.2) and lives in a temporary directory of its own; teardown stops
every process even when tests fail (MAILGATE_E2E_KEEP=1 keeps the directory,
logs included). A second mailgate with implicit TLS and STARTTLS
(``tls_gate``) is the hook for test_tls.py.
Missing software skips these tests on a developer machine and fails them in
CI (CI=true): see software.py and install-deps.sh.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import software
from tests.e2e.servers import DOMAIN, OWN_PGIDS, Dovecot, Maildirs, Postfix, reap_orphans, set_subreaper
from tests.fakes.auth_server import Answer, FakeAuthServer, RecordedRequest, fail, ok
from tests.integration.harness import Mailgate, free_port

# A second loopback address for clients, so that the address mailgate passes
# on with XCLIENT (the client's) differs from the one Postfix sees mailgate
# connect from (127.0.0.1).
CLIENT_ADDRESS = "127.0.0.2"

# Users and their passwords (each with "%", which auth_http must escape).
USERS = {name: f"{name}-Pa55%word"
         for name in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "ivan", "judy", "mallory")}
USERS["heidi"] = 'he idi "Pa55" \\ %word'  # a space, quotes, a backslash
USERS["kim+tag=x"] = "kim-Pa55%word"  # xtext-special characters in the login
USERS["lena"] = "Grüße-Pa55%wört"  # UTF-8
LOAD_USERS = {f"load{n:02d}": f"load{n:02d}-Pa55%word" for n in range(50)}
# Logins the auth server lets through without checking the password, so that
# Dovecot itself refuses a wrong one (as with an auth server that only routes).
PASSTHROUGH = {"dave"}
# Logins whose refusal carries Auth-Wait: the client may try again.
PATIENT = {"grace"}
# Logins sent to a Postfix smtpd that does not authorize mailgate's XCLIENT.
MISROUTED = {"mallory"}

MAILGATE_CONF = """\
worker_processes 2;
error_log {dir}/error.log info;
pid {dir}/mailgate.pid;
events {{ worker_connections 1024; }}

mail {{
    server_name mailgate.e2e.test;
    auth_http 127.0.0.1:{auth_port}/auth;
    auth_http_header X-Auth-Key "e2e secret";
    auth_http_timeout 10s;
    proxy_pass_error_message on;
    timeout 30s;
{tls_mail}
    server {{
        listen 127.0.0.1:{imap_port};
        protocol imap;
        imap_auth plain login;
        imap_capabilities IMAP4rev1 IDLE LITERAL+ SASL-IR;
    }}
    server {{
        listen 127.0.0.1:{pop3_port};
        protocol pop3;
        pop3_auth plain;
        pop3_capabilities TOP USER UIDL;
    }}
    server {{
        listen 127.0.0.1:{submission_port};
{submission_v6}
        protocol smtp;
        smtp_auth plain login;
        smtp_capabilities PIPELINING "SIZE {size_limit}" 8BITMIME ENHANCEDSTATUSCODES;
    }}
    server {{
        listen 127.0.0.1:{relay_port};
        protocol smtp;
        smtp_auth none;
        smtp_capabilities PIPELINING "SIZE {size_limit}" 8BITMIME ENHANCEDSTATUSCODES;
    }}
    # The same with challenge-response mechanisms (the auth server returns the
    # real password for the backend login).
    server {{
        listen 127.0.0.1:{imap_sasl_port};
        protocol imap;
        imap_auth plain login cram-md5;
        imap_capabilities IMAP4rev1 IDLE LITERAL+ SASL-IR;
    }}
    server {{
        listen 127.0.0.1:{pop3_sasl_port};
        protocol pop3;
        pop3_auth plain apop cram-md5;
    }}
    server {{
        listen 127.0.0.1:{submission_sasl_port};
        protocol smtp;
        smtp_auth plain login cram-md5;
        smtp_capabilities PIPELINING "SIZE {size_limit}" 8BITMIME ENHANCEDSTATUSCODES;
    }}
    # A short pre-login deadline: it must not cut logged-in sessions.
    server {{
        listen 127.0.0.1:{imap_short_port};
        protocol imap;
        timeout 2s;
        imap_capabilities IMAP4rev1 IDLE LITERAL+ SASL-IR;
    }}
{tls_servers}}}
"""

SIZE_LIMIT = 40 * 1024 * 1024  # mailgate's SIZE; Postfix allows a bit more


class Router:
    """The auth_http rule: checks passwords and sends IMAP and POP3 logins
    to Dovecot, SMTP ones (and relay envelopes for the test domain) to
    Postfix, as a production auth server would."""

    def __init__(self, users: dict[str, str], backends: dict[str, tuple[str, int]]) -> None:
        self.users = users
        self.backends = backends

    def __call__(self, request: RecordedRequest) -> Answer:
        protocol = request.header("Auth-Protocol") or ""
        backend = self.backends.get(protocol)
        if backend is None:
            return fail("Temporary server problem, try again later", error_code="451 4.3.0")
        if request.header("X-Auth-Key") != "e2e secret":
            return fail("Temporary server problem, try again later", error_code="451 4.3.0")
        if request.header("Auth-Method") == "none":
            rcpt = (request.header("Auth-SMTP-To") or "").lower()
            if rcpt.rstrip().endswith(f"@{DOMAIN}>"):
                return ok(*backend)
            return fail("Relay access denied", error_code="550 5.7.1")
        login = request.login
        method = request.header("Auth-Method")
        if method in ("cram-md5", "apop"):
            return self.challenge_response(request, method, backend)
        if login in PASSTHROUGH:
            return ok(*backend)
        if login in MISROUTED and protocol == "smtp" and self.users.get(login) == request.password:
            return ok(*self.backends["smtp-no-xclient"])
        if self.users.get(login) != request.password:
            if login in PATIENT:
                return fail("Invalid login or password", wait=1)
            return fail("Invalid login or password", error_code="535 5.7.8")
        return ok(*backend)

    def challenge_response(self, request: RecordedRequest, method: str, backend: tuple[str, int]) -> Answer:
        """APOP and CRAM-MD5: check the digest against the salt mailgate sent,
        and give mailgate the real password for its plain login to the backend."""
        password = self.users.get(request.login)
        salt = (request.header("Auth-Salt") or "").encode()
        if password is not None and salt:
            if method == "cram-md5":
                expected = hmac.new(password.encode(), salt, hashlib.md5).hexdigest()
            else:
                expected = hashlib.md5(salt + password.encode()).hexdigest()
            if hmac.compare_digest(expected, request.password):
                return ok(*backend, password=password)  # sent as it is: nginx unescapes no answer
        return fail("Invalid login or password", error_code="535 5.7.8")


@dataclasses.dataclass
class Stack:
    dir: Path
    maildirs: Maildirs
    dovecot: Dovecot
    postfix: Postfix
    auth: FakeAuthServer
    mailgate: Mailgate
    imap_port: int
    pop3_port: int
    submission_port: int
    relay_port: int
    imap_sasl_port: int
    pop3_sasl_port: int
    submission_sasl_port: int
    imap_short_port: int
    users: dict[str, str]
    submission_v6_port: int | None = None  # on [::1], where the machine has IPv6 loopback
    extra_logs: list[Path] = dataclasses.field(default_factory=list)

    def password(self, user: str) -> str:
        return self.users[user]

    def mailgate_alive(self) -> bool:
        return self.mailgate.proc is not None and self.mailgate.proc.poll() is None

    def log_tails(self, lines: int = 40) -> str:
        mg = self.mailgate.log().splitlines()[-lines:]
        text = "--- mailgate error.log ---\n" + "\n".join(mg) + "\n" + self.mailgate.stderr()[-2000:]
        for path in self.extra_logs:
            if path.exists():
                text += f"--- {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text + self.dovecot.logs(lines) + self.postfix.logs(lines)

    def problems(self, since: int = 0) -> list[str]:
        """mailgate log lines at [error] or worse, after character ``since``."""
        return [line for line in self.mailgate.log()[since:].splitlines()
                if any(f"[{level}]" in line for level in ("error", "crit", "alert", "emerg"))]


_cleanups: list = []


@atexit.register
def _last_resort() -> None:
    """If pytest dies before fixture teardown, still stop the servers."""
    for cleanup in reversed(_cleanups):
        try:
            cleanup()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def _stop_mailgate(mailgate: Mailgate) -> None:
    """Graceful stop, then whatever is left of its process group goes."""
    if mailgate.proc is None:
        return
    OWN_PGIDS.add(mailgate.proc.pid)
    if mailgate.proc.poll() is None:
        try:
            mailgate.stop(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    mailgate.kill()
    reap_orphans()


def _requirements() -> None:
    software.require("dovecot", "doveconf", "postfix", "postconf")
    software.require_root("the end-to-end suite")
    software.require_accounts("dovecot")
    software.require_accounts("postfix")


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    _requirements()
    root = Path(tempfile.mkdtemp(prefix="mailgate-e2e-"))
    root.chmod(0o755)  # the servers' unprivileged processes traverse it
    reaping = set_subreaper(True)
    steps: list = []

    def cleanup() -> None:
        while steps:
            step = steps.pop()
            try:
                step()
            except Exception:  # noqa: BLE001 - keep tearing down
                pass

    _cleanups.append(cleanup)
    try:
        maildirs = Maildirs(root / "mail")
        users = {**USERS, **LOAD_USERS}
        dovecot = Dovecot(root / "dovecot", maildirs, users)
        steps.append(dovecot.stop)
        dovecot.start()
        postfix = Postfix(root / "postfix", maildirs, users)
        steps.append(postfix.stop)
        postfix.start()
        router = Router(users, {"imap": ("127.0.0.1", dovecot.imap_port),
                                "pop3": ("127.0.0.1", dovecot.pop3_port),
                                "smtp": ("127.0.0.1", postfix.port),
                                "smtp-no-xclient": ("127.0.0.1", postfix.strict_port)})
        auth = FakeAuthServer(router).start()
        steps.append(auth.stop)
        ports = dict(imap_port=free_port(), pop3_port=free_port(), submission_port=free_port(),
                     relay_port=free_port(), imap_sasl_port=free_port(), pop3_sasl_port=free_port(),
                     submission_sasl_port=free_port(), imap_short_port=free_port())
        v6_port = free_port(socket.AF_INET6, "::1") if ipv6_loopback() else None
        mg_dir = root / "mailgate"
        mailgate = Mailgate(mg_dir, MAILGATE_CONF.format(
            dir=mg_dir, auth_port=auth.port, size_limit=SIZE_LIMIT, tls_mail="", tls_servers="",
            submission_v6=f"        listen [::1]:{v6_port};" if v6_port else "", **ports))
        steps.append(lambda: _stop_mailgate(mailgate))
        mailgate.start(ports=tuple(ports.values()))
        yield Stack(root, maildirs, dovecot, postfix, auth, mailgate, users=users, submission_v6_port=v6_port,
                    **ports)
    finally:
        cleanup()
        _cleanups.remove(cleanup)
        reap_orphans()
        if reaping:
            set_subreaper(False)
        if os.environ.get("MAILGATE_E2E_KEEP"):
            print(f"\nmailgate e2e: kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def e2e(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The stack, checked after each test: mailgate still serving."""
    assert stack.mailgate_alive(), f"mailgate is not running:\n{stack.log_tails()}"
    request.node.e2e_stack = stack
    yield stack
    assert stack.mailgate_alive(), f"mailgate died during the test:\n{stack.log_tails()}"


@pytest.fixture
def tool():
    """``tool("curl")``: the program's path, or skip (dev) / fail (CI)."""
    return lambda name: software.require(name)[name]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A per-test directory the servers' users can read (for fetchmail's
    files, messages to upload)."""
    tmp_path.chmod(0o755)
    return tmp_path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    stack = getattr(item, "e2e_stack", None)
    if stack is not None and report.failed and call.when in ("call", "teardown"):
        report.sections.append(("e2e server logs", stack.log_tails()))


def pytest_terminal_summary(terminalreporter) -> None:
    terminalreporter.write_line(f"e2e real software: {software.summary()}")


# --- TLS hook -----------------------------------------------------------------

TLS_MAIL = """\
    ssl_certificate {cert};
    ssl_certificate_key {key};
"""

TLS_SERVERS = """\
    server {{ listen 127.0.0.1:{imaps_port} ssl; protocol imap; imap_auth plain login; }}
    server {{ listen 127.0.0.1:{pop3s_port} ssl; protocol pop3; }}
    server {{ listen 127.0.0.1:{smtps_port} ssl; protocol smtp; smtp_auth plain login; }}
    server {{ listen 127.0.0.1:{imap_starttls_port}; protocol imap; starttls only; imap_auth plain login; }}
    server {{ listen 127.0.0.1:{pop3_starttls_port}; protocol pop3; starttls only; }}
    server {{ listen 127.0.0.1:{smtp_starttls_port}; protocol smtp; starttls only; smtp_auth plain login; }}
"""


@dataclasses.dataclass
class TlsGate:
    """A second mailgate, in front of the same backends, serving implicit
    TLS and STARTTLS with a self-signed certificate."""

    mailgate: Mailgate
    cert: Path
    ports: dict[str, int]


@pytest.fixture(scope="package")
def tls_gate(stack: Stack) -> Iterator[TlsGate]:
    """Skips while mailgate refuses its TLS directives ("not supported yet");
    once they are accepted, the TLS tests run against real servers."""
    openssl = software.require("openssl")["openssl"]
    directory = stack.dir / "mailgate-tls"
    directory.mkdir()
    cert, key = directory / "cert.pem", directory / "key.pem"
    made = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                           "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                           "-keyout", str(key), "-out", str(cert)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    ports = {name: free_port() for name in ("imaps_port", "pop3s_port", "smtps_port", "imap_starttls_port",
                                             "pop3_starttls_port", "smtp_starttls_port")}
    plain = dict(imap_port=free_port(), pop3_port=free_port(), submission_port=free_port(), relay_port=free_port(),
                 imap_sasl_port=free_port(), pop3_sasl_port=free_port(), submission_sasl_port=free_port(),
                 imap_short_port=free_port())
    text = MAILGATE_CONF.format(dir=directory, auth_port=stack.auth.port, size_limit=SIZE_LIMIT, submission_v6="",
                                tls_mail=TLS_MAIL.format(cert=cert, key=key),
                                tls_servers=TLS_SERVERS.format(**ports), **plain)
    gate = Mailgate(directory, text)
    stack.extra_logs += [gate.log_path, gate.stderr_path]
    check = gate.cli("test")
    if check.returncode != 0:
        said = (check.stderr + check.stdout).strip()
        if "not supported yet" in said:
            pytest.skip("mailgate does not serve TLS yet: " + said.splitlines()[0])
        pytest.fail(f"mailgate refuses the TLS configuration of the e2e suite:\n{said}\n{text}", pytrace=False)
    try:
        gate.start(ports=tuple(v for k, v in ports.items() if "starttls" in k) + tuple(plain.values()))
        yield TlsGate(gate, cert, ports)
    finally:
        _stop_mailgate(gate)

