"""Private instances of Dovecot and Postfix for the end-to-end tests.

Each runs from a directory of its own with its own configuration, runtime,
state, queue and log paths, on free ports of 127.0.0.1; neither touches the
system's configuration (/etc/dovecot, /etc/postfix/main.cf) or its running
instances, if any. Both share one maildir tree: Postfix delivers into it
(virtual(8)), Dovecot serves it, so a message submitted through mailgate is
fetched back through mailgate. Mail files belong to ``nobody``.

Every wait is bounded, and ``stop()`` leaves no process behind: the servers'
whole process groups are killed if a polite stop does not end them.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from tests.integration.harness import free_port

START_TIMEOUT = 30.0  # seconds for a server to start serving
STOP_TIMEOUT = 15.0

DOMAIN = "e2e.test"
MAIL_USER = "nobody"  # owner of every mailbox: Dovecot's mail processes and Postfix's virtual(8)


def mail_ids() -> tuple[int, int]:
    entry = pwd.getpwnam(MAIL_USER)
    return entry.pw_uid, entry.pw_gid


# --- processes ----------------------------------------------------------------


def banner(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bytes:
    """The first line a server sends on ``port`` (b"" if none)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data
    except OSError:
        return b""


def wait_until(predicate, timeout: float, what: str, alive=None) -> object:
    """Poll ``predicate`` until it is true; fail after ``timeout`` or as soon
    as ``alive()`` says the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if alive is not None and not alive():
            raise RuntimeError(f"server died while waiting for {what}")
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def pgid_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(_stat(pid)[1] == pgid and _stat(pid)[0] != "Z" for pid in _pids())


def kill_group(pgid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM a process group, then SIGKILL what is left; bounded."""
    OWN_PGIDS.add(pgid)
    for signo, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, signo)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            reap_orphans()
            if not pgid_alive(pgid):
                return
            time.sleep(0.05)


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _stat(pid: int) -> tuple[str, int, int]:
    """(state, pgid, ppid) of ``pid``; ("", -1, -1) if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "", -1, -1
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[3]), int(fields[1])


PR_SET_CHILD_SUBREAPER = 36

# Process groups of the servers started here: only their zombies are reaped.
OWN_PGIDS: set[int] = set()


def set_subreaper(on: bool) -> bool:
    """Adopt orphaned descendants (Postfix's master runs in a session of its
    own; when it exits its children would be reparented to PID 1, which in
    some containers never reaps them). Returns whether it worked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_orphans(pgids: Iterable[int] | None = None) -> None:
    """Reap zombie children of this process adopted as orphans from the
    process groups of the servers started here (``OWN_PGIDS``, or ``pgids``),
    and no others: another test's child is for it to wait for."""
    me = os.getpid()
    wanted = set(pgids) if pgids is not None else OWN_PGIDS
    for pid in _pids():
        state, pgid, ppid = _stat(pid)
        if ppid != me or state != "Z" or pgid not in wanted:
            continue
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def descendants_in(directory: Path) -> list[int]:
    """Processes whose working directory is inside ``directory``: Postfix's
    daemons chdir to their queue directory, so this finds any stray one."""
    found = []
    root = str(directory)
    for pid in _pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if (cwd == root or cwd.startswith(root + "/")) and _stat(pid)[0] != "Z":
            found.append(pid)
    return found


# --- mailboxes ----------------------------------------------------------------


class Maildirs:
    """The maildir tree both servers use: ``<base>/<user>/Maildir``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.uid, self.gid = mail_ids()
        self.base.mkdir(parents=True, exist_ok=True)
        os.chown(self.base, self.uid, self.gid)
        self._serial = 0

    def maildir(self, user: str) -> Path:
        return self.base / user / "Maildir"

    def create(self, user: str) -> Path:
        top = self.base / user
        box = self.maildir(user)
        for path in (top, box, box / "cur", box / "new", box / "tmp"):
            path.mkdir(exist_ok=True)
            os.chown(path, self.uid, self.gid)
            path.chmod(0o700)
        return box

    def add(self, user: str, message: bytes, *, seen: bool = False) -> Path:
        """Put ``message`` (bytes exactly as they should be served) into the
        mailbox, as a delivery agent would: tmp/ then rename into new/ or cur/."""
        box = self.create(user)
        self._serial += 1
        name = f"{1700000000 + self._serial}.M{self._serial:06d}P{os.getpid()}.e2e"
        tmp = box / "tmp" / name
        tmp.write_bytes(message)
        os.chown(tmp, self.uid, self.gid)
        tmp.chmod(0o600)
        final = box / "cur" / f"{name}:2,S" if seen else box / "new" / name
        tmp.rename(final)
        return final

    def messages(self, user: str) -> list[Path]:
        box = self.maildir(user)
        found: list[Path] = []
        for sub in ("new", "cur"):
            if (box / sub).is_dir():
                found += [p for p in (box / sub).iterdir() if p.is_file()]
        return sorted(found)

    def find(self, user: str, needle: bytes) -> list[Path]:
        """Messages of ``user`` whose header contains ``needle`` (a
        Message-ID, say); only the first 64 KB of each file are read."""
        found = []
        for path in self.messages(user):
            try:
                with open(path, "rb") as handle:
                    head = handle.read(65536)
            except FileNotFoundError:  # moved from new/ to cur/ meanwhile
                continue
            if needle in head.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]:
                found.append(path)
        return found

    def wait_for(self, user: str, needle: bytes, timeout: float = 30.0, count: int = 1) -> list[Path]:
        """Messages of ``user`` with ``needle`` in their header, once ``count`` are there."""
        return wait_until(lambda: (found := self.find(user, needle)) and len(found) >= count and found,
                          timeout, f"{count} message(s) with {needle!r} in {user}'s maildir")  # type: ignore[return-value]

    def wait_for_all(self, user: str, needles: list[bytes], timeout: float = 60.0) -> None:
        """Until each of ``needles`` is in the header of one of ``user``'s messages."""
        def missing() -> list[bytes]:
            heads = []
            for path in self.messages(user):
                try:
                    with open(path, "rb") as handle:
                        heads.append(handle.read(65536).split(b"\n\n", 1)[0])
                except FileNotFoundError:
                    return needles
            return [needle for needle in needles if not any(needle in head for head in heads)]

        try:
            wait_until(lambda: not missing(), timeout, f"{len(needles)} messages in {user}'s maildir")
        except TimeoutError:
            raise AssertionError(f"never delivered to {user}: {missing()!r}") from None


