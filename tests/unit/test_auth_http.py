"""The auth_http request and the reading of its response (SPEC 8.2-8.4)."""

from __future__ import annotations

import random

import pytest

from mailgate import auth
from mailgate.auth import AuthRequest, AuthTls
from mailgate.auth_http import backend_address, build_headers, build_request, escape, parse_response
from mailgate.auth_transport import (
    AGAIN,
    DONE,
    INVALID_HEADER,
    INVALID_RESPONSE,
    MAX_HEAD,
    scan_response_head,
)
from mailgate.config.model import AuthHttpUrl
from mailgate.protocol.base import Credentials, text

URL = AuthHttpUrl("127.0.0.1:9000/auth", "inet", "127.0.0.1", 9000, "/auth", "127.0.0.1")
ADDR = "127.0.0.1:9000"
SALT = "<3574.1700000000@mail.test>\r\n"


def request(method: str = "plain", login: str = "alice", password: str = "secret", protocol: str = "pop3",
            **fields: object) -> AuthRequest:
    creds = fields.pop("credentials", None) or Credentials(method, login, password, **fields.pop("creds", {}))
    return AuthRequest(creds, protocol, fields.pop("attempt", 1), fields.pop("client_ip", "192.0.2.7"), **fields)


def names(lines: list[tuple[str, bytes]]) -> list[str]:
    return [name for name, _ in lines]


# --- the request ----------------------------------------------------------------


def test_spec_example_exact_bytes() -> None:
    req = request(login="john doe ", password="my secret", client_ip="127.0.0.1")
    assert build_request(URL, req, (("X-Auth-Key", "secret string"),)) == (
        b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: john%20doe%20\r\n"
        b"Auth-Pass: my%20secret\r\nAuth-Protocol: pop3\r\nAuth-Login-Attempt: 1\r\n"
        b"Client-IP: 127.0.0.1\r\nX-Auth-Key: secret string\r\n\r\n"
    )


def test_plain_order_and_values() -> None:
    lines = build_headers(URL, request(attempt=3))
    assert lines == [
        ("Host", b"127.0.0.1"),
        ("Auth-Method", b"plain"),
        ("Auth-User", b"alice"),
        ("Auth-Pass", b"secret"),
        ("Auth-Protocol", b"pop3"),
        ("Auth-Login-Attempt", b"3"),
        ("Client-IP", b"192.0.2.7"),
    ]


def test_plain_with_salt_sends_no_salt() -> None:
    lines = build_headers(URL, request(creds={"salt": SALT}))
    assert "Auth-Salt" not in names(lines)


@pytest.mark.parametrize("method", ["apop", "cram-md5"])
def test_digest_methods_send_salt_after_pass(method: str) -> None:
    lines = build_headers(URL, request(method, password="b913a602c7eda7a495b4e6e7334d3890", creds={"salt": SALT}))
    assert names(lines) == [
        "Host", "Auth-Method", "Auth-User", "Auth-Pass", "Auth-Salt", "Auth-Protocol", "Auth-Login-Attempt",
        "Client-IP",
    ]
    assert dict(lines)["Auth-Method"] == method.encode()
    assert dict(lines)["Auth-Salt"] == b"<3574.1700000000@mail.test>"  # its CRLF ends the line


def test_cram_md5_wire_bytes() -> None:
    req = request("cram-md5", login="bob", password="d41d8cd98f00b204", protocol="imap", creds={"salt": SALT})
    assert build_request(URL, req) == (
        b"GET /auth HTTP/1.0\r\nHost: 127.0.0.1\r\nAuth-Method: cram-md5\r\nAuth-User: bob\r\n"
        b"Auth-Pass: d41d8cd98f00b204\r\nAuth-Salt: <3574.1700000000@mail.test>\r\nAuth-Protocol: imap\r\n"
        b"Auth-Login-Attempt: 1\r\nClient-IP: 192.0.2.7\r\n\r\n"
    )


def test_external_has_empty_pass() -> None:
    lines = build_headers(URL, request("external", login="cert-user", password="", protocol="imap"))
    assert lines[1:4] == [("Auth-Method", b"external"), ("Auth-User", b"cert-user"), ("Auth-Pass", b"")]
    assert "Auth-Salt" not in names(lines)


