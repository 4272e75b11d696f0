"""Submitting through mailgate to Postfix: the delivered copy names the
client's own address (learned by XCLIENT, not mailgate's), the login, the
client's EHLO, and carries the body intact (one of 10 MB)."""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import uuid
from pathlib import Path

import pytest

from tests.e2e import clients, messages
from tests.e2e.conftest import CLIENT_ADDRESS, Stack
from tests.e2e.servers import wait_until
from tests.integration.harness import recv_all, recv_until

SENDER = "alice"
RCPT = "carol"
DOMAIN = "e2e.test"


def new_message(subject: str, size: int | None = None) -> bytes:
    mid = f"<{uuid.uuid4().hex}@e2e.test>"
    fields = dict(sender=f"{SENDER}@{DOMAIN}", to=f"{RCPT}@{DOMAIN}", message_id=mid)
    if size:
        return messages.large(size, seed=hash(subject) & 0xFFFF, subject=subject, **fields)
    return messages.message(subject, messages.tricky_body(), **fields)


def delivered(stack: Stack, data: bytes, user: str = RCPT, timeout: float = 60.0) -> bytes:
    """The copy Postfix delivered to ``user``'s maildir."""
    paths = stack.maildirs.wait_for(user, messages.message_id(data), timeout=timeout)
    assert len(paths) == 1, paths
    return paths[0].read_bytes()


def trace_headers(copy: bytes) -> str:
    return messages.headers_of(copy).decode(errors="replace")


def assert_delivered_intact(stack: Stack, data: bytes, *, client: str = CLIENT_ADDRESS, login: str | None = SENDER,
                            helo: str = clients.CLIENT_HELO) -> str:
    copy = delivered(stack, data)
    assert messages.body_of(copy) == messages.body_of(data), "body changed on the way"
    # Postfix prepends Return-Path, X-Original-To, Delivered-To and Received; the
    # client's own headers follow unchanged.
    assert messages.headers_of(data) in messages.headers_of(copy)
    head = trace_headers(copy)
    received = re.search(r"^Received: from (.*?)(?=^\S)", head, re.S | re.M)
    assert received, head
    text = received.group(1)
    assert f"[{client}]" in text, f"XCLIENT ADDR not used: {text}"
    assert "[127.0.0.1]" not in text, f"mailgate's own address in the trace: {text}"
    assert text.startswith(helo), f"the client's EHLO name is not in the trace: {text}"
    if login is not None:
        assert f"(Authenticated sender: {login})" in text, text
        assert "with ESMTPA" in text, text
    # Postfix's own log: mailgate connected from 127.0.0.1, XCLIENT made it the client.
    queue_id = re.search(r"\bid ([0-9A-F]+)\b", text)
    assert queue_id, text
    pattern = re.compile(rf"{queue_id.group(1)}: client=unknown\[([0-9.]+)\](.*)")
    line = wait_until(lambda: pattern.search(stack.postfix.log_path.read_text(errors="replace")), 10,
                      f"Postfix's log line for {queue_id.group(1)}")
    assert line.group(1) == client, line.group(0)
    if login is not None:
        assert f"sasl_method=XCLIENT, sasl_username={login}" in line.group(2), line.group(0)
    return text


def test_smtplib_submission_carries_the_client_address(e2e: Stack) -> None:
    data = new_message("smtplib submission")
    conn = clients.smtp(e2e.submission_port, source=CLIENT_ADDRESS)
    try:
        assert "PLAIN" in conn.esmtp_features["auth"].split(), conn.esmtp_features
        conn.login(SENDER, e2e.password(SENDER))  # AUTH PLAIN: smtplib's choice of PLAIN LOGIN
        refused = conn.sendmail(f"{SENDER}@{DOMAIN}", [f"{RCPT}@{DOMAIN}"], data)
        assert refused == {}
    finally:
        conn.quit()
    assert_delivered_intact(e2e, data)
    request = e2e.auth.requests[-1]
    assert request.header("Client-IP") == CLIENT_ADDRESS


def test_ten_megabytes_submitted_intact(e2e: Stack) -> None:
    data = new_message("ten megabytes", size=10 * 1024 * 1024)
    assert len(data) > 10 * 1024 * 1024
    conn = clients.smtp(e2e.submission_port, source=CLIENT_ADDRESS, timeout=60)
    try:
        conn.login(SENDER, e2e.password(SENDER))
        assert conn.sendmail(f"{SENDER}@{DOMAIN}", [f"{RCPT}@{DOMAIN}"], data) == {}
    finally:
        conn.quit()
    assert_delivered_intact(e2e, data)