# --- Dovecot ------------------------------------------------------------------

DOVECOT_CONF = """\
# Private Dovecot for mailgate's end-to-end tests; nothing system-wide.
instance_name = {instance}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
debug_log_path = {dir}/dovecot.log

protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_cache_size = 0
login_greeting = Dovecot e2e ready.

mail_location = maildir:{mail}/%n/Maildir
mail_max_userip_connections = 1000
first_valid_uid = 1
mail_fsync = never
pop3_uidl_format = %08Xu%08Xv
imap_idle_notify_interval = 2 mins

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {dir}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {dir}/users
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = 1000
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
  service_count = 0
  process_min_avail = 1
  client_limit = 1000
}}
service imap {{
  process_limit = 1024
}}
protocol imap {{
  mail_plugins = $mail_plugins imap_zlib
}}
# No per-IP auth penalty (as Dovecot's documentation shows): every login comes
# from mailgate's one address, so one user's wrong passwords would slow down
# everyone's logins. Dovecot's auth process logs that it cannot reach the socket.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service pop3 {{
  process_limit = 1024
}}
"""


class Dovecot:
    """``dovecot -c <private conf> -F``, a child in a session of its own."""

    def __init__(self, directory: Path, maildirs: Maildirs, users: dict[str, str]) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.maildirs = maildirs
        self.users = dict(users)
        self.imap_port = free_port()
        self.pop3_port = free_port()
        self.conf = self.dir / "dovecot.conf"
        self.log_path = self.dir / "dovecot.log"
        self.out_path = self.dir / "dovecot.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.instance = f"mailgate-e2e-{os.getpid()}"

    def write(self) -> None:
        self.conf.write_text(DOVECOT_CONF.format(instance=self.instance, dir=self.dir, mail=self.maildirs.base,
                                                 imap_port=self.imap_port, pop3_port=self.pop3_port))
        uid, gid = mail_ids()
        lines = []
        for user, password in self.users.items():
            assert ":" not in user + password and "\n" not in user + password
            home = self.maildirs.base / user
            lines.append(f"{user}:{{PLAIN}}{password}:{uid}:{gid}::{home}::")
        users = self.dir / "users"
        users.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.chown(users, 0, pwd.getpwnam("dovecot").pw_gid)  # read by Dovecot's auth process
        users.chmod(0o640)
        for user in self.users:
            self.maildirs.create(user)

    def start(self) -> Dovecot:
        self.write()
        check = subprocess.run(["dovecot", "-c", str(self.conf), "-n"], capture_output=True, text=True, timeout=20)
        if check.returncode != 0:
            raise RuntimeError(f"dovecot rejects its private configuration: {check.stderr}")
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(["dovecot", "-c", str(self.conf), "-F"], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=out, cwd=self.dir, start_new_session=True)
        OWN_PGIDS.add(self.proc.pid)
        alive = lambda: self.proc.poll() is None  # noqa: E731
        try:
            for port in (self.imap_port, self.pop3_port):
                wait_until(lambda p=port: banner(p).startswith((b"* OK", b"+OK")), START_TIMEOUT,
                           f"Dovecot on port {port}", alive)
        except (RuntimeError, TimeoutError) as err:
            self.stop()
            raise RuntimeError(f"{err}\n{self.logs()}") from None
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        kill_group(self.proc.pid)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def logs(self, lines: int = 40) -> str:
        text = ""
        for path in (self.out_path, self.log_path):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                text += f"--- {path} ---\n" + "\n".join(tail) + "\n"
        return text


