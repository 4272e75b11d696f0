"""``listen`` forms and parameters, the sockets bound for them (bindings and
routing by local address), and ``auth_http`` URLs."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mailgate.config import addresses, load
from mailgate.config.model import AuthHttpUrl, Config, KeepAlive, Listen, Source
from mailgate.errors import ConfigError

AUTH = "auth_http 127.0.0.1:9000/auth;"
HOSTS = {
    "dual.test": [("inet", "192.0.2.1"), ("inet6", "2001:db8::1")],
    "v4.test": [("inet", "192.0.2.7")],
}


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Host names resolve from HOSTS; IP literals as themselves."""
    def resolve(host: str) -> list[tuple[str, str]]:
        literal = addresses._ip_literal(host)
        return [literal] if literal else HOSTS.get(host, [])

    monkeypatch.setattr(addresses, "resolve_host", resolve)


def load_servers(tmp_path: Path, *servers: str, level: str = AUTH) -> Config:
    """Servers given as their listen lines (protocol pop3)."""
    blocks = "".join(f"server {{\nprotocol pop3;\n{s}\n}}\n" for s in servers)
    path = tmp_path / "mailgate.conf"
    path.write_text(f"mail {{\n{level}\n{blocks}}}\n")
    return load(str(path))


def listens(tmp_path: Path, *lines: str) -> tuple[Listen, ...]:
    return load_servers(tmp_path, "\n".join(lines)).servers[0].listens


def listen_error(tmp_path: Path, *servers: str) -> str:
    path = str(tmp_path / "mailgate.conf")
    with pytest.raises(ConfigError) as err:
        load_servers(tmp_path, *servers)
    return str(err.value).replace(path, "F")


# --- address forms -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "text", "family", "host", "port"),
    [
        ("127.0.0.1:1110", "127.0.0.1:1110", "inet", "127.0.0.1", 1110),
        ("*:1110", "0.0.0.0:1110", "inet", "0.0.0.0", 1110),
        ("1110", "0.0.0.0:1110", "inet", "0.0.0.0", 1110),
        ("0.0.0.0:1110", "0.0.0.0:1110", "inet", "0.0.0.0", 1110),
        ("[::1]:1110", "[::1]:1110", "inet6", "::1", 1110),
        ("[::]:1110", "[::]:1110", "inet6", "::", 1110),
        ("[2001:DB8::5]:1110", "[2001:db8::5]:1110", "inet6", "2001:db8::5", 1110),
        ("v4.test:1110", "192.0.2.7:1110", "inet", "192.0.2.7", 1110),
        ("unix:/run/mailgate/pop3.sock", "unix:/run/mailgate/pop3.sock", "unix",
         "/run/mailgate/pop3.sock", 0),
    ],
)
def test_address_forms(tmp_path: Path, arg: str, text: str, family: str, host: str,
                       port: int) -> None:
    (listen,) = listens(tmp_path, f"listen {arg};")
    assert (listen.text, listen.family, listen.host, listen.port) == (text, family, host, port)
    assert listen.source == Source(str(tmp_path / "mailgate.conf"), 5)
    assert listen.bind is False and listen.backlog == 511 and listen.ipv6only is True


def test_host_name_listens_on_every_address(tmp_path: Path) -> None:
    result = listens(tmp_path, "listen dual.test:1110;")
    assert [l.text for l in result] == ["192.0.2.1:1110", "[2001:db8::1]:1110"]


def test_port_range(tmp_path: Path) -> None:
    result = listens(tmp_path, "listen 127.0.0.1:1110-1112;")
    assert [l.text for l in result] == ["127.0.0.1:1110", "127.0.0.1:1111", "127.0.0.1:1112"]


