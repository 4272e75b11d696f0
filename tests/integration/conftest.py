"""Fixtures: a fake POP3 backend, a fake auth server, and real mailgates."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.imap_backend import ImapBackend
from tests.fakes.pop3_backend import Pop3Backend
from tests.fakes.smtp_backend import SmtpBackend
from tests.integration.harness import Mailgate, free_port

POP3_CONF = """\
worker_processes {workers};
error_log {dir}/error.log {level};
pid {dir}/mailgate.pid;
{main}
events {{ worker_connections 1024; }}

mail {{
    server_name mail.test;
    auth_http 127.0.0.1:{auth_port}/auth;
    auth_http_timeout {auth_timeout};
    timeout {timeout};
{mail}
    server {{
        listen 127.0.0.1:{port};
        protocol {protocol};
{server}
    }}
}}
"""


@pytest.fixture
def backend() -> Iterator[Pop3Backend]:
    with Pop3Backend() as server:
        yield server


@pytest.fixture
def imap_backend() -> Iterator[ImapBackend]:
    with ImapBackend() as server:
        yield server
    assert server.errors == []


@pytest.fixture
def smtp_backend() -> Iterator[SmtpBackend]:
    with SmtpBackend() as server:
        yield server
    assert server.errors == []


@pytest.fixture
def mailgates() -> Iterator[list[Mailgate]]:
    started: list[Mailgate] = []
    yield started
    for instance in started:
        instance.kill()


@pytest.fixture
def make_mailgate(tmp_path: Path, mailgates: list[Mailgate]) -> Callable[..., Mailgate]:
    """Start a mailgate with the POP3 template; returns it with ``.port``."""

    def make(auth_port: int, *, start: bool = True, **fields: object) -> Mailgate:
        port = free_port()
        values = dict(workers=1, level="info", main="", mail="", server="", auth_timeout="5s", timeout="10s",
                      protocol="pop3")
        values.update(fields)
        text = POP3_CONF.format(dir=tmp_path, auth_port=auth_port, port=port, **values)
        instance = Mailgate(tmp_path, text)
        instance.port = port  # type: ignore[attr-defined]
        mailgates.append(instance)
        if start:
            instance.start(ports=(port,))
        return instance

    return make