def test_smtplib_auth_login(e2e: Stack) -> None:
    data = new_message("smtplib AUTH LOGIN")
    conn = clients.smtp(e2e.submission_port, source=CLIENT_ADDRESS)
    try:
        conn.user, conn.password = SENDER, e2e.password(SENDER)
        code, reply = conn.auth("LOGIN", conn.auth_login, initial_response_ok=False)
        assert code == 235, reply
        assert conn.sendmail(f"{SENDER}@{DOMAIN}", [f"{RCPT}@{DOMAIN}"], data) == {}
    finally:
        conn.quit()
    assert_delivered_intact(e2e, data)


@pytest.mark.parametrize("auth", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("pipeline", [False, True], ids=["lockstep", "pipelining"])
def test_swaks_submission(e2e: Stack, tool, workdir: Path, auth: str, pipeline: bool) -> None:
    tool("swaks")
    data = new_message(f"swaks AUTH {auth} pipeline={pipeline}")
    path = workdir / "message.eml"
    path.write_bytes(data.removesuffix(b"\r\n"))  # swaks ends the data with CRLF "." CRLF itself
    done = clients.swaks(e2e.submission_port, user=SENDER, password=e2e.password(SENDER), auth=auth,
                         sender=f"{SENDER}@{DOMAIN}", to=f"{RCPT}@{DOMAIN}", data=path, pipeline=pipeline,
                         interface=CLIENT_ADDRESS)
    done.expect(0)
    assert f"AUTH {auth}".encode() in done.stdout, done
    if pipeline:
        assert b"PIPELINING" in done.stdout
    assert_delivered_intact(e2e, data)


def test_curl_smtp_submission(e2e: Stack, tool, workdir: Path) -> None:
    tool("curl")
    data = new_message("curl submission")
    path = workdir / "message.eml"
    path.write_bytes(data)
    done = clients.curl_smtp_send(e2e.submission_port, SENDER, e2e.password(SENDER), f"{SENDER}@{DOMAIN}",
                                  [f"{RCPT}@{DOMAIN}"], path, interface=CLIENT_ADDRESS)
    done.expect(0)
    assert_delivered_intact(e2e, data)


def test_relay_without_auth_carries_the_client_address(e2e: Stack) -> None:
    """``smtp_auth none``: the envelope is routed by the auth server."""
    data = new_message("relay")
    conn = clients.smtp(e2e.relay_port, source=CLIENT_ADDRESS)
    try:
        assert "auth" not in conn.esmtp_features
        assert conn.sendmail("someone@elsewhere.example", [f"{RCPT}@{DOMAIN}"], data) == {}
    finally:
        conn.quit()
    assert_delivered_intact(e2e, data, login=None)
    request = e2e.auth.requests[-1]
    assert request.header("Auth-Method") == "none"
    assert request.header("Client-IP") == CLIENT_ADDRESS


def test_relay_to_a_foreign_domain_is_refused_cleanly(e2e: Stack) -> None:
    conn = clients.smtp(e2e.relay_port, source=CLIENT_ADDRESS)
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            conn.sendmail(f"{SENDER}@{DOMAIN}", ["victim@elsewhere.example"], b"Subject: x\r\n\r\nx\r\n")
        code, reply = refused.value.recipients["victim@elsewhere.example"]
        assert code == 550 and b"Relay access denied" in reply, (code, reply)
    finally:
        try:
            conn.quit()
        except smtplib.SMTPServerDisconnected:
            pass


def test_ipv6_client_address_reaches_postfix(e2e: Stack) -> None:
    """A client on [::1]: XCLIENT ADDR=IPV6:::1, mailgate itself reaching Postfix over IPv4."""
    if e2e.submission_v6_port is None:
        pytest.skip("no IPv6 loopback on this machine")
    data = new_message("from IPv6")
    conn = smtplib.SMTP("::1", e2e.submission_v6_port, local_hostname=clients.CLIENT_HELO, timeout=30)
    try:
        conn.login(SENDER, e2e.password(SENDER))
        assert conn.sendmail(f"{SENDER}@{DOMAIN}", [f"{RCPT}@{DOMAIN}"], data) == {}
    finally:
        conn.quit()
    copy = delivered(e2e, data)
    assert messages.body_of(copy) == messages.body_of(data)
    assert b"[IPv6:::1]" in messages.headers_of(copy), trace_headers(copy)
    assert e2e.auth.requests[-1].header("Client-IP") == "::1"


@pytest.mark.parametrize("pipeline", [False, True], ids=["lockstep", "pipelining"])
def test_swaks_relay_without_auth(e2e: Stack, tool, workdir: Path, pipeline: bool) -> None:
    """``smtp_auth none`` with MAIL, RCPT and DATA pipelined in one write:
    mailgate asks the auth server at RCPT and replays the envelope to Postfix."""
    tool("swaks")
    data = new_message(f"swaks relay pipeline={pipeline}")
    path = workdir / "message.eml"
    path.write_bytes(data.removesuffix(b"\r\n"))
    done = clients.swaks(e2e.relay_port, user=None, password=None, auth=None, sender="someone@elsewhere.example",
                         to=f"{RCPT}@{DOMAIN}", data=path, pipeline=pipeline, interface=CLIENT_ADDRESS)
    done.expect(0)
    assert_delivered_intact(e2e, data, login=None)


def test_swaks_relay_with_helo(e2e: Stack, tool, workdir: Path) -> None:
    """An old client saying HELO: mailgate says HELO after XCLIENT too."""
    tool("swaks")
    data = new_message("relayed after HELO")
    path = workdir / "message.eml"
    path.write_bytes(data.removesuffix(b"\r\n"))
    done = clients.swaks(e2e.relay_port, user=None, password=None, auth=None, sender="someone@elsewhere.example",
                         to=f"{RCPT}@{DOMAIN}", data=path, interface=CLIENT_ADDRESS, extra=["--protocol", "SMTP"])
    done.expect(0)
    assert b"-> HELO " in done.stdout, done
    text = assert_delivered_intact(e2e, data, login=None)
    assert "with SMTP id" in text, text


def test_curl_relay_without_auth(e2e: Stack, tool, workdir: Path) -> None:
    tool("curl")
    data = new_message("curl relay")
    path = workdir / "message.eml"
    path.write_bytes(data)
    done = clients.run(["curl", "--silent", "--show-error", "--max-time", "30", "--interface", CLIENT_ADDRESS,
                        "--mail-from", "someone@elsewhere.example", "--mail-rcpt", f"{RCPT}@{DOMAIN}",
                        "--upload-file", str(path), f"smtp://127.0.0.1:{e2e.relay_port}/{clients.CLIENT_HELO}"])
    done.expect(0)
    assert_delivered_intact(e2e, data, login=None)


def test_xclient_login_with_xtext_characters(e2e: Stack) -> None:
    """A login with "+" and "=" goes to Postfix xtext-encoded in XCLIENT
    LOGIN=; Postfix decodes it back."""
    user = "kim+tag=x"
    data = new_message("xtext login")
    conn = clients.smtp(e2e.submission_port, source=CLIENT_ADDRESS)
    try:
        conn.login(user, e2e.password(user))
        assert conn.sendmail(f"{SENDER}@{DOMAIN}", [f"{RCPT}@{DOMAIN}"], data) == {}
    finally:
        conn.quit()
    assert_delivered_intact(e2e, data, login=user)


def test_backend_refusing_xclient_fails_cleanly(e2e: Stack) -> None:
    """A Postfix that does not list mailgate in smtpd_authorized_xclient_hosts:
    the client gets Postfix's refusal (proxy_pass_error_message on) and the
    connection ends; nothing hangs, nothing is relayed unauthenticated."""
    user = "mallory"
    with socket.create_connection(("127.0.0.1", e2e.submission_port), timeout=20,
                                  source_address=(CLIENT_ADDRESS, 0)) as sock:
        assert recv_until(sock, b"\r\n").startswith(b"220 ")
        sock.sendall(b"EHLO client.e2e.example\r\n")
        assert b"250 AUTH" in recv_until(sock, b"LOGIN\r\n")
        sock.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0" + user.encode() + b"\0" + e2e.password(user).encode())
                     + b"\r\n")
        reply = recv_all(sock)
    assert reply == b"550 5.7.0 Error: insufficient authorization\r\n", reply
    e2e.mailgate.wait_log(r'upstream sent invalid response: "550 5.7.0 Error: insufficient authorization"')
    e2e.mailgate.wait_log(rf'session summary: protocol=smtp .*login="{user}" .*outcome=backend-error')


def test_smtplib_against_a_backend_refusing_xclient(e2e: Stack) -> None:
    conn = clients.smtp(e2e.submission_port, source=CLIENT_ADDRESS)
    try:
        conn.user, conn.password = "mallory", e2e.password("mallory")
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            conn.auth("PLAIN", conn.auth_plain)
        assert refused.value.smtp_code == 550
    finally:
        conn.close()
