"""The resolver directive, nginx's texts and the client-host decision
(mailgate.dns) without sockets: lookups go to a stub resolver."""

from __future__ import annotations

import pytest

from mailgate.dns import (
    ACTION_ADDRESS,
    ACTION_HOSTNAME,
    TEMPUNAVAIL,
    UNAVAILABLE,
    ClientHost,
    DnsError,
    NameServer,
    Resolver,
    escape_for_log,
    is_valid_host_name,
    rcode_text,
    resolve_client_host,
    shared_resolver,
)
from mailgate.dns_message import MessageError
from mailgate.errors import ConfigError

# --- the directive ------------------------------------------------------------------


def test_addresses_and_ports() -> None:
    resolver = Resolver.from_directive(("192.0.2.1", "192.0.2.2:5353", "[2001:db8::53]", "[::1]:1053"), 30.0)
    assert resolver.servers == (
        NameServer("192.0.2.1", 53), NameServer("192.0.2.2", 5353),
        NameServer("2001:db8::53", 53), NameServer("::1", 1053),
    )
    assert [str(server) for server in resolver.servers] == [
        "192.0.2.1:53", "192.0.2.2:5353", "[2001:db8::53]:53", "[::1]:1053"]
    assert resolver.timeout == 30.0
    assert (resolver.valid, resolver.ipv4, resolver.ipv6) == (None, True, True)


def test_parameters() -> None:
    resolver = Resolver.from_directive(("192.0.2.1", "valid=5m", "ipv6=off"), 2.5)
    assert (resolver.valid, resolver.ipv4, resolver.ipv6, resolver.timeout) == (300.0, True, False, 2.5)
    resolver = Resolver.from_directive(("valid=30", "ipv4=off", "192.0.2.1", "ipv6=on"), 1.0)
    assert (resolver.valid, resolver.ipv4, resolver.ipv6) == (30.0, False, True)
    assert resolver.servers == (NameServer("192.0.2.1"),)


def test_constructor_takes_the_same_server_strings() -> None:
    resolver = Resolver(("127.0.0.1:5300",), 1.0, valid=10.0, ipv6=False)
    assert resolver.servers == (NameServer("127.0.0.1", 5300),)
    assert resolver.valid == 10.0 and not resolver.ipv6


