"""Concurrency and reloads with real servers behind mailgate: 50 IMAP clients
logged in at once, and reloads of mailgate while IMAP, POP3 and SMTP clients
(Python's, curl, swaks, fetchmail) keep working and an IDLE session waits,
without one failed client."""

from __future__ import annotations

import dataclasses
import imaplib
import itertools
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e import clients, messages
from tests.e2e.conftest import CLIENT_ADDRESS, LOAD_USERS, Stack
from tests.integration.harness import wait_for

CONCURRENT = 50


@pytest.fixture(scope="module")
def load_mail(stack: Stack) -> dict[str, bytes]:
    """One message in each load user's mailbox, and a 4 MB one for frank."""
    mail = {}
    for user in LOAD_USERS:
        data = messages.message(f"for {user}", f"Hello {user}.\r\n".encode() + messages.tricky_body(),
                                to=f"{user}@e2e.test")
        stack.maildirs.add(user, data)
        mail[user] = data
    big = messages.large(4 * 1024 * 1024, seed=7, subject="big during reloads", to="frank@e2e.test")
    stack.maildirs.add("frank", big)
    mail["frank"] = big
    return mail


def imap_session(stack: Stack, user: str, expected: bytes) -> None:
    conn = clients.imap(stack.imap_port)
    try:
        typ, data = conn.login(user, stack.password(user))
        assert typ == "OK", data
        typ, data = conn.select("INBOX", readonly=True)
        assert typ == "OK", data
        typ, data = conn.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK" and data[0][1] == expected, f"{user}: wrong message"
        assert conn.logout()[0] == "BYE"
    finally:
        clients.close_imap(conn)


def test_fifty_concurrent_imap_clients(e2e: Stack, load_mail: dict[str, bytes]) -> None:
    """All 50 are logged in and have selected INBOX at the same moment;
    mailgate is reloaded then, and every session goes on."""
    users = sorted(LOAD_USERS)[:CONCURRENT]
    reloaded: list[list[int]] = []
    barrier = threading.Barrier(len(users), action=lambda: reloaded.append(e2e.mailgate.reload()), timeout=60)
    failures: list[str] = []
    lock = threading.Lock()

    def client(user: str) -> None:
        try:
            conn = clients.imap(e2e.imap_port, timeout=60)
        except Exception:  # noqa: BLE001 - collected below
            with lock:
                failures.append(f"{user}: connect: {traceback.format_exc(limit=1)}")
            barrier.abort()
            return
        try:
            typ, data = conn.login(user, e2e.password(user))
            assert typ == "OK", data
            typ, data = conn.select("INBOX")
            assert typ == "OK", data
            barrier.wait()  # everyone is logged in now, and mailgate has been reloaded
            typ, data = conn.fetch("1", "(BODY.PEEK[])")
            assert typ == "OK" and data[0][1] == load_mail[user], f"{user}: wrong message"
            typ, data = conn.noop()
            assert typ == "OK", data
            assert conn.logout()[0] == "BYE"
        except (Exception, pytest.fail.Exception):  # noqa: BLE001 - collected below
            with lock:
                failures.append(f"{user}: {traceback.format_exc(limit=2)}")
            barrier.abort()
        finally:
            clients.close_imap(conn)

    threads = [threading.Thread(target=client, args=(user,), name=f"imap-{user}") for user in users]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, 120 - (time.monotonic() - started)))
    assert not any(thread.is_alive() for thread in threads), "clients still running after 120 s"
    assert failures == [], "\n".join(failures)
    assert len(reloaded) == 1 and reloaded[0], "no reload while the 50 were logged in"
    for user in users:
        e2e.mailgate.wait_log(rf'session summary: protocol=imap .*login="{user}" .*outcome=proxied')


# --- reloads under load -------------------------------------------------------


@dataclasses.dataclass
class Workload:
    """One client kind run in a loop until told to stop."""

    name: str
    operation: Callable[[int], None]
    done: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            began = time.monotonic()
            try:
                self.operation(n)
            except (Exception, pytest.fail.Exception):  # noqa: BLE001 - every failure is reported
                self.failures.append(f"{self.name} #{n} at {began:.2f}: {traceback.format_exc(limit=3)}")
                time.sleep(0.2)
            else:
                self.done.append((began, time.monotonic()))

    def spanning(self, moment: float) -> int:
        """Operations that were in flight at ``moment``."""
        return sum(1 for began, ended in self.done if began <= moment <= ended)

    def started_after(self, moment: float) -> int:
        return sum(1 for began, _ in self.done if began > moment)


