"""The client hostname lookup (SPEC 7.1) over real UDP and TCP on loopback,
against the fake DNS server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailgate.dns import (
    ACTION_ADDRESS,
    ACTION_HOSTNAME,
    TEMPUNAVAIL,
    UNAVAILABLE,
    ClientHost,
    DnsError,
    Resolver,
    resolve_client_host,
)
from tests.fakes.dns_server import (
    FORMERR,
    NOTIMP,
    REFUSED,
    SERVFAIL,
    FakeDnsServer,
    Records,
    ptr,
    unused_udp_port,
    with_ident,
)

ROOT = Path(__file__).resolve().parents[2]
CLIENT = "192.0.2.7"
PTR_NAME = "7.2.0.192.in-addr.arpa"
CONFIRMED: Records = {
    (PTR_NAME, "PTR"): [("mail.example.", 300)],
    ("mail.example", "A"): [("192.0.2.7", 300)],
}


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeDnsServer]]:
    started: list[FakeDnsServer] = []

    def start(records: Records | None = None, **knobs: object) -> FakeDnsServer:
        table = dict(CONFIRMED if records is None else records)
        server = FakeDnsServer(table, **knobs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def resolver(*servers: FakeDnsServer | str, timeout: float = 2.0, **options: object) -> Resolver:
    names = tuple(s if isinstance(s, str) else s.directive for s in servers)
    return Resolver(names, timeout, **options)  # type: ignore[arg-type]


def timed(call: Callable[[], ClientHost]) -> tuple[ClientHost, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


# --- every branch of SPEC 7.1 ------------------------------------------------------


def test_confirmed_name(serve: Callable[..., FakeDnsServer]) -> None:
    dns = serve({(PTR_NAME, "PTR"): [("Mail.EXAMPLE.", 300)], ("mail.example", "A"): [("192.0.2.7", 300)]})
    result = resolve_client_host(resolver(dns), CLIENT)
    assert result == ClientHost("mail.example", [], ACTION_HOSTNAME)
    assert [(q.transport, q.name, q.qtype) for q in dns.queries] == [
        ("udp", PTR_NAME, "PTR"), ("udp", "mail.example", "A"), ("udp", "mail.example", "AAAA")]


@pytest.mark.parametrize("rcode, expected", [
    (None, ("3: Host not found", UNAVAILABLE)),  # no record: NXDOMAIN
    (FORMERR, ("1: Format error", TEMPUNAVAIL)),
    (SERVFAIL, ("2: Server failure", TEMPUNAVAIL)),
    (NOTIMP, ("4: Unimplemented", TEMPUNAVAIL)),
    (REFUSED, ("5: Operation refused", TEMPUNAVAIL)),
    (9, ("9: Unknown error", TEMPUNAVAIL)),
])
def test_ptr_failure(serve: Callable[..., FakeDnsServer], rcode: int | None,
                     expected: tuple[str, str]) -> None:
    dns = serve({}, rcodes={} if rcode is None else {PTR_NAME: rcode})
    result = resolve_client_host(resolver(dns), CLIENT)
    text, host = expected
    assert result == ClientHost(host, [("error", f"192.0.2.7 could not be resolved ({text})")], ACTION_ADDRESS)
    assert dns.asked() == [PTR_NAME]


def test_ptr_without_ptr_record_is_host_not_found(serve: Callable[..., FakeDnsServer]) -> None:
    dns = serve({(PTR_NAME, "A"): [("192.0.2.1", 60)]})  # NOERROR, empty answer
    result = resolve_client_host(resolver(dns), CLIENT)
    assert result.host == UNAVAILABLE
    assert result.logs == [("error", "192.0.2.7 could not be resolved (3: Host not found)")]


def test_ptr_timeout_is_bounded(serve: Callable[..., FakeDnsServer]) -> None:
    dns = serve(silent=True)
    result, elapsed = timed(lambda: resolve_client_host(resolver(dns, timeout=0.6), CLIENT))
    assert result == ClientHost(TEMPUNAVAIL, [("error", "192.0.2.7 could not be resolved (110: Operation timed out)")],
                                ACTION_ADDRESS)
    assert 0.55 <= elapsed < 1.5


@pytest.mark.parametrize("name, shown", [
    ("evil\r\nX-Injected: 1.example.", "evil\\x0D\\x0Ax-injected: 1.example"),
    ("mail example.", "mail example"),
    ('quo"te.example.', "quo\\x22te.example"),
    ("under_score.example.", "under_score.example"),
    ("back\\slash.example.", "back\\x5Cslash.example"),
    ("nul\x00.example.", "nul\\x00.example"),
    ("caf\xe9.example.", "caf\\xE9.example"),
    (".", ""),  # the root: an empty name
])
def test_invalid_ptr_names_are_refused(serve: Callable[..., FakeDnsServer], name: str, shown: str) -> None:
    records: Records = {(PTR_NAME, "PTR"): [(name, 300)], (name, "A"): [("192.0.2.7", 300)]}
    dns = serve(records)
    result = resolve_client_host(resolver(dns), CLIENT)
    assert result == ClientHost(TEMPUNAVAIL, [("error", f'192.0.2.7 resolved to invalid host name "{shown}"')],
                                ACTION_ADDRESS)
    message = result.logs[0][1]
    assert "\r" not in message and "\n" not in message and message.count('"') == 2
    assert dns.asked("A") == [] and dns.asked("AAAA") == []  # never looked up, never used


def test_forward_host_not_found(serve: Callable[..., FakeDnsServer]) -> None:
    dns = serve({(PTR_NAME, "PTR"): [("mail.example.", 300)]})
    result = resolve_client_host(resolver(dns), CLIENT)
    assert result == ClientHost(UNAVAILABLE, [("error", '"mail.example" could not be resolved (3: Host not found)')],
                                ACTION_HOSTNAME)


def test_forward_without_addresses_is_host_not_found(serve: Callable[..., FakeDnsServer]) -> None:
    dns = serve({(PTR_NAME, "PTR"): [("mail.example.", 300)], ("mail.example", "AAAA"): [("2001:db8::7", 300)]})
    result = resolve_client_host(resolver(dns, ipv6=False), CLIENT)
    assert result.host == UNAVAILABLE
    assert result.logs == [("error", '"mail.example" could not be resolved (3: Host not found)')]


def test_forward_server_failure(serve: Callable[..., FakeDnsServer]) -> None:
    dns = serve(rcodes={"mail.example": SERVFAIL})
    result = resolve_client_host(resolver(dns), CLIENT)
    assert result == ClientHost(TEMPUNAVAIL, [("error", '"mail.example" could not be resolved (2: Server failure)')],
                                ACTION_HOSTNAME)


def test_forward_timeout(serve: Callable[..., FakeDnsServer]) -> None:
    dns = serve(delays={"mail.example": 5.0})
    result, elapsed = timed(lambda: resolve_client_host(resolver(dns, timeout=0.6), CLIENT))
    assert result == ClientHost(
        TEMPUNAVAIL, [("error", '"mail.example" could not be resolved (110: Operation timed out)')], ACTION_HOSTNAME)
    assert 0.55 <= elapsed < 1.5


def test_no_matching_address_is_silent(serve: Callable[..., FakeDnsServer]) -> None:
    dns = serve({(PTR_NAME, "PTR"): [("mail.example.", 300)],
                 ("mail.example", "A"): [("192.0.2.8", 300), ("192.0.2.9", 300)],
                 ("mail.example", "AAAA"): [("2001:db8::7", 300)]})
    assert resolve_client_host(resolver(dns), CLIENT) == ClientHost(UNAVAILABLE, [], ACTION_HOSTNAME)


def test_ipv6_client(serve: Callable[..., FakeDnsServer]) -> None:
    nibbles = "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    assert ptr("2001:db8::7") == nibbles
    dns = serve({(nibbles, "PTR"): [("v6.example.", 300)],
                 ("v6.example", "A"): [("192.0.2.1", 300)],
                 ("v6.example", "AAAA"): [("2001:db8:0:0:0:0:0:7", 300)]})
    result = resolve_client_host(resolver(dns), "2001:DB8::7")
    assert result == ClientHost("v6.example", [], ACTION_HOSTNAME)
    assert dns.asked("PTR") == [nibbles]


def test_cname_chains_are_followed(serve: Callable[..., FakeDnsServer]) -> None:
    # RFC 2317 delegation: the PTR name is an alias, and so is the host.
    dns = serve({(PTR_NAME, "CNAME"): [("7.0-25.2.0.192.in-addr.arpa.", 300)],
                 ("7.0-25.2.0.192.in-addr.arpa", "PTR"): [("mail.example.", 300)],
                 ("mail.example", "CNAME"): [("host.example.", 300)],
                 ("host.example", "A"): [("192.0.2.7", 300)]})
    assert resolve_client_host(resolver(dns), CLIENT).host == "mail.example"


def test_ipv4_off_and_ipv6_off(serve: Callable[..., FakeDnsServer]) -> None:
    dns = serve()
    assert resolve_client_host(resolver(dns, ipv6=False), CLIENT).host == "mail.example"
    assert dns.asked("AAAA") == []
    dns = serve()
    assert resolve_client_host(resolver(dns, ipv4=False), CLIENT).host == UNAVAILABLE
    assert dns.asked("A") == [] and dns.asked("AAAA") == ["mail.example"]


def test_resolver_methods(serve: Callable[..., FakeDnsServer]) -> None:
    dns = serve({(PTR_NAME, "PTR"): [("b.example.", 300), ("a.example.", 300)],
                 ("mail.example", "A"): [("192.0.2.7", 300)],
                 ("mail.example", "AAAA"): [("2001:db8::7", 300)]})
    r = resolver(dns)
    assert r.ptr(CLIENT) == ["b.example", "a.example"]
    assert r.addresses("mail.example") == ["192.0.2.7", "2001:db8::7"]
    with pytest.raises(DnsError) as err:
        r.addresses("missing.example")
    assert (err.value.rcode, err.value.text) == (3, "Host not found")


# --- caching -------------------------------------------------------------------------


def test_second_lookup_asks_nothing(serve: Callable[..., FakeDnsServer]) -> None:
    dns = serve()
    r = resolver(dns)
    assert resolve_client_host(r, CLIENT).host == "mail.example"
    asked = len(dns.queries)
    assert asked == 3  # PTR, A, AAAA (no AAAA record: remembered with the A)
    assert resolve_client_host(r, CLIENT).host == "mail.example"
    assert len(dns.queries) == asked


def test_cache_honours_ttl(serve: Callable[..., FakeDnsServer]) -> None:
    now = [1000.0]
    dns = serve({(PTR_NAME, "PTR"): [("mail.example.", 60)], ("mail.example", "A"): [("192.0.2.7", 10)]})
    r = resolver(dns, clock=lambda: now[0])
    resolve_client_host(r, CLIENT)
    now[0] += 9
    resolve_client_host(r, CLIENT)
    assert len(dns.queries) == 3
    now[0] += 2  # the A record (10 s) expired, the PTR (60 s) did not
    assert resolve_client_host(r, CLIENT).host == "mail.example"
    assert [q.qtype for q in dns.queries[3:]] == ["A", "AAAA"]


def test_valid_overrides_ttl(serve: Callable[..., FakeDnsServer]) -> None:
    records: Records = {(PTR_NAME, "PTR"): [("mail.example.", 0)], ("mail.example", "A"): [("192.0.2.7", 0)]}
    dns = serve(records)
    r = resolver(dns)  # TTL 0: nothing is kept
    resolve_client_host(r, CLIENT)
    resolve_client_host(r, CLIENT)
    assert len(dns.asked("PTR")) == 2
    now = [0.0]
    dns = serve(records)
    r = Resolver.from_directive((dns.directive, "valid=30s"), 2.0)
    r.cache.clock = lambda: now[0]
    resolve_client_host(r, CLIENT)
    now[0] = 29
    resolve_client_host(r, CLIENT)
    assert len(dns.asked("PTR")) == 1
    now[0] = 31
    resolve_client_host(r, CLIENT)
    assert len(dns.asked("PTR")) == 2


def test_errors_are_not_cached(serve: Callable[..., FakeDnsServer]) -> None:
    dns = serve(rcodes={PTR_NAME: SERVFAIL})
    r = resolver(dns)
    resolve_client_host(r, CLIENT)
    resolve_client_host(r, CLIENT)
    assert dns.asked() == [PTR_NAME, PTR_NAME]


# --- servers, timeouts, transports ------------------------------------------------------


def test_servers_are_tried_in_order(serve: Callable[..., FakeDnsServer]) -> None:
    silent, good = serve(silent=True), serve()
    result, elapsed = timed(lambda: resolve_client_host(resolver(silent, good, timeout=1.0), CLIENT))
    assert result.host == "mail.example"
    # Each lookup asks the first server, gives it half the timeout, then the next.
    expected = [PTR_NAME, "mail.example", "mail.example"]
    assert silent.asked() == good.asked() == expected
    assert good.queries[0].at - silent.queries[0].at >= 0.45
    assert good.queries[1].at - silent.queries[1].at >= 0.45
    assert 0.95 <= elapsed < 1.8


def test_refusing_server_is_passed_at_once(serve: Callable[..., FakeDnsServer]) -> None:
    good = serve()
    r = resolver(f"127.0.0.1:{unused_udp_port()}", good, timeout=4.0)
    result, elapsed = timed(lambda: resolve_client_host(r, CLIENT))
    assert result.host == "mail.example"
    assert elapsed < 1.0


def test_every_server_refusing_times_out_without_spinning() -> None:
    r = resolver(f"127.0.0.1:{unused_udp_port()}", f"127.0.0.1:{unused_udp_port()}", timeout=0.6)
    result, elapsed = timed(lambda: resolve_client_host(r, CLIENT))
    assert result.host == TEMPUNAVAIL
    assert result.logs == [("error", "192.0.2.7 could not be resolved (110: Operation timed out)")]
    assert 0.55 <= elapsed < 1.5


def test_slow_answer_within_the_timeout(serve: Callable[..., FakeDnsServer]) -> None:
    dns = serve(delay=0.3)
    result, elapsed = timed(lambda: resolve_client_host(resolver(dns, timeout=2.0), CLIENT))
    assert result.host == "mail.example"
    assert 0.55 <= elapsed < 1.5  # PTR, then A and AAAA together


def test_truncated_answer_is_asked_again_over_tcp(serve: Callable[..., FakeDnsServer]) -> None:
    dns = serve(truncate=[PTR_NAME, "mail.example"])
    result = resolve_client_host(resolver(dns), CLIENT)
    assert result == ClientHost("mail.example", [], ACTION_HOSTNAME)
    ptr_queries = [(q.transport, q.qtype) for q in dns.queries if q.name == PTR_NAME]
    assert ptr_queries == [("udp", "PTR"), ("tcp", "PTR")]
    assert sorted((q.transport, q.qtype) for q in dns.queries if q.name == "mail.example") == [
        ("tcp", "A"), ("tcp", "AAAA"), ("udp", "A"), ("udp", "AAAA")]


def test_forged_and_garbage_datagrams_are_ignored(serve: Callable[..., FakeDnsServer]) -> None:
    def forged_first(server: FakeDnsServer, packet: bytes) -> list[bytes]:
        real = server.build(packet, PTR_NAME, 12)
        ident = int.from_bytes(packet[:2], "big")
        lie = FakeDnsServer({(PTR_NAME, "PTR"): [("evil.example.", 300)]}).build(packet, PTR_NAME, 12)
        other_question = server.build(packet[:12] + b"\x01x\x00\x00\x0c\x00\x01", "x", 12)
        return [b"\xff" * 7, with_ident(lie, ident ^ 1), other_question, real[:20], real]

    dns = serve(mangle={PTR_NAME: forged_first})
    assert resolve_client_host(resolver(dns), CLIENT).host == "mail.example"


def test_lookups_are_cooperative_under_gevent() -> None:
    script = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import json, sys, time
        import gevent
        sys.path.insert(0, {str(ROOT)!r})
        from mailgate.dns import Resolver, resolve_client_host
        from tests.fakes.dns_server import FakeDnsServer, ptr

        clients = ["192.0.2.%d" % n for n in range(1, 6)]
        records = {{}}
        for n, ip in enumerate(clients):
            records[(ptr(ip), "PTR")] = [("h%d.example." % n, 300)]
            records[("h%d.example" % n, "A")] = [(ip, 300)]
        with FakeDnsServer(records, delay=0.4) as dns:
            resolver = Resolver((dns.directive,), 5.0)
            start = time.monotonic()
            jobs = [gevent.spawn(resolve_client_host, resolver, ip) for ip in clients]
            gevent.joinall(jobs, timeout=20)
            print(json.dumps([[job.value.host for job in jobs], time.monotonic() - start]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    hosts, elapsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert hosts == [f"h{n}.example" for n in range(5)]
    assert elapsed < 2.0  # one after the other would take 4 s