@pytest.mark.parametrize("args, message", [
    (("192.0.2.1:0",), 'invalid port in resolver "192.0.2.1:0"'),
    (("192.0.2.1:65536",), 'invalid port in resolver "192.0.2.1:65536"'),
    (("192.0.2.1:x",), 'invalid port in resolver "192.0.2.1:x"'),
    (("::1",), 'invalid port in resolver "::1"'),  # IPv6 needs brackets
    (("[::1",), 'invalid host in resolver "[::1"'),
    (("[::1]x",), 'invalid host in resolver "[::1]x"'),
    ((":53",), 'no host in resolver ":53"'),
    (("192.0.2.1", "valid=abc"), "invalid parameter: valid=abc"),
    (("192.0.2.1", "valid=10ms"), "invalid parameter: valid=10ms"),
    (("192.0.2.1", "ipv6=no"), "invalid parameter: ipv6=no"),
    (("192.0.2.1", "ipv4=off", "ipv6=off"), '"ipv4" and "ipv6" cannot both be "off"'),
    (("valid=10s",), "no name servers defined"),
])
def test_directive_errors_in_nginx_words(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Resolver.from_directive(args, 30.0)
    assert str(err.value) == message


def test_shared_resolver_is_one_per_directive() -> None:
    assert shared_resolver((), 30.0) is None
    assert shared_resolver(("off",), 30.0) is None
    first = shared_resolver(("192.0.2.1", "valid=1s"), 30.0)
    assert first is not None
    assert shared_resolver(("192.0.2.1", "valid=1s"), 30.0) is first
    assert shared_resolver(("192.0.2.1",), 30.0) is not first


# --- nginx's texts ------------------------------------------------------------------


@pytest.mark.parametrize("rcode, text", [
    (1, "Format error"), (2, "Server failure"), (3, "Host not found"), (4, "Unimplemented"),
    (5, "Operation refused"), (110, "Operation timed out"), (0, "Unknown error"),
    (6, "Unknown error"), (15, "Unknown error"),
])
def test_rcode_texts(rcode: int, text: str) -> None:
    assert rcode_text(rcode) == text
    assert str(DnsError(rcode)) == f"{rcode}: {text}"
    assert DnsError(rcode).text == text


@pytest.mark.parametrize("name, valid", [
    ("mail.example", True), ("MX-1.Example.COM", True), ("a", True), ("1.2.3.4", True),
    ("", False), ("mail_1.example", False), ("mail example", False), ('a"b', False),
    ("evil\r\nx-injected: 1.example", False), ("caf\xe9.example", False), ("a/b", False),
    ("a\x00b", False), ("a;b", False),
])
def test_host_name_validation(name: str, valid: bool) -> None:
    assert is_valid_host_name(name) is valid


def test_log_escaping() -> None:
    assert escape_for_log("mail.example") == "mail.example"
    assert escape_for_log('evil\r\nX: "1"\\') == "evil\\x0D\\x0AX: \\x221\\x22\\x5C"
    assert escape_for_log("\x00\x7f\xff") == "\\x00\\x7F\\xFF"


# --- the decision, against a stub -----------------------------------------------------


class StubResolver:
    def __init__(self, ptr: list[str] | DnsError,
                 forward: dict[str, list[str] | Exception] | None = None) -> None:
        self.answer_ptr = ptr
        self.forward = forward or {}
        self.asked: list[tuple[str, str]] = []

    def ptr(self, ip: str) -> list[str]:
        self.asked.append(("PTR", ip))
        if isinstance(self.answer_ptr, DnsError):
            raise self.answer_ptr
        return self.answer_ptr

    def addresses(self, name: str) -> list[str]:
        self.asked.append(("ADDR", name))
        answer = self.forward.get(name, DnsError(3))
        if isinstance(answer, Exception):
            raise answer
        return answer


def lookup(stub: StubResolver, ip: str = "192.0.2.7") -> ClientHost:
    return resolve_client_host(stub, ip)  # type: ignore[arg-type]


def test_resolver_off_and_unix_clients() -> None:
    assert resolve_client_host(None, "192.0.2.7") == ClientHost(UNAVAILABLE, [])
    stub = StubResolver(["x"])
    assert lookup(stub, "unix:") == ClientHost(TEMPUNAVAIL, [])
    assert resolve_client_host(stub, None) == ClientHost(TEMPUNAVAIL, [])  # type: ignore[arg-type]
    assert stub.asked == []


def test_match() -> None:
    stub = StubResolver(["mail.example"], {"mail.example": ["192.0.2.9", "192.0.2.7"]})
    assert lookup(stub) == ClientHost("mail.example", [], ACTION_HOSTNAME)
    assert stub.asked == [("PTR", "192.0.2.7"), ("ADDR", "mail.example")]


def test_first_ptr_name_is_used_and_trailing_dot_dropped() -> None:
    stub = StubResolver(["mail.example.", "other.example"], {"mail.example": ["192.0.2.7"]})
    assert lookup(stub).host == "mail.example"


@pytest.mark.parametrize("rcode, host", [(3, UNAVAILABLE), (1, TEMPUNAVAIL), (2, TEMPUNAVAIL),
                                         (4, TEMPUNAVAIL), (5, TEMPUNAVAIL), (110, TEMPUNAVAIL),
                                         (9, TEMPUNAVAIL)])
def test_ptr_failure(rcode: int, host: str) -> None:
    result = lookup(StubResolver(DnsError(rcode)))
    assert result == ClientHost(host, [("error", f"192.0.2.7 could not be resolved ({rcode}: {rcode_text(rcode)})")],
                                ACTION_ADDRESS)


def test_invalid_ptr_name_is_neither_used_nor_looked_up() -> None:
    stub = StubResolver(['evil\r\nx-injected: 1 "q".example'])
    result = lookup(stub)
    assert result.host == TEMPUNAVAIL
    assert result.action == ACTION_ADDRESS
    assert result.logs == [("error", '192.0.2.7 resolved to invalid host name '
                                     '"evil\\x0D\\x0Ax-injected: 1 \\x22q\\x22.example"')]
    assert "\r" not in result.logs[0][1] and "\n" not in result.logs[0][1]
    assert stub.asked == [("PTR", "192.0.2.7")]


def test_empty_ptr_name() -> None:
    result = lookup(StubResolver([""]))
    assert result == ClientHost(TEMPUNAVAIL, [("error", '192.0.2.7 resolved to invalid host name ""')],
                                ACTION_ADDRESS)


@pytest.mark.parametrize("rcode, host", [(3, UNAVAILABLE), (2, TEMPUNAVAIL), (110, TEMPUNAVAIL)])
def test_forward_failure(rcode: int, host: str) -> None:
    result = lookup(StubResolver(["mail.example"], {"mail.example": DnsError(rcode)}))
    assert result == ClientHost(
        host, [("error", f'"mail.example" could not be resolved ({rcode}: {rcode_text(rcode)})')], ACTION_HOSTNAME)


def test_name_no_query_can_carry_is_not_confirmed() -> None:
    stub = StubResolver(["a..b"], {"a..b": MessageError("bad label length 0")})
    assert lookup(stub) == ClientHost(UNAVAILABLE, [], ACTION_HOSTNAME)


def test_no_matching_address_is_silent() -> None:
    result = lookup(StubResolver(["mail.example"], {"mail.example": ["192.0.2.8", "2001:db8::7"]}))
    assert result == ClientHost(UNAVAILABLE, [], ACTION_HOSTNAME)


def test_addresses_compare_as_addresses() -> None:
    stub = StubResolver(["v6.example"], {"v6.example": ["2001:db8:0:0::1"]})
    assert lookup(stub, "2001:DB8::1").host == "v6.example"
    stub = StubResolver(["v4.example"], {"v4.example": ["192.0.2.7"]})
    assert lookup(stub, "::ffff:192.0.2.7").host == "v4.example"
    assert stub.asked[0] == ("PTR", "192.0.2.7")  # the IPv4 address's PTR
