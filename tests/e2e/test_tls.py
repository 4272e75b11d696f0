"""TLS to mailgate (implicit TLS and STARTTLS) with the same real clients
and backends; mailgate talks plain text to Dovecot and Postfix, as nginx
does. A second mailgate (conftest.py, ``tls_gate``: nginx's `listen ... ssl`,
`starttls only`, `ssl_certificate`, `ssl_certificate_key`, with a
self-signed certificate) serves these; where mailgate answers that its TLS
directives are "not supported yet" they skip, and any other refusal of that
configuration fails them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.e2e import clients, messages
from tests.e2e.conftest import CLIENT_ADDRESS, Stack, TlsGate

MODES = ["implicit", "starttls"]


def tls_for(gate: TlsGate, mode: str) -> clients.Tls:
    return clients.Tls(mode, str(gate.cert))


def port(gate: TlsGate, protocol: str, mode: str) -> int:
    if mode == "implicit":
        return gate.ports[{"imap": "imaps_port", "pop3": "pop3s_port", "smtp": "smtps_port"}[protocol]]
    return gate.ports[f"{protocol}_starttls_port"]


@pytest.fixture(scope="module")
def mailbox(stack: Stack) -> list[bytes]:
    mail = [messages.message("over TLS", messages.tricky_body(), to="grace@e2e.test"),
            messages.large(2 * 1024 * 1024, seed=3, subject="2 MB over TLS", to="grace@e2e.test")]
    for data in mail:
        stack.maildirs.add("grace", data)
    return mail


@pytest.mark.parametrize("mode", MODES)
def test_imaplib_over_tls(e2e: Stack, tls_gate: TlsGate, mailbox: list[bytes], mode: str) -> None:
    conn = clients.imap(port(tls_gate, "imap", mode), tls_for(tls_gate, mode))
    try:
        assert conn.login("grace", e2e.password("grace"))[0] == "OK"
        conn.select("INBOX", readonly=True)
        assert sorted(clients.imap_fetch_all(conn).values()) == sorted(mailbox)
        assert conn.logout()[0] == "BYE"
    finally:
        clients.close_imap(conn)


@pytest.mark.parametrize("mode", MODES)
def test_poplib_over_tls(e2e: Stack, tls_gate: TlsGate, mailbox: list[bytes], mode: str) -> None:
    conn = clients.pop3(port(tls_gate, "pop3", mode), tls_for(tls_gate, mode))
    try:
        conn.user("grace")
        assert conn.pass_(e2e.password("grace")).startswith(b"+OK")
        got = [b"\r\n".join(conn.retr(n)[1]) + b"\r\n" for n in range(1, conn.stat()[0] + 1)]
        assert sorted(got) == sorted(mailbox)
        conn.quit()
    finally:
        conn.close()


@pytest.mark.parametrize("mode", MODES)
def test_smtplib_submission_over_tls(e2e: Stack, tls_gate: TlsGate, mode: str) -> None:
    data = messages.message("submitted over TLS", messages.tricky_body(), to="carol@e2e.test",
                            message_id=f"<{uuid.uuid4().hex}@e2e.test>")
    conn = clients.smtp(port(tls_gate, "smtp", mode), tls_for(tls_gate, mode), source=CLIENT_ADDRESS)
    try:
        conn.login("alice", e2e.password("alice"))
        assert conn.sendmail("alice@e2e.test", ["carol@e2e.test"], data) == {}
    finally:
        conn.quit()
    copy = e2e.maildirs.wait_for("carol", messages.message_id(data))[0].read_bytes()
    assert messages.body_of(copy) == messages.body_of(data)
    assert f"[{CLIENT_ADDRESS}]".encode() in messages.headers_of(copy)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_curl_fetch_over_tls(e2e: Stack, tls_gate: TlsGate, mailbox: list[bytes], tool, mode: str,
                             protocol: str) -> None:
    tool("curl")
    path = "/INBOX;MAILINDEX=1" if protocol == "imap" else "/1"
    done = clients.curl(path, protocol, port(tls_gate, protocol, mode), "grace", e2e.password("grace"),
                        tls=tls_for(tls_gate, mode))
    done.expect(0)
    assert done.stdout in mailbox


@pytest.mark.parametrize("mode", MODES)
def test_swaks_over_tls(e2e: Stack, tls_gate: TlsGate, tool, workdir: Path, mode: str) -> None:
    tool("swaks")
    data = messages.message(f"swaks over TLS ({mode})", messages.tricky_body(), to="carol@e2e.test",
                            message_id=f"<{uuid.uuid4().hex}@e2e.test>")
    path = workdir / "m.eml"
    path.write_bytes(data.removesuffix(b"\r\n"))
    done = clients.swaks(port(tls_gate, "smtp", mode), user="alice", password=e2e.password("alice"), auth="PLAIN",
                         sender="alice@e2e.test", to="carol@e2e.test", data=path, pipeline=True,
                         tls=tls_for(tls_gate, mode), interface=CLIENT_ADDRESS)
    done.expect(0)
    e2e.maildirs.wait_for("carol", messages.message_id(data))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_fetchmail_over_tls(e2e: Stack, tls_gate: TlsGate, mailbox: list[bytes], tool, workdir: Path, mode: str,
                            protocol: str) -> None:
    tool("fetchmail")
    done, delivered = clients.fetchmail(workdir, protocol, port(tls_gate, protocol, mode), "grace",
                                        e2e.password("grace"), tls=tls_for(tls_gate, mode))
    done.expect(0)
    assert sorted(delivered) == sorted(data.replace(b"\r\n", b"\n") for data in mailbox)