def test_wildcard_property(tmp_path: Path) -> None:
    result = listens(tmp_path, "listen 1110;", "listen [::]:1110;", "listen 127.0.0.1:1111;")
    assert [l.wildcard for l in result] == [True, True, False]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("127.0.0.1:0", 'invalid port in "127.0.0.1:0" of the "listen" directive'),
        ("127.0.0.1:65536", 'invalid port in "127.0.0.1:65536" of the "listen" directive'),
        ("127.0.0.1:x", 'invalid port in "127.0.0.1:x" of the "listen" directive'),
        ("70000", 'invalid port in "70000" of the "listen" directive'),
        ("127.0.0.1:1112-1110", 'invalid port range in "127.0.0.1:1112-1110" of the "listen" directive'),
        ("127.0.0.1", 'no port in "127.0.0.1" of the "listen" directive'),
        (":1110", 'no host in ":1110" of the "listen" directive'),
        ("127.0.0.1:1110/x", 'invalid host in "127.0.0.1:1110/x" of the "listen" directive'),
        ("[::1:1110", 'invalid host in "[::1:1110" of the "listen" directive'),
        ("[::1]1110", 'invalid host in "[::1]1110" of the "listen" directive'),
        ("[]:1110", 'no host in "[]:1110" of the "listen" directive'),
        ("[1.2.3.4]:1110", 'invalid IPv6 address in "[1.2.3.4]:1110" of the "listen" directive'),
        ("nowhere.test:1110", 'host not found in "nowhere.test:1110" of the "listen" directive'),
        ("unix:", 'no path in the unix domain socket in "unix:" of the "listen" directive'),
        ("unix:/" + "x" * 200,
         f'too long path in the unix domain socket in "unix:/{"x" * 200}" of the "listen" directive'),
    ],
)
def test_address_errors(tmp_path: Path, arg: str, message: str) -> None:
    assert listen_error(tmp_path, f"listen {arg};") == f"{message} in F:5"


# --- parameters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("bind", {"bind": True}),
        ("backlog=128", {"backlog": 128, "bind": True}),
        ("rcvbuf=64k", {"rcvbuf": 65536, "bind": True}),
        ("sndbuf=1m", {"sndbuf": 1 << 20, "bind": True}),
        ("ipv6only=off", {"ipv6only": False, "bind": True}),
        ("ipv6only=on", {"ipv6only": True, "bind": True}),
        ("so_keepalive=on", {"so_keepalive": True, "bind": True}),
        ("so_keepalive=off", {"so_keepalive": False, "bind": True}),
        ("so_keepalive=30m::10", {"so_keepalive": KeepAlive(1800, None, 10), "bind": True}),
        ("so_keepalive=:30s:", {"so_keepalive": KeepAlive(None, 30, None), "bind": True}),
        ("so_keepalive=1h:10:3", {"so_keepalive": KeepAlive(3600, 10, 3), "bind": True}),
        ("so_keepalive=5", {"so_keepalive": KeepAlive(5, None, None), "bind": True}),
        ("bind backlog=10 sndbuf=8k", {"bind": True, "backlog": 10, "sndbuf": 8192}),
    ],
)
def test_parameters(tmp_path: Path, params: str, expected: dict[str, object]) -> None:
    (listen,) = listens(tmp_path, f"listen [::]:1110 {params};")
    for name, value in expected.items():
        assert getattr(listen, name) == value, name


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("backlog=x", 'invalid backlog "backlog=x"'),
        ("backlog=0", 'invalid backlog "backlog=0"'),
        ("rcvbuf=x", 'invalid rcvbuf "rcvbuf=x"'),
        ("rcvbuf=", 'invalid rcvbuf "rcvbuf="'),
        ("sndbuf=1x", 'invalid sndbuf "sndbuf=1x"'),
        ("ipv6only=yes", 'invalid ipv6only flags "yes"'),
        ("so_keepalive=::", 'invalid so_keepalive value: "so_keepalive=::"'),
        ("so_keepalive=0:0:0", 'invalid so_keepalive value: "so_keepalive=0:0:0"'),
        ("so_keepalive=x::", 'invalid so_keepalive value: "so_keepalive=x::"'),
        ("so_keepalive=1:2:3:4", 'invalid so_keepalive value: "so_keepalive=1:2:3:4"'),
        ("so_keepalive=::x", 'invalid so_keepalive value: "so_keepalive=::x"'),
        ("reuseport", 'invalid parameter "reuseport"'),
        ("default_server", 'invalid parameter "default_server"'),
        ("fastopen=10", 'invalid parameter "fastopen=10"'),
        ("bind=on", 'invalid parameter "bind=on"'),
        ("backlog", 'invalid parameter "backlog"'),
        ("ssl", 'no "ssl_certificate" is defined for the "listen ... ssl" directive'),
        ("multipath", 'the "multipath" parameter of the "listen" directive is not supported yet'),
    ],
)
def test_parameter_errors(tmp_path: Path, param: str, message: str) -> None:
    assert listen_error(tmp_path, f"listen 1110 {param};") == f"{message} in F:5"