def reload_with_the_cli(stack: Stack) -> list[int]:
    """``mailgate reload``: checks the configuration, then HUPs the master;
    returns the new workers once they serve."""
    mailgate = stack.mailgate
    before = set(mailgate.workers())
    starts = mailgate.log().count("start worker process")
    done = mailgate.cli("reload")
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for(lambda: mailgate.log().count("start worker process") > starts, what="new workers")
    return sorted(wait_for(lambda: set(mailgate.workers()) - before, what="new worker pids"))  # type: ignore[arg-type]


def test_reloads_under_load_fail_no_client(e2e: Stack, load_mail: dict[str, bytes], tool, workdir: Path) -> None:
    curl, swaks, fetchmail = tool("curl"), tool("swaks"), tool("fetchmail")
    assert curl and swaks and fetchmail
    users = sorted(LOAD_USERS)
    log_start = len(e2e.mailgate.log())
    submitted: list[bytes] = []

    # An IDLE session from before the reloads; it must see new mail after them.
    idler = clients.imap(e2e.imap_port, timeout=60)
    assert idler.login("erin", e2e.password("erin"))[0] == "OK"
    idle_count = int(idler.select("INBOX")[1][0])
    idle = clients.Idle(idler)
    idle.start()

    def imap_op(slot: int) -> Callable[[int], None]:
        def op(n: int) -> None:
            user = users[(slot * 7 + n) % len(users)]
            imap_session(e2e, user, load_mail[user])
        return op

    def pop3_op(slot: int) -> Callable[[int], None]:
        def op(n: int) -> None:
            user = users[(slot * 11 + n + 25) % len(users)]
            conn = clients.pop3(e2e.pop3_port)
            try:
                assert conn.user(user).startswith(b"+OK")
                assert conn.pass_(e2e.password(user)).startswith(b"+OK")
                reply, lines, _ = conn.retr(1)
                assert b"\r\n".join(lines) + b"\r\n" == load_mail[user], f"{user}: wrong message"
                assert conn.quit().startswith(b"+OK")
            finally:
                conn.close()
        return op

    def big_fetch(n: int) -> None:
        imap_session(e2e, "frank", load_mail["frank"])

    def smtp_op(n: int) -> None:
        data = messages.message(f"during reloads {n}", messages.tricky_body(), to="carol@e2e.test",
                                message_id=f"<{uuid.uuid4().hex}@e2e.test>")
        conn = clients.smtp(e2e.submission_port, source=CLIENT_ADDRESS)
        try:
            conn.login("alice", e2e.password("alice"))
            assert conn.sendmail("alice@e2e.test", ["carol@e2e.test"], data) == {}
            submitted.append(data)
        finally:
            conn.quit()

    ten_mb = messages.large(10 * 1024 * 1024, seed=10, subject="10 MB during reloads", to="carol@e2e.test")

    def smtp_10mb(n: int) -> None:
        data = ten_mb.replace(messages.message_id(ten_mb), f"<{uuid.uuid4().hex}@e2e.test>".encode(), 1)
        conn = clients.smtp(e2e.submission_port, source=CLIENT_ADDRESS, timeout=60)
        try:
            conn.login("alice", e2e.password("alice"))
            assert conn.sendmail("alice@e2e.test", ["carol@e2e.test"], data) == {}
            submitted.append(data)
        finally:
            conn.quit()

    def curl_imap(n: int) -> None:
        user = users[(n * 3) % len(users)]
        done = clients.curl("/INBOX;MAILINDEX=1", "imap", e2e.imap_port, user, e2e.password(user))
        assert done.returncode == 0 and done.stdout == load_mail[user], done

    def curl_pop3(n: int) -> None:
        user = users[(n * 5 + 1) % len(users)]
        done = clients.curl("/1", "pop3", e2e.pop3_port, user, e2e.password(user))
        assert done.returncode == 0 and done.stdout == load_mail[user], done

    def swaks_op(n: int) -> None:
        data = messages.message(f"swaks during reloads {n}", messages.tricky_body(), to="carol@e2e.test",
                                message_id=f"<{uuid.uuid4().hex}@e2e.test>")
        path = workdir / f"swaks-{n}.eml"
        path.write_bytes(data.removesuffix(b"\r\n"))
        done = clients.swaks(e2e.submission_port, user="alice", password=e2e.password("alice"),
                             auth="PLAIN" if n % 2 else "LOGIN", sender="alice@e2e.test", to="carol@e2e.test",
                             data=path, pipeline=True, interface=CLIENT_ADDRESS)
        done.expect(0)
        submitted.append(data)

    def fetchmail_op(n: int) -> None:
        user = users[(n * 13 + 2) % len(users)]
        protocol = "imap" if n % 2 else "pop3"
        port = e2e.imap_port if protocol == "imap" else e2e.pop3_port
        done, delivered = clients.fetchmail(workdir / f"fetchmail-{n}", protocol, port, user, e2e.password(user))
        done.expect(0)
        assert delivered == [load_mail[user].replace(b"\r\n", b"\n")], done

    workloads = [Workload(f"imaplib-{slot}", imap_op(slot)) for slot in range(8)]
    workloads += [Workload(f"poplib-{slot}", pop3_op(slot)) for slot in range(3)]
    workloads += [
        Workload("imaplib-4MB", big_fetch),
        Workload("smtplib", smtp_op),
        Workload("smtplib-10MB", smtp_10mb),
        Workload("curl-imap", curl_imap),
        Workload("curl-pop3", curl_pop3),
        Workload("swaks", swaks_op),
        Workload("fetchmail", fetchmail_op),
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop,), name=w.name, daemon=True) for w in workloads]
    reloads: list[float] = []
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: all(w.done or w.failures for w in workloads), timeout=60, what="every client kind once")
        for n in range(3):
            time.sleep(1.0)
            reloads.append(time.monotonic())
            if n == 0:
                reload_with_the_cli(e2e)  # `mailgate reload`, as the systemd unit does
            else:
                e2e.mailgate.reload()  # SIGHUP
        time.sleep(1.5)
        last = time.monotonic()
        wait_for(lambda: all(w.started_after(last) and w.done[-1][1] > last for w in workloads if not w.failures),
                 timeout=60, what="every client kind to finish once more after the last reload")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "clients still running 60 s after the stop"
    failures = [failure for w in workloads for failure in w.failures]
    assert failures == [], "\n".join(failures)
    for w in workloads:
        assert w.started_after(reloads[-1]), f"{w.name} ran nothing after the last reload"
    # Sessions were in flight at reloads (not only between them).
    assert sum(w.spanning(moment) for w in workloads for moment in reloads) > 0

    # The IDLE session, left on a worker of the first generation, still works.
    new_mail = messages.message("after the reloads", b"still idling\r\n", to="erin@e2e.test",
                                message_id=f"<{uuid.uuid4().hex}@e2e.test>")
    conn = clients.smtp(e2e.submission_port, source=CLIENT_ADDRESS)
    try:
        conn.login("alice", e2e.password("alice"))
        assert conn.sendmail("alice@e2e.test", ["erin@e2e.test"], new_mail) == {}
    finally:
        conn.quit()
    idle.wait_exists(idle_count + 1, timeout=30)
    assert idle.done().startswith(b"IDLE1 OK"), idle.lines
    typ, data = idler.fetch(str(idle_count + 1), "(BODY.PEEK[TEXT])")
    assert typ == "OK" and data[0][1] == b"still idling\r\n", data
    assert idler.logout()[0] == "BYE"
    clients.close_imap(idler)

    # Every message submitted during the reloads was delivered.
    e2e.maildirs.wait_for_all("carol", [messages.message_id(data) for data in submitted])
    # The old generations leave once their last session is done.
    wait_for(lambda: len(e2e.mailgate.workers()) == 2, timeout=30, what="only the newest two workers left")
    assert e2e.problems(log_start) == []
    total = sum(len(w.done) for w in workloads)
    print(f"\nreloads under load: {total} client sessions, "
          + ", ".join(f"{w.name}={len(w.done)}" for w in workloads))


def test_imap_session_in_flight_survives_a_reload(e2e: Stack, load_mail: dict[str, bytes]) -> None:
    """A logged-in session keeps working on its old worker across a reload."""
    conn = clients.imap(e2e.imap_port)
    try:
        assert conn.login("frank", e2e.password("frank"))[0] == "OK"
        assert conn.select("INBOX", readonly=True)[0] == "OK"
        e2e.mailgate.reload()
        typ, data = conn.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK" and data[0][1] == load_mail["frank"]
        assert conn.logout()[0] == "BYE"
    except imaplib.IMAP4.abort as err:
        pytest.fail(f"session cut by the reload: {err}")
    finally:
        clients.close_imap(conn)