def test_none_sends_smtp_envelope_unescaped() -> None:
    creds = Credentials("none", "", "", smtp_helo="client.example", smtp_from="MAIL FROM:<a b@x> SIZE=10",
                        smtp_to="RCPT TO:<c@y>")
    lines = build_headers(URL, request(credentials=creds, protocol="smtp", client_host="client.example"))
    assert lines == [
        ("Host", b"127.0.0.1"),
        ("Auth-Method", b"none"),
        ("Auth-User", b""),
        ("Auth-Pass", b""),
        ("Auth-Protocol", b"smtp"),
        ("Auth-Login-Attempt", b"1"),
        ("Client-IP", b"192.0.2.7"),
        ("Client-Host", b"client.example"),
        ("Auth-SMTP-Helo", b"client.example"),
        ("Auth-SMTP-From", b"MAIL FROM:<a b@x> SIZE=10"),
        ("Auth-SMTP-To", b"RCPT TO:<c@y>"),
    ]


def test_none_with_empty_helo() -> None:
    creds = Credentials("none", "", "", smtp_from="MAIL FROM:<>", smtp_to="RCPT TO:<c@y>")
    lines = build_headers(URL, request(credentials=creds, protocol="smtp"))
    assert ("Auth-SMTP-Helo", b"") in lines


def test_client_host_only_for_smtp() -> None:
    assert "Client-Host" not in names(build_headers(URL, request(protocol="pop3", client_host="x.example")))
    assert "Client-Host" not in names(build_headers(URL, request(protocol="imap", client_host="x.example")))
    smtp = dict(build_headers(URL, request(protocol="smtp", client_host="[TEMPUNAVAIL]")))
    assert smtp["Client-Host"] == b"[TEMPUNAVAIL]"
    # Without a lookup (resolver off) nginx sends [UNAVAILABLE].
    assert dict(build_headers(URL, request(protocol="smtp")))["Client-Host"] == b"[UNAVAILABLE]"


def test_proxy_protocol_headers_after_client_host() -> None:
    req = request(protocol="smtp", client_host="h.example", proxy_protocol=("203.0.113.1", 40000, "198.51.100.2", 25))
    lines = build_headers(URL, req, (("X-A", "1"),))
    assert lines[7:] == [
        ("Client-Host", b"h.example"),
        ("Proxy-Protocol-Addr", b"203.0.113.1"),
        ("Proxy-Protocol-Port", b"40000"),
        ("Proxy-Protocol-Server-Addr", b"198.51.100.2"),
        ("Proxy-Protocol-Server-Port", b"25"),
        ("X-A", b"1"),
    ]


def test_tls_headers_skip_empty_values() -> None:
    tls = AuthTls(protocol="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", verify="SUCCESS", subject="CN=a",
                  cert="-----BEGIN CERTIFICATE-----\nMII+/=\n-----END CERTIFICATE-----\n")
    lines = build_headers(URL, request(tls=tls), (("X-A", "1"),))
    assert lines[7:] == [
        ("Auth-SSL", b"on"),
        ("Auth-SSL-Protocol", b"TLSv1.3"),
        ("Auth-SSL-Cipher", b"TLS_AES_256_GCM_SHA384"),
        ("Auth-SSL-Verify", b"SUCCESS"),
        ("Auth-SSL-Subject", b"CN=a"),
        ("Auth-SSL-Cert", b"-----BEGIN%20CERTIFICATE-----%0AMII+/=%0A-----END%20CERTIFICATE-----%0A"),
        ("X-A", b"1"),
    ]


def test_extra_headers_keep_order_and_duplicates() -> None:
    extra = (("X-B", "2"), ("X-A", "1"), ("X-B", "3"), ("Host", "other"))
    lines = build_headers(URL, request(), extra)
    assert lines[-4:] == [("X-B", b"2"), ("X-A", b"1"), ("X-B", b"3"), ("Host", b"other")]
    assert lines[0] == ("Host", b"127.0.0.1")