# --- duplicates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "text"),
    [
        ("127.0.0.1:1110", "127.0.0.1:1110", "127.0.0.1:1110"),
        ("1110", "*:1110", "0.0.0.0:1110"),
        ("[::1]:1110", "[0::1]:1110 bind", "[::1]:1110"),
        ("unix:/tmp/x.sock", "unix:/tmp/x.sock", "unix:/tmp/x.sock"),
        ("192.0.2.1:1110", "dual.test:1110", "192.0.2.1:1110"),
    ],
)
def test_duplicate_address_across_servers(tmp_path: Path, first: str, second: str,
                                          text: str) -> None:
    message = listen_error(tmp_path, f"listen {first};", f"listen {second};")
    assert message == f'duplicate "{text}" address and port pair in F:9'


def test_duplicate_address_in_one_server(tmp_path: Path) -> None:
    message = listen_error(tmp_path, "listen 1110;\nlisten 0.0.0.0:1110;")
    assert message == 'duplicate "0.0.0.0:1110" address and port pair in F:6'


def test_same_port_other_family_is_not_a_duplicate(tmp_path: Path) -> None:
    assert len(listens(tmp_path, "listen 1110;", "listen [::]:1110;")) == 2


# --- bindings and routing ---------------------------------------------------------------


def test_specific_addresses_fold_into_the_wildcard(tmp_path: Path) -> None:
    config = load_servers(
        tmp_path,
        "listen 1110;",
        "listen 127.0.0.1:1110;",
        "listen 127.0.0.2:1110 bind;",
        "listen 127.0.0.3:1110 backlog=5;",
    )
    texts = [b.listen.text for b in config.bindings]
    assert texts == ["0.0.0.0:1110", "127.0.0.2:1110", "127.0.0.3:1110"]
    wildcard = config.bindings[0]
    assert [(address, r.server) for address, r in wildcard.by_address] == [("127.0.0.1", 1)]
    assert wildcard.route("127.0.0.1").server == 1
    assert wildcard.route("127.0.0.1").listen.text == "127.0.0.1:1110"
    assert wildcard.route("10.0.0.1").server == 0
    assert wildcard.route("10.0.0.1").listen.text == "0.0.0.0:1110"
    assert config.bindings[1].route("127.0.0.2").server == 2
    assert config.bindings[2].by_address == ()


def test_wildcard_after_specific_address_still_folds(tmp_path: Path) -> None:
    config = load_servers(tmp_path, "listen 127.0.0.1:1110;", "listen *:1110;")
    (binding,) = config.bindings
    assert binding.listen.wildcard and binding.default.server == 1
    assert binding.route("127.0.0.1").server == 0


def test_without_wildcard_each_address_is_bound(tmp_path: Path) -> None:
    config = load_servers(tmp_path, "listen 127.0.0.1:1110;", "listen 127.0.0.2:1110;")
    assert [b.listen.text for b in config.bindings] == ["127.0.0.1:1110", "127.0.0.2:1110"]
    assert all(b.by_address == () for b in config.bindings)


def test_folding_is_per_family_and_port(tmp_path: Path) -> None:
    config = load_servers(
        tmp_path,
        "listen [::]:1110;\nlisten 127.0.0.1:1110;",
        "listen [::1]:1110;\nlisten 127.0.0.1:1111;",
        "listen unix:/tmp/a.sock;",
    )
    texts = [b.listen.text for b in config.bindings]
    assert texts == ["[::]:1110", "127.0.0.1:1110", "127.0.0.1:1111", "unix:/tmp/a.sock"]
    assert config.bindings[0].route("::1").server == 1
    assert config.bindings[3].default.server == 2


