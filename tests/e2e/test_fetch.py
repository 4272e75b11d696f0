"""Fetching through mailgate from Dovecot: every client gets every message
back byte for byte, a 4 MB one among them."""

from __future__ import annotations

import pytest

from tests.e2e import clients, messages
from tests.e2e.conftest import Stack

USER = "alice"


@pytest.fixture(scope="module")
def corpus(stack: Stack) -> list[bytes]:
    """alice's mailbox: the corpus, put there as a delivery agent would."""
    mail = messages.corpus()
    for data in mail:
        stack.maildirs.add(USER, data)
    return mail


def test_imaplib_fetches_every_message_intact(e2e: Stack, corpus: list[bytes]) -> None:
    conn = clients.imap(e2e.imap_port)
    try:
        typ, data = conn.login(USER, e2e.password(USER))
        assert typ == "OK", data
        typ, data = conn.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) == len(corpus), data
        fetched = clients.imap_fetch_all(conn)
        assert sorted(fetched.values()) == sorted(corpus)
        assert conn.logout()[0] == "BYE"
    finally:
        clients.close_imap(conn)
    e2e.mailgate.wait_log(rf'session summary: protocol=imap .*login="{USER}" .*outcome=proxied')


def test_poplib_retrieves_every_message_intact(e2e: Stack, corpus: list[bytes]) -> None:
    conn = clients.pop3(e2e.pop3_port)
    try:
        assert conn.user(USER).startswith(b"+OK")
        assert conn.pass_(e2e.password(USER)).startswith(b"+OK")
        count, size = conn.stat()
        assert count == len(corpus) and size == sum(map(len, corpus))
        retrieved = []
        for number in range(1, count + 1):
            reply, lines, octets = conn.retr(number)
            assert reply.startswith(b"+OK")
            retrieved.append(b"\r\n".join(lines) + b"\r\n")
        assert sorted(retrieved) == sorted(corpus)
        uidl = conn.uidl()
        assert len(uidl[1]) == count
        assert conn.quit().startswith(b"+OK")
    finally:
        conn.close()


def imap_uids(stack: Stack, user: str) -> dict[int, bytes]:
    """UID -> message, read with imaplib straight from Dovecot."""
    conn = clients.imap(stack.dovecot.imap_port)
    try:
        conn.login(user, stack.password(user))
        conn.select("INBOX", readonly=True)
        return clients.imap_fetch_all(conn)
    finally:
        clients.close_imap(conn)


def test_curl_imap_fetches_every_message_intact(e2e: Stack, corpus: list[bytes], tool) -> None:
    tool("curl")
    expected = imap_uids(e2e, USER)
    assert sorted(expected.values()) == sorted(corpus)
    for uid, data in expected.items():
        done = clients.curl(f"/INBOX;UID={uid}", "imap", e2e.imap_port, USER, e2e.password(USER))
        done.expect(0)
        assert done.stdout == data, f"UID {uid}: {len(done.stdout)} bytes instead of {len(data)}"


def test_curl_pop3_retrieves_every_message_intact(e2e: Stack, corpus: list[bytes], tool) -> None:
    tool("curl")
    listing = clients.curl("/", "pop3", e2e.pop3_port, USER, e2e.password(USER))
    listing.expect(0)
    sizes = [int(line.split()[1]) for line in listing.stdout.splitlines() if line.strip()]
    assert sorted(sizes) == sorted(map(len, corpus))
    retrieved = []
    for number in range(1, len(sizes) + 1):
        done = clients.curl(f"/{number}", "pop3", e2e.pop3_port, USER, e2e.password(USER))
        done.expect(0)
        retrieved.append(done.stdout)
    assert sorted(retrieved) == sorted(corpus)


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_fetchmail_fetches_every_message_intact(e2e: Stack, corpus: list[bytes], tool, workdir, protocol) -> None:
    tool("fetchmail")
    port = e2e.pop3_port if protocol == "pop3" else e2e.imap_port
    done, delivered = clients.fetchmail(workdir, protocol, port, USER, e2e.password(USER))
    done.expect(0)
    # fetchmail hands its delivery agent LF line ends; otherwise the bytes are the server's.
    assert sorted(delivered) == sorted(data.replace(b"\r\n", b"\n") for data in corpus), done
