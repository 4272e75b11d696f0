"""The IMAP backend login (SPEC 9.3-9.5), played through the chunking matrix."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mailgate.protocol.base import Log, LoginFailed, LoginSucceeded, Send
from mailgate.protocol.imap import ImapUpstreamLogin
from tests.unit.chunking import Run, run

SECRET = "s3cret"
GREETING = b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n"
LOGIN_SENT = [Send(b"a8 LOGIN {4}\r\n"), Send(b"john {6}\r\n"), Send(SECRET.encode() + b"\r\n")]


def upstream(
    responses: Sequence[bytes],
    tag: str = "a8",
    login: str = "john",
    password: str = SECRET,
    size: int = 4096,
) -> Run:
    result = run(
        lambda: ImapUpstreamLogin(tag, login, password, size),
        list(responses),
        start=False,
        inspect=lambda u: u.action,
    )
    assert not result.of_type(Log)
    return result


def dialogue(*final: bytes) -> list[bytes]:
    return [GREETING, b"+ OK\r\n", b"+ OK\r\n", *final]


# --- success ---------------------------------------------------------------------------


def test_login_success() -> None:
    # SPEC 9.4's example
    reply = b"* CAPABILITY IMAP4rev1 IDLE\r\na8 OK [CAPABILITY IMAP4rev1] Logged in\r\n"
    result = upstream(dialogue(reply))
    assert result.events == [*LOGIN_SENT, LoginSucceeded(client_reply=reply)]


@pytest.mark.parametrize(
    "untagged",
    [
        b"",
        b"* CAPABILITY IMAP4rev1 IDLE\r\n",
        b"* CAPABILITY IMAP4rev1 IDLE\r\n* OK [UNSEEN 3] hello\r\n",
        b"* 1\r\n* 2\r\n* 3\r\n* 4\r\n",
    ],
)
def test_any_number_of_untagged_lines_before_the_tagged_ok(untagged: bytes) -> None:
    # nginx tolerates one; all are relayed to the client with the tagged OK
    tagged = b"a8 OK Logged in\r\n"
    result = upstream(dialogue(untagged + tagged))
    assert result.events[-1] == LoginSucceeded(client_reply=untagged + tagged)


def test_untagged_lines_in_separate_reads() -> None:
    result = upstream(dialogue(b"* CAPABILITY X\r\n", b"* OK y\r\n", b"a8 OK in\r\n"))
    assert result.events[-1] == LoginSucceeded(b"* CAPABILITY X\r\n* OK y\r\na8 OK in\r\n")


def test_bare_plus_continuation() -> None:
    # greenmail answers "+" alone (PEERS.md, greenmail PR 246)
    result = upstream([GREETING, b"+\r\n", b"+\n", b"a8 OK\r\n"])
    assert result.events == [*LOGIN_SENT, LoginSucceeded(b"a8 OK\r\n")]


def test_bare_lf_lines() -> None:
    result = upstream([b"* OK ready\n", b"+ go\n", b"+ go\n", b"a8 OK welcome\n"])
    assert result.events[-1] == LoginSucceeded(b"a8 OK welcome\n")


def test_literal_sizes_count_bytes() -> None:
    login, password = "jöhn doe", 'pä"ss wörd\\'
    result = upstream(dialogue(b"a8 OK\r\n"), login=login, password=password)
    assert result.sent == (
        b"a8 LOGIN {9}\r\n" + login.encode() + b" {13}\r\n" + password.encode() + b"\r\n"
    )


def test_login_bytes_round_trip() -> None:
    # credentials held as surrogate-escaped text go out as the client's bytes
    raw = b"\xffjohn"
    result = upstream(dialogue(b"a8 OK\r\n"), login=raw.decode("utf-8", "surrogateescape"))
    assert result.sent.startswith(b"a8 LOGIN {5}\r\n" + raw + b" {6}\r\n")


def test_keeps_what_follows_the_reply() -> None:
    login = ImapUpstreamLogin("a8", "john", SECRET)
    events = login.receive_data(b"* OK\r\n+\r\n+\r\na8 OK in\r\n* 3 EXISTS")
    assert events[-1] == LoginSucceeded(client_reply=b"a8 OK in\r\n* 3 EXISTS")
    assert login.done
    assert login.receive_data(b"more\r\n") == []


# --- failures (SPEC 9.5) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "greeting",
    [
        b"* PREAUTH IMAP4rev1 logged in\r\n",
        b"* BYE go away\r\n",
        b"* ok lower case\r\n",
        b"+OK POP3 ready\r\n",
        b"\r\n",
    ],
)
def test_invalid_greeting(greeting: bytes) -> None:
    result = upstream([greeting])
    assert result.events == [
        LoginFailed(response=greeting.decode().removesuffix("\r\n"), client_reply=greeting)
    ]
    assert result.inspected == "reading response from upstream"


@pytest.mark.parametrize("at", [1, 2])
def test_continuation_refused(at: int) -> None:
    responses = [GREETING, b"+ OK\r\n", b"+ OK\r\n"]
    responses[at] = b"a8 NO [ALERT] LOGIN disabled\r\n"
    result = upstream(responses)
    assert result.events == [
        *LOGIN_SENT[:at],
        LoginFailed(
            response="a8 NO [ALERT] LOGIN disabled",
            client_reply=b"a8 NO [ALERT] LOGIN disabled\r\n",
        ),
    ]


def test_login_failure() -> None:
    result = upstream(dialogue(b"a8 NO [AUTHENTICATIONFAILED] bad\r\n"))
    assert result.events[-1] == LoginFailed(
        response="NO [AUTHENTICATIONFAILED] bad",
        client_reply=b"a8 NO [AUTHENTICATIONFAILED] bad\r\n",
    )
    assert result.inspected == "reading response from upstream"


def test_login_failure_relays_untagged_lines_too() -> None:
    untagged = b"* OK [ALERT] account locked\r\n* CAPABILITY IMAP4rev1\r\n"
    result = upstream(dialogue(untagged + b"a8 BAD syntax\r\n"))
    assert result.events[-1] == LoginFailed(
        response="BAD syntax", client_reply=untagged + b"a8 BAD syntax\r\n"
    )


@pytest.mark.parametrize(
    "reply",
    [b"a9 OK wrong tag\r\n", b"a8OK\r\n", b"+ more\r\n", b"*no space\r\n", b"A8 OK case\r\n"],
)
def test_unexpected_login_reply(reply: bytes) -> None:
    result = upstream(dialogue(reply))
    assert result.events[-1] == LoginFailed(
        response=reply.decode().removesuffix("\r\n"), client_reply=reply
    )


# --- too long (SPEC 9.3) ----------------------------------------------------------------------


def test_too_long_line() -> None:
    result = upstream([b"* OK " + b"x" * 100], size=64)
    assert result.events == [
        LoginFailed(response="* OK " + "x" * 59, client_reply=b"* OK " + b"x" * 59, too_long=True)
    ]
    # a line of exactly the buffer size fits
    result = upstream([b"* OK " + b"x" * 57 + b"\r\n"], size=64)
    assert result.events == [Send(b"a8 LOGIN {4}\r\n")]


def test_untagged_lines_must_fit_with_the_tagged_reply() -> None:
    untagged = b"* " + b"x" * 28 + b"\r\n"  # 32 bytes
    fits = untagged + b"a8 OK " + b"y" * 24 + b"\r\n"  # 64 bytes in all
    assert upstream(dialogue(fits), size=64).events[-1] == LoginSucceeded(fits)
    too_long = untagged + b"a8 OK " + b"y" * 25 + b"\r\n"
    result = upstream(dialogue(too_long), size=64)
    [failure] = result.of_type(LoginFailed)
    assert failure.too_long
    assert failure.client_reply == too_long[:64]
    # a backend that sends untagged lines forever is cut off
    result = upstream(dialogue(untagged * 3), size=64)
    [failure] = result.of_type(LoginFailed)
    assert failure.too_long and failure.client_reply == untagged * 2


# --- actions, secrets ----------------------------------------------------------------------


def test_actions() -> None:
    login = ImapUpstreamLogin("a8", "john", SECRET)
    assert login.action == "reading response from upstream"
    login.receive_data(GREETING)
    assert login.action == "sending LOGIN command to upstream"
    login.receive_data(b"+")
    assert login.action == "reading response from upstream"
    login.receive_data(b" OK\r\n")
    assert login.action == "sending user name to upstream"
    login.receive_data(b"+ OK\r\n")
    assert login.action == "sending password to upstream"
    assert not login.done
    login.receive_data(b"a8 OK\r\n")
    assert login.done


def test_password_never_shown() -> None:
    login = ImapUpstreamLogin("a8", "john", SECRET)
    events = login.receive_data(GREETING + b"+\r\n+\r\n")
    assert SECRET not in repr(login) and SECRET not in repr(events)
    assert ImapUpstreamLogin.protocol == "imap"


def test_buffer_size_validation() -> None:
    with pytest.raises(ValueError):
        ImapUpstreamLogin("a8", "john", SECRET, 0)