def test_one_server_on_several_bindings(tmp_path: Path) -> None:
    config = load_servers(tmp_path, "listen 127.0.0.1:1110;\nlisten [::1]:1110;")
    assert [b.default.server for b in config.bindings] == [0, 0]


# --- auth_http URLs ----------------------------------------------------------------------


def auth_url(tmp_path: Path, url: str) -> AuthHttpUrl:
    config = load_servers(tmp_path, "listen 1110;", level=f"auth_http {url};")
    auth = config.servers[0].auth_http
    assert auth is not None
    return auth


@pytest.mark.parametrize(
    ("url", "family", "host", "port", "uri", "header", "address"),
    [
        ("127.0.0.1:9000/auth", "inet", "127.0.0.1", 9000, "/auth", "127.0.0.1", "127.0.0.1:9000"),
        ("http://127.0.0.1:9000/auth", "inet", "127.0.0.1", 9000, "/auth", "127.0.0.1",
         "127.0.0.1:9000"),
        ("127.0.0.1", "inet", "127.0.0.1", 80, "/", "127.0.0.1", "127.0.0.1:80"),
        ("v4.test/a/b?c=d", "inet", "192.0.2.7", 80, "/a/b?c=d", "v4.test", "192.0.2.7:80"),
        ("v4.test?x", "inet", "192.0.2.7", 80, "?x", "v4.test", "192.0.2.7:80"),
        ("dual.test:81", "inet", "192.0.2.1", 81, "/", "dual.test", "192.0.2.1:81"),
        ("[::1]:9000/auth", "inet6", "::1", 9000, "/auth", "[::1]", "[::1]:9000"),
        ("[::1]", "inet6", "::1", 80, "/", "[::1]", "[::1]:80"),
        ("unix:/run/auth.sock", "unix", "/run/auth.sock", 0, "/", "localhost",
         "unix:/run/auth.sock"),
        ("unix:/run/auth.sock:/auth", "unix", "/run/auth.sock", 0, "/auth", "localhost",
         "unix:/run/auth.sock"),
    ],
)
def test_auth_http_urls(tmp_path: Path, url: str, family: str, host: str, port: int,
                        uri: str, header: str, address: str) -> None:
    auth = auth_url(tmp_path, url)
    assert auth == AuthHttpUrl(url=url, family=family, host=host, port=port, uri=uri,
                               host_header=header)
    assert auth.address == address


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://127.0.0.1/auth", 'invalid URL prefix in "https://127.0.0.1/auth"'),
        ("HTTP://127.0.0.1/auth", 'invalid URL prefix in "HTTP://127.0.0.1/auth"'),
        ("127.0.0.1:x/auth", 'invalid port in auth_http "127.0.0.1:x/auth"'),
        ("http://127.0.0.1:0", 'invalid port in auth_http "127.0.0.1:0"'),
        ("nowhere.test/auth", 'host not found in auth_http "nowhere.test/auth"'),
        ("/auth", 'no host in auth_http "/auth"'),
        ("unix:", 'no path in the unix domain socket in auth_http "unix:"'),
    ],
)
def test_auth_http_url_errors(tmp_path: Path, url: str, message: str) -> None:
    path = tmp_path / "mailgate.conf"
    with pytest.raises(ConfigError) as err:
        load_servers(tmp_path, "listen 1110;", level=f"auth_http {url};")
    assert str(err.value) == f"{message} in {path}:2"


def test_resolve_host_orders_ipv4_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()

    def getaddrinfo(host: str, port: object, type: int = 0) -> list[tuple[object, ...]]:
        return [
            (socket.AF_INET6, type, 6, "", ("::1", 0, 0, 0)),
            (socket.AF_INET, type, 6, "", ("127.0.0.1", 0)),
            (socket.AF_INET, type, 6, "", ("127.0.0.1", 0)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert addresses.resolve_host("name.test") == [("inet", "127.0.0.1"), ("inet6", "::1")]
    assert addresses.resolve_host("10.1.2.3") == [("inet", "10.1.2.3")]