def test_host_header_from_url() -> None:
    url = AuthHttpUrl("localhost:9000/a", "inet", "127.0.0.1", 9000, "/a", "localhost")
    assert build_headers(url, request())[0] == ("Host", b"localhost")


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        (b"john doe ", b"john%20doe%20"),
        (b"100%", b"100%25"),
        (b"a+b=c/d?&#~", b"a+b=c/d?&#~"),
        (b"\x00\x01\t\n\r\x1f", b"%00%01%09%0A%0D%1F"),
        (b"\x7f", b"\x7f"),
        (b"caf\xc3\xa9\xff\x80", b"caf\xc3\xa9\xff\x80"),
        (b"", b""),
    ],
)
def test_escape(raw: bytes, escaped: bytes) -> None:
    assert escape(raw) == escaped


def test_login_and_password_bytes_go_raw() -> None:
    req = request(login=text(b"j\xc3\xb6rg\xff %"), password=text(b"p\x80ss\x00"))
    lines = dict(build_headers(URL, req))
    assert lines["Auth-User"] == b"j\xc3\xb6rg\xff%20%25"
    assert lines["Auth-Pass"] == b"p\x80ss%00"


# --- reading the head -----------------------------------------------------------


OK_HEAD = b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 110\r\n\r\n"


def test_scan_done_and_end() -> None:
    head = scan_response_head(OK_HEAD + b"body bytes")
    assert head.state == DONE
    assert head.end == len(OK_HEAD)
    assert head.headers == ((b"Auth-Status", b"OK"), (b"Auth-Server", b"127.0.0.1"), (b"Auth-Port", b"110"))


@pytest.mark.parametrize(
    ("data", "state"),
    [
        (b"", AGAIN),
        (b"HTT", AGAIN),
        (b"HTTP/1.0 200 OK\r", AGAIN),
        (b"HTTP/1.0 200 OK\rX", INVALID_RESPONSE),
        (b"HTTP/1.0 200\r\r\n\r\n", INVALID_RESPONSE),
        (b"HTTP/1.0 200 OK\r\nAuth-St", AGAIN),
        (b"HTTP/1.0 200 OK\r\nAuth_St", INVALID_HEADER),
        (b"HTTP/1.0 200 OK\r\nAuth-Status OK", INVALID_HEADER),
        (b"HTTP/1.0 200 OK\r\n-Auth: x\r\n\r\n", INVALID_HEADER),
        (b"HTTP/1.0 200 OK\r\nA: x\ry\r\n\r\n", INVALID_HEADER),
        (b"HTTP/1.0 200 OK\r\n\rX", INVALID_HEADER),
        (b"HTTP/1.0 200 OK\n\n", DONE),
        (b"HTTP/1.0 200 OK\r\n\r\n", DONE),
        (b"\r\n", DONE),
        (b"\n", DONE),
        (b"<html>", INVALID_HEADER),
        (b" HTTP/1.0 200 OK\r\n\r\n", INVALID_HEADER),
        (b"http/1.0 200 OK\r\n\r\n", INVALID_HEADER),  # "HTTP/" is case-sensitive
        (b"HTTP 200 OK\r\n\r\n", INVALID_HEADER),
    ],
)
def test_scan_states(data: bytes, state: str) -> None:
    assert scan_response_head(data).state == state


def test_scan_value_trimming_and_lines_without_colon() -> None:
    head = scan_response_head(b"HTTP/1.0 200\nA:   x y  \nB\r\nC:\nD: \tz\t \nE-1:\x00\xff\n\n")
    assert head.headers == ((b"A", b"x y"), (b"B", b""), (b"C", b""), (b"D", b"\tz\t"), (b"E-1", b"\x00\xff"))


def test_scan_only_first_1024_bytes() -> None:
    filler = b"X-Filler: " + b"a" * 100 + b"\r\n"
    long_head = b"HTTP/1.0 200 OK\r\n" + filler * 10 + b"Auth-Status: OK\r\n\r\n"
    assert len(long_head) > MAX_HEAD
    assert scan_response_head(long_head).state == AGAIN
    fits = b"HTTP/1.0 200 OK\r\n" + filler * 8 + b"\r\n"
    assert len(fits) <= MAX_HEAD and scan_response_head(fits + b"x" * 2000).state == DONE


