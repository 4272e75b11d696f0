"""The YAML front-end: the shape, raw scalars, line numbers, and that it
means exactly what the nginx syntax means."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mailgate.config import load, yaml
from mailgate.config.model import LogTarget
from mailgate.config.nodes import Directive
from mailgate.errors import ConfigError


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def parse(tmp_path: Path, text: str) -> tuple[Directive, ...]:
    return yaml.parse(write(tmp_path / "mailgate.yaml", text))


def error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path / "mailgate.yaml", text)
    with pytest.raises(ConfigError) as err:
        load(path)
    return str(err.value).replace(path, "F")


MAIL = """\
mail:
  auth_http: 127.0.0.1:9000/auth
  servers:
    - listen: 127.0.0.1:1110
      protocol: pop3
"""


# --- shape -------------------------------------------------------------------------------


def test_scalars_lists_and_blocks(tmp_path: Path) -> None:
    nodes = parse(tmp_path, """\
        worker_processes: auto
        error_log: stderr info
        mail:
          smtp_capabilities: ["SIZE 10485760", 8BITMIME]
          server_name: "two words"
          servers:
            - listen: [127.0.0.1:1110, "[::1]:1110 bind"]
              protocol: pop3
        """)
    f = str(tmp_path / "mailgate.yaml")
    assert nodes == (
        Directive("worker_processes", ("auto",), f, 1),
        Directive("error_log", ("stderr", "info"), f, 2),
        Directive("mail", (), f, 3, (
            Directive("smtp_capabilities", ("SIZE 10485760", "8BITMIME"), f, 4),
            Directive("server_name", ("two words",), f, 5),
            Directive("server", (), f, 7, (
                Directive("listen", ("127.0.0.1:1110",), f, 7),
                Directive("listen", ("[::1]:1110", "bind"), f, 7),
                Directive("protocol", ("pop3",), f, 8),
            )),
        )),
    )


def test_scalars_stay_as_written(tmp_path: Path) -> None:
    nodes = parse(tmp_path, "a: off\nb: yes\nc: 0755\nd: 1.10\ne: ~\nf: 'on'\ng: 1e3\n")
    assert [d.args for d in nodes] == [("off",), ("yes",), ("0755",), ("1.10",), ("~",),
                                      ("on",), ("1e3",)]


def test_empty_value_has_no_arguments(tmp_path: Path) -> None:
    (d,) = parse(tmp_path, "pid:\n")
    assert d.args == ()


def test_block_scalars_are_one_argument(tmp_path: Path) -> None:
    (d,) = parse(tmp_path, "x: |-\n  a b\n  c\n")
    assert d.args == ("a b\nc",)


def test_repeatable_list_entries_and_lines(tmp_path: Path) -> None:
    nodes = parse(tmp_path, """\
        error_log:
          - stderr info
          - [/var/log/my logs.log, warn]
          - "syslog:server=unix:/dev/log"
        env: TZ
        """)
    assert [(d.name, d.args, d.line) for d in nodes] == [
        ("error_log", ("stderr", "info"), 2),
        ("error_log", ("/var/log/my logs.log", "warn"), 3),
        ("error_log", ("syslog:server=unix:/dev/log",), 4),
        ("env", ("TZ",), 5),
    ]


def test_mapping_gives_one_directive_per_key(tmp_path: Path) -> None:
    nodes = parse(tmp_path, """\
        auth_http_header:
          X-Auth-Key: "secret string"
          X-Other: [a b]
        """)
    assert [(d.args, d.line) for d in nodes] == [
        (("X-Auth-Key", "secret string"), 2), (("X-Other", "a b"), 3)]


def test_worker_connections_at_top_level_goes_into_events(tmp_path: Path) -> None:
    (events,) = parse(tmp_path, "worker_connections: 64\n")
    assert events.name == "events" and events.block is not None
    assert events.block[0].args == ("64",)
    path = write(tmp_path / "a.yaml", "worker_connections: 64\nevents: {}\n")
    assert load(path).main.worker_connections == 64
    path = write(tmp_path / "b.yaml", "worker_connections: 64\nevents: {worker_connections: 2}\n")
    with pytest.raises(ConfigError, match='"worker_connections" directive is duplicate'):
        load(path)


def test_events_block(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", "events: {worker_connections: 1024}\n")
    assert load(path).main.worker_connections == 1024


def test_single_server_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", """\
        mail:
          auth_file: users.yaml
          server: {listen: 1110, protocol: pop3}
        """)
    assert len(load(path).servers) == 1


def test_merge_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", """\
        mail:
          auth_http: 127.0.0.1:9000
          servers:
            - &base
              listen: 1110
              protocol: pop3
              timeout: 10s
            - <<: *base
              listen: 1111
        """)
    _first, second = load(path).servers
    assert second.timeout == 10.0 and second.listens[0].port == 1111


def test_include(tmp_path: Path) -> None:
    write(tmp_path / "servers/a.yaml", "servers:\n  - {listen: 1110, protocol: pop3}\n")
    write(tmp_path / "servers/b.yaml", "servers:\n  - {listen: 1111, protocol: pop3}\n")
    path = write(tmp_path / "m.yaml", "mail:\n  auth_file: u.yaml\n  include: servers/*.yaml\n")
    assert [s.listens[0].port for s in load(path).servers] == [1110, 1111]


def test_include_missing(tmp_path: Path) -> None:
    message = error(tmp_path, "pid: x\ninclude: nothere.yaml\n")
    assert message == (f'open() "{tmp_path}/nothere.yaml" failed '
                       "(2: No such file or directory) in F:2")


def test_empty_file(tmp_path: Path) -> None:
    assert parse(tmp_path, "# nothing\n") == ()


# --- errors with lines ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus: 1\n", 'unknown directive "bogus" in F:1'),
        (MAIL + "      bogus: 1\n", 'unknown directive "bogus" in F:6'),
        (MAIL + "      timeout: [1, 2]\n", 'invalid number of arguments in "timeout" directive in F:6'),
        (MAIL + "      timeout: 5 s\n", 'invalid number of arguments in "timeout" directive in F:6'),
        (MAIL + "      timeout: '5 s'\n", '"timeout" directive invalid value in F:6'),
        (MAIL + "      timeout: {a: b}\n", '"timeout" directive invalid value in F:6'),
        (MAIL + "      xclient: yes\n",
         'invalid value "yes" in "xclient" directive, it must be "on" or "off" in F:6'),
        (MAIL + "      xclient: true\n",
         'invalid value "true" in "xclient" directive, it must be "on" or "off" in F:6'),
        (MAIL + "      listen: 127.0.0.1:1110\n",
         'duplicate "127.0.0.1:1110" address and port pair in F:6'),
        (MAIL + "      listen:\n        - 1111\n        - 1110 ssl\n",
         'no "ssl_certificate" is defined for the "listen ... ssl" directive in F:8'),
        (MAIL + "      listen:\n        - 1111\n        - 1110 multipath\n",
         'the "multipath" parameter of the "listen" directive is not supported yet in F:8'),
        (MAIL + "      starttls: only\n",
         'no "ssl_certificate" is defined for the "starttls" directive in F:6'),
        ("mail: off\n", 'directive "mail" has no opening "{" in F:1'),
        ("pid: {a: b}\n", '"pid" directive invalid value in F:1'),
        ("mail:\n  servers: [1]\n", '"servers" must be a list of server mappings in F:2'),
        ("mail: {}\nmail: {}\n", '"mail" directive is duplicate in F:2'),
        ("daemon: on\ndaemon: off\n", '"daemon" directive is duplicate in F:2'),
        ("- a\n", "a YAML configuration must be a mapping of directives in F:1"),
        ("a: [b\n", "invalid YAML: expected ',' or ']', but got '<stream end>' in F:2"),
        ("a: b\n c: d\n", "invalid YAML: mapping values are not allowed here in F:2"),
        ("mail:\n  servers:\n    - protocol: pop3\n", 'no "listen" is defined for server in F:3'),
        ("mail:\n  servers:\n    - listen: 1110\n",
         "unknown mail protocol for server in F:3"),
        ("mail:\n  ssl_verify_client: optional_no_ca\n",
         '"ssl_verify_client" directive is not supported yet in F:2'),
        ("[a]: 1\n", "a directive name must be a plain string in F:1"),
    ],
)
def test_errors(tmp_path: Path, text: str, message: str) -> None:
    assert error(tmp_path, text) == message


def test_values(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", """\
        error_log: [stderr info, [/tmp/x.log, debug]]
        daemon: off
        mail:
          auth_http: 127.0.0.1:9000/auth
          auth_http_header: {X-Auth-Key: "secret string"}
          proxy_pass_error_message: on
          servers:
            - listen: 1110
              protocol: pop3
              pop3_capabilities: TOP USER
        """)
    config = load(path)
    assert config.main.daemon is False
    assert config.main.error_log == (LogTarget(kind="stderr", level="info"),
                                     LogTarget(kind="file", level="debug", path="/tmp/x.log"))
    (server,) = config.servers
    assert server.auth_http_header == (("X-Auth-Key", "secret string"),)
    assert server.proxy_pass_error_message is True
    assert server.pop3_capabilities == ("TOP", "USER")


def test_yml_suffix_is_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yml", "daemon: off\n")
    assert load(path).main.daemon is False