# --- Postfix ------------------------------------------------------------------

POSTFIX_MAIN = """\
# Private Postfix for mailgate's end-to-end tests; nothing system-wide.
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {dir}/postfix.log
maillog_file_prefixes = {dir}

inet_interfaces = 127.0.0.1
# IPv6 on, though smtpd listens on 127.0.0.1 only: without it Postfix refuses
# an IPv6 client address in XCLIENT ("501 5.5.4 Bad ADDR syntax: IPV6:...").
inet_protocols = all
myhostname = mx.{domain}
mydomain = {domain}
myorigin = {domain}
mydestination =
relay_domains =
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP Postfix e2e
biff = no
smtputf8_enable = no
append_dot_mydomain = no
local_transport = error:no local delivery here
alias_maps =
alias_database =
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
delay_warning_time = 0

# mailgate logs in on the client's behalf and tells who the client is.
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_sasl_authenticated_header = yes

virtual_mailbox_domains = {domain}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = texthash:{dir}/conf/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
virtual_mailbox_limit = 0
message_size_limit = {size_limit}
"""

POSTFIX_MASTER = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{address} inet  n       -       n       -       -       smtpd
{strict_address} inet  n       -       n       -       -       smtpd
  -o smtpd_authorized_xclient_hosts=
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

SIZE_LIMIT = 50 * 1024 * 1024


class Postfix:
    """``postfix -c <private config_directory> start-fg``: a master with its
    own queue and data directories and an smtpd on a free loopback port (and
    a second one that refuses XCLIENT)."""

    def __init__(self, directory: Path, maildirs: Maildirs, users: Iterable[str]) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.maildirs = maildirs
        self.users = list(users)
        self.port = free_port()
        self.strict_port = free_port()  # an smtpd that authorizes no XCLIENT: a misconfigured backend
        self.conf_dir = self.dir / "conf"
        self.log_path = self.dir / "postfix.log"
        self.out_path = self.dir / "postfix.out"
        self.pid_path = self.dir / "queue" / "pid" / "master.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        self.master_pid: int | None = None

    def write(self) -> None:
        uid, gid = mail_ids()
        postfix = pwd.getpwnam("postfix")
        self.conf_dir.mkdir(exist_ok=True)
        (self.dir / "queue").mkdir(exist_ok=True)
        (self.dir / "data").mkdir(exist_ok=True)
        os.chown(self.dir / "data", postfix.pw_uid, postfix.pw_gid)
        (self.conf_dir / "main.cf").write_text(POSTFIX_MAIN.format(
            dir=self.dir, domain=DOMAIN, mail=self.maildirs.base, uid=uid, gid=gid, size_limit=SIZE_LIMIT))
        (self.conf_dir / "master.cf").write_text(POSTFIX_MASTER.format(
            address=f"127.0.0.1:{self.port}", strict_address=f"127.0.0.1:{self.strict_port}"))
        (self.conf_dir / "vmailbox").write_text(
            "".join(f"{user}@{DOMAIN} {user}/Maildir/\n" for user in self.users))
        for user in self.users:
            self.maildirs.create(user)

    def postfix(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["postfix", "-c", str(self.conf_dir), *args], capture_output=True, text=True,
                              timeout=timeout, cwd=self.dir, stdin=subprocess.DEVNULL)

    def start(self) -> Postfix:
        self.write()
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(["postfix", "-c", str(self.conf_dir), "start-fg"], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=out, cwd=self.dir, start_new_session=True)
        OWN_PGIDS.add(self.proc.pid)
        alive = lambda: self.proc.poll() is None  # noqa: E731
        try:
            pid = wait_until(self._read_pid, START_TIMEOUT, "Postfix's master.pid", alive)
            self.master_pid = int(pid)  # type: ignore[arg-type]
            OWN_PGIDS.add(self.master_pid)  # the master runs in a session of its own
            wait_until(lambda: banner(self.port).startswith(b"220 "), START_TIMEOUT,
                       f"Postfix's smtpd on port {self.port}", alive)
        except (RuntimeError, TimeoutError) as err:
            self.stop()
            raise RuntimeError(f"{err}\n{self.logs()}") from None
        return self

    def _read_pid(self) -> int | None:
        try:
            text = self.pid_path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def stop(self) -> None:
        if self.proc is None:
            return
        pgids = {self.proc.pid}
        if self.master_pid is None:
            self.master_pid = self._read_pid()
        if self.master_pid is not None:
            pgids.add(self.master_pid)
        try:
            self.postfix("stop", timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        for pgid in pgids:
            kill_group(pgid, timeout=5.0)
        for pid in descendants_in(self.dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_stat(pid)[2] == os.getpid() for pid in _pids()
                                                   if _stat(pid)[1] in pgids):
            reap_orphans(pgids)
            time.sleep(0.05)

    def logs(self, lines: int = 40) -> str:
        text = ""
        for path in (self.out_path, self.log_path):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                text += f"--- {path} ---\n" + "\n".join(tail) + "\n"
        return text