def test_scan_decision_does_not_depend_on_chunking() -> None:
    """Once a prefix decides, every longer prefix decides the same way."""
    rng = random.Random(8)
    pieces = [b"HTTP/1.0 200 OK", b"\r\n", b"\n", b"\r", b"Auth-Status", b": ", b"OK", b" ", b"_", b"x-y",
              b":", b"WAIT", b"\t", b"H", b"HTTP/"]
    for _ in range(3000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        final = scan_response_head(data)
        decided = None
        for cut in range(len(data) + 1):
            head = scan_response_head(data[:cut])
            if decided is None and head.state != AGAIN:
                decided = head
        if decided is not None:
            assert (decided.state, decided.headers, decided.end) == (final.state, final.headers, final.end), data


# --- the decision ---------------------------------------------------------------


def decide(head: bytes, protocol: str = "pop3", method: str = "plain") -> auth.AuthResult:
    return parse_response(head, ADDR, protocol, method)


def lines(*headers: str, status: str = "HTTP/1.0 200 OK") -> bytes:
    return "\r\n".join([status, *headers, "", ""]).encode()


def test_ok() -> None:
    result = decide(lines("Auth-Status: OK", "Auth-Server: 127.0.0.2", "Auth-Port: 1110"))
    assert (result.outcome, result.server, result.port, result.login, result.password) == (
        auth.OK, "127.0.0.2", 1110, None, None)
    assert result.upstream == "127.0.0.2:1110"


def test_ok_with_overrides_and_status_ignored() -> None:
    head = lines("Auth-Server: ::1", "Auth-Port: 143", "Auth-User: bob@x", "Auth-Pass: p a",
                 status="HTTP/1.1 500 Internal Server Error")
    result = decide(head, "imap")
    assert (result.outcome, result.server, result.port, result.login, result.password) == (
        auth.OK, "::1", 143, "bob@x", "p a")
    assert result.upstream == "::1:143"


def test_auth_status_not_required() -> None:
    assert decide(lines("Auth-Server: 10.0.0.1", "Auth-Port: 25")).outcome == auth.OK


def test_no_status_line_first_line_is_a_header() -> None:
    result = decide(b"Auth-Status: OK\r\nAuth-Server: 10.0.0.1\r\nAuth-Port: 25\r\n\r\n")
    assert (result.outcome, result.server, result.port) == (auth.OK, "10.0.0.1", 25)


def test_names_case_insensitive_values_case_sensitive() -> None:
    result = decide(lines("auth-server: 10.0.0.1", "AUTH-PORT: 25", "auth-status: ok"))
    assert (result.outcome, result.message) == (auth.FAIL, "ok")


def test_last_occurrence_wins() -> None:
    result = decide(lines("Auth-Server: 10.0.0.1", "Auth-Port: 1", "Auth-Server: 10.0.0.2", "Auth-Port: 2",
                          "Auth-User: a", "Auth-User: b"))
    assert (result.server, result.port, result.login) == ("10.0.0.2", 2, "b")


def test_fail_with_wait_and_message() -> None:
    result = decide(lines("Auth-Status: Invalid login or password", "Auth-Wait: 3"))
    assert (result.outcome, result.message, result.wait, result.error_code) == (
        auth.FAIL, "Invalid login or password", 3, "")
    assert result.log_message == 'client login failed: "Invalid login or password"'
    assert result.log_level == "info"


def test_fail_beats_server_and_port_and_later_ok() -> None:
    result = decide(lines("Auth-Status: nope", "Auth-Server: 10.0.0.1", "Auth-Port: 110", "Auth-Status: OK"))
    assert (result.outcome, result.message) == (auth.FAIL, "nope")


def test_fail_message_is_the_last_one() -> None:
    assert decide(lines("Auth-Status: first", "Auth-Status: second")).message == "second"


@pytest.mark.parametrize("value", ["", "ok", "Ok", "WAITING", "O K", "\tOK", "wait"])
def test_any_other_status_fails_pop3_imap(value: str) -> None:
    for protocol in ("pop3", "imap"):
        result = decide(lines(f"Auth-Status: {value}", "Auth-Server: 10.0.0.1", "Auth-Port: 1"), protocol)
        assert result.outcome == auth.FAIL
        assert result.message == value.strip(" ")


def test_smtp_empty_status_is_no_failure() -> None:
    result = decide(lines("Auth-Status:", "Auth-Server: 10.0.0.1", "Auth-Port: 25"), "smtp")
    assert result.outcome == auth.OK
    # SMTP judges by the last message only.
    result = decide(lines("Auth-Status: bad", "Auth-Status: ", "Auth-Server: 10.0.0.1", "Auth-Port: 25"), "smtp")
    assert result.outcome == auth.OK
    # POP3 does not forget the failure.
    result = decide(lines("Auth-Status: bad", "Auth-Status: ", "Auth-Server: 10.0.0.1", "Auth-Port: 25"), "pop3")
    assert (result.outcome, result.message) == (auth.FAIL, "")


def test_smtp_error_code() -> None:
    result = decide(lines("Auth-Status: Temporary problem", "Auth-Error-Code: 451 4.3.0"), "smtp")
    assert (result.outcome, result.message, result.error_code) == (auth.FAIL, "Temporary problem", "451 4.3.0")
    assert decide(lines("Auth-Status: x"), "smtp").error_code == "535 5.7.0"
    assert decide(lines("Auth-Status: x", "Auth-Error-Code: 451 4.3.0"), "pop3").error_code == ""


@pytest.mark.parametrize(("value", "expected"), [("3", 3), ("0", 0), ("", 0), ("-1", 0), ("3s", 0), (" 4 ", 4),
                                                   ("+5", 0), ("99999999999999999999", 0)])
def test_auth_wait_digits_only(value: str, expected: int) -> None:
    assert decide(lines("Auth-Status: no", f"Auth-Wait: {value}")).wait == expected


def test_invalid_auth_wait_keeps_the_earlier_one() -> None:
    assert decide(lines("Auth-Status: no", "Auth-Wait: 2", "Auth-Wait: x")).wait == 2


def test_wait_status() -> None:
    result = decide(lines("Auth-Status: WAIT", "Auth-Wait: 2"))
    assert (result.outcome, result.wait) == (auth.WAIT, 2)
    assert decide(lines("Auth-Status: WAIT")).wait == 0
    assert decide(lines("Auth-Status:   WAIT   ")).outcome == auth.WAIT  # spaces are trimmed
    # WAIT wins over server and port; a failure wins over WAIT.
    assert decide(lines("Auth-Status: WAIT", "Auth-Server: 10.0.0.1", "Auth-Port: 1")).outcome == auth.WAIT
    assert decide(lines("Auth-Status: WAIT", "Auth-Status: no")).outcome == auth.FAIL
    assert decide(lines("Auth-Status: WAIT", "Auth-Status: OK")).outcome == auth.WAIT


@pytest.mark.parametrize(
    "headers",
    [(), ("Auth-Status: OK",), ("Auth-Server: 10.0.0.1",), ("Auth-Port: 110",), ("Auth-Server:", "Auth-Port: 110"),
     ("Auth-Server: 10.0.0.1", "Auth-Port")],
)
def test_missing_server_or_port(headers: tuple[str, ...]) -> None:
    result = decide(lines(*headers))
    assert result.outcome == auth.ERROR
    assert result.log_message == "auth http server 127.0.0.1:9000 did not send server or port"
    assert result.log_level == "error"


@pytest.mark.parametrize("method", ["apop", "cram-md5", "external"])
@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_digest_methods_need_a_password(method: str, protocol: str) -> None:
    head = lines("Auth-Server: 10.0.0.1", "Auth-Port: 110")
    result = parse_response(head, ADDR, protocol, method)
    assert (result.outcome, result.log_message) == (auth.ERROR, "auth http server 127.0.0.1:9000 did not send password")
    with_pass = lines("Auth-Server: 10.0.0.1", "Auth-Port: 110", "Auth-Pass:")
    assert parse_response(with_pass, ADDR, protocol, method).outcome == auth.OK  # even an empty one


def test_smtp_and_plain_need_no_password() -> None:
    head = lines("Auth-Server: 10.0.0.1", "Auth-Port: 25")
    assert parse_response(head, ADDR, "smtp", "cram-md5").outcome == auth.OK
    assert parse_response(head, ADDR, "pop3", "plain").outcome == auth.OK


def test_password_check_comes_before_address_check() -> None:
    result = parse_response(lines("Auth-Server: mail.example", "Auth-Port: 0"), ADDR, "pop3", "apop")
    assert result.log_message == "auth http server 127.0.0.1:9000 did not send password"


@pytest.mark.parametrize("value", ["mail.example", "[::1]", "fe80::1%eth0", "1.2.3", "1.2.3.4.5", "256.1.1.1",
                                   "255.255.255.255", "1.2.3.4:110", "::g", "1.2.3.a"])
def test_invalid_server_address(value: str) -> None:
    result = decide(lines(f"Auth-Server: {value}", "Auth-Port: 110"))
    assert result.outcome == auth.ERROR
    assert result.log_message == f'auth http server 127.0.0.1:9000 sent invalid server address:"{value}"'


@pytest.mark.parametrize("value", ["0", "65536", "-1", "abc", "1 10", "99999999999999999999"])
def test_invalid_server_port(value: str) -> None:
    result = decide(lines("Auth-Server: 10.0.0.1", f"Auth-Port: {value}"))
    assert result.outcome == auth.ERROR
    assert result.log_message == f'auth http server 127.0.0.1:9000 sent invalid server port:"{value}"'


def test_address_and_port_as_nginx_reads_them() -> None:
    result = decide(lines("Auth-Server: 010.0.0.1", "Auth-Port: 0110"))
    assert (result.outcome, result.server, result.port, result.upstream) == (auth.OK, "10.0.0.1", 110,
                                                                             "010.0.0.1:0110")


@pytest.mark.parametrize(("value", "expected"), [(b"127.0.0.1", "127.0.0.1"), (b"1..2.3", "1.0.2.3"),
                                                 (b".1.2.3", "0.1.2.3"), (b"::1", "::1"),
                                                 (b"2001:DB8::1", "2001:db8::1"), (b"::ffff:1.2.3.4", "::ffff:102:304"),
                                                 (b"host", None), (b"", None)])
def test_backend_address(value: bytes, expected: str | None) -> None:
    assert backend_address(value) == expected


def test_invalid_header_and_invalid_response() -> None:
    result = decide(b"HTTP/1.0 200 OK\r\nAuth_Status: OK\r\n\r\n")
    assert (result.outcome, result.log_message) == (
        auth.ERROR, "auth http server 127.0.0.1:9000 sent invalid header in response")
    result = decide(b"HTTP/1.0 200 OK\rAuth-Status: OK\r\n\r\n")
    assert (result.outcome, result.log_message) == (auth.ERROR, "auth http server 127.0.0.1:9000 sent invalid response")


def test_invalid_header_after_the_head_is_ignored() -> None:
    assert decide(lines("Auth-Server: 10.0.0.1", "Auth-Port: 1") + b"Auth_X: y\r\n\r\n").outcome == auth.OK


def test_incomplete_head_is_an_error_nginx_does_not_log() -> None:
    for head in (b"", b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n", b"HTTP/1.0 200 OK\r\n" + b"X-A: b\r\n" * 200):
        result = decide(head)
        assert result.outcome == auth.ERROR
        assert result.log_level == "debug"


def test_overrides_keep_raw_bytes() -> None:
    result = decide(b"HTTP/1.0 200\r\nAuth-Server: 10.0.0.1\r\nAuth-Port: 1\r\nAuth-User: j\xf6rg\r\n"
                    b"Auth-Pass: %20x\r\n\r\n")
    assert result.login is not None and result.password is not None
    assert (result.login.encode("utf-8", "surrogateescape"), result.password) == (b"j\xf6rg", "%20x")


def test_failure_keeps_login_override_and_password_stays_out_of_repr() -> None:
    result = decide(lines("Auth-Status: no", "Auth-User: other", "Auth-Pass: hunter2"))
    assert result.login == "other"
    assert "hunter2" not in repr(result)
