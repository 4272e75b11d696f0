"""The nginx-syntax front-end: lexing, blocks, includes and syntax errors,
with nginx's messages and line numbers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mailgate.config import load_with_warnings, nginx
from mailgate.config.nodes import Directive
from mailgate.errors import ConfigError


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def parse(tmp_path: Path, text: str) -> tuple[Directive, ...]:
    return nginx.parse(write(tmp_path / "mailgate.conf", text))


def parse_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse(tmp_path, text)
    return str(err.value)


def args(nodes: tuple[Directive, ...]) -> list[tuple[str, ...]]:
    return [d.args for d in nodes]


# --- words, quotes, escapes, comments ----------------------------------------


def test_directives_and_blocks(tmp_path: Path) -> None:
    nodes = parse(tmp_path, """\
        worker_processes 2;
        mail {
            server { listen 110; }
        }
        """)
    f = str(tmp_path / "mailgate.conf")
    assert nodes == (
        Directive("worker_processes", ("2",), f, 1),
        Directive("mail", (), f, 2, (
            Directive("server", (), f, 3, (Directive("listen", ("110",), f, 3),)),
        )),
    )


def test_empty_block_is_not_none(tmp_path: Path) -> None:
    (mail,) = parse(tmp_path, "mail {}\n")
    assert mail.block == ()


def test_whitespace_variants(tmp_path: Path) -> None:
    (d,) = parse(tmp_path, "a\tb\r\n  c\n\n d ;")
    assert d.name == "a" and d.args == ("b", "c", "d")
    assert d.line == 4  # the line of the ";" ends it, as nginx counts


def test_no_space_needed_before_semicolon_or_brace(tmp_path: Path) -> None:
    nodes = parse(tmp_path, "a b;c{d e;}")
    assert [d.name for d in nodes] == ["a", "c"]
    assert nodes[1].block is not None and nodes[1].block[0].args == ("e",)


def test_double_and_single_quotes(tmp_path: Path) -> None:
    (d,) = parse(tmp_path, """x "a b" 'c d' "" '';\n""")
    assert d.args == ("a b", "c d", "", "")


def test_quotes_keep_special_characters(tmp_path: Path) -> None:
    (d,) = parse(tmp_path, """x "a;b{c}d#e" 'f"g';\n""")
    assert d.args == ("a;b{c}d#e", 'f"g')


def test_quoted_string_spans_lines(tmp_path: Path) -> None:
    (d,) = parse(tmp_path, 'x "a\nb";\n')
    assert d.args == ("a\nb",) and d.line == 2


def test_backslash_escapes(tmp_path: Path) -> None:
    (d,) = parse(tmp_path, r'''x "a\"b" 'c\'d' "e\\f" "\t\r\n" "\q" w\ord;''' + "\n")
    assert d.args == ('a"b', "c'd", "e\\f", "\t\r\n", "\\q", "w\\ord")


def test_escaped_terminators_do_not_end_an_unquoted_word(tmp_path: Path) -> None:
    (d,) = parse(tmp_path, r"x a\;b c\ d;" + "\n")
    # nginx skips the character after a backslash while scanning, and keeps
    # backslashes it does not decode.
    assert d.args == ("a\\;b", "c\\ d")


def test_comments(tmp_path: Path) -> None:
    nodes = parse(tmp_path, """\
        # leading comment
        a 1; # trailing
        b 2 # inside a directive
          3;
        c x#y;
        """)
    assert args(nodes) == [("1",), ("2", "3"), ("x#y",)]


def test_variable_braces_are_part_of_a_word(tmp_path: Path) -> None:
    (d,) = parse(tmp_path, "x ${name}a;\n")
    assert d.args == ("${name}a",)


def test_bytes_that_are_not_utf8_survive(tmp_path: Path) -> None:
    path = tmp_path / "x.conf"
    path.write_bytes(b"x \xff;\n")
    (d,) = nginx.parse(str(path))
    assert d.args[0].encode("utf-8", "surrogateescape") == b"\xff"


# --- syntax errors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("a 1;\n}\n", 'unexpected "}"', 2),
        ("a 1 }\n", 'unexpected "}"', 1),
        ("a 1", 'unexpected end of file, expecting ";" or "}"', 1),
        ("a 1\n\n", 'unexpected end of file, expecting ";" or "}"', 3),
        ('a "1;\n', 'unexpected end of file, expecting ";" or "}"', 2),
        ("mail {\n a 1;\n", 'unexpected end of file, expecting "}"', 3),
        (";\n", 'unexpected ";"', 1),
        ("a;\n\n{ }\n", 'unexpected "{"', 3),
        ('a "1"x;\n', 'unexpected "x"', 1),
        ("a '1'\"2\";\n", "unexpected \"\"\"", 1),
        ('a "1"};\n', 'unexpected "}"', 1),
    ],
)
def test_syntax_errors(tmp_path: Path, text: str, message: str, line: int) -> None:
    path = tmp_path / "mailgate.conf"
    assert parse_error(tmp_path, text) == f"{message} in {path}:{line}"


def test_quoted_word_may_be_followed_by_terminator(tmp_path: Path) -> None:
    nodes = parse(tmp_path, 'a "1"; b "2"{}\n')
    assert args(nodes) == [("1",), ("2",)]


def test_missing_main_file() -> None:
    with pytest.raises(ConfigError) as err:
        nginx.parse("/nonexistent/mailgate.conf")
    assert str(err.value) == (
        'open() "/nonexistent/mailgate.conf" failed (2: No such file or directory)')


# --- include ---------------------------------------------------------------------


def test_include_is_expanded_in_place(tmp_path: Path) -> None:
    write(tmp_path / "inc.conf", "b 2;\nc 3;\n")
    nodes = parse(tmp_path, "a 1;\ninclude inc.conf;\nd 4;\n")
    assert [d.name for d in nodes] == ["a", "b", "c", "d"]
    assert nodes[1].file == str(tmp_path / "inc.conf") and nodes[2].line == 2


def test_include_inside_a_block(tmp_path: Path) -> None:
    write(tmp_path / "servers/one.conf", "server { listen 1; }\n")
    (mail,) = parse(tmp_path, "mail {\n include servers/one.conf;\n}\n")
    assert mail.block is not None and mail.block[0].name == "server"


def test_include_glob_sorted_and_empty_glob_is_fine(tmp_path: Path) -> None:
    write(tmp_path / "conf.d/b.conf", "b 1;\n")
    write(tmp_path / "conf.d/a.conf", "a 1;\n")
    write(tmp_path / "conf.d/.hidden.conf", "hidden 1;\n")
    nodes = parse(tmp_path, "include conf.d/*.conf;\ninclude nothing/*.conf;\n")
    assert [d.name for d in nodes] == ["a", "b"]


def test_include_absolute_path(tmp_path: Path) -> None:
    inc = write(tmp_path / "elsewhere/x.conf", "x 1;\n")
    (d,) = parse(tmp_path, f"include {inc};\n")
    assert d.name == "x"


def test_nested_include_is_relative_to_the_main_file(tmp_path: Path) -> None:
    # nginx resolves every relative include against its conf prefix, the
    # directory of the main file, whatever file the include is in.
    write(tmp_path / "sub/first.conf", "include snippets/second.conf;\n")
    write(tmp_path / "snippets/second.conf", "second 1;\n")
    (d,) = parse(tmp_path, "include sub/first.conf;\n")
    assert d.name == "second" and d.file == str(tmp_path / "snippets/second.conf")


def test_missing_include(tmp_path: Path) -> None:
    message = parse_error(tmp_path, "a 1;\ninclude missing.conf;\n")
    assert message == (
        f'open() "{tmp_path}/missing.conf" failed (2: No such file or directory)'
        f" in {tmp_path}/mailgate.conf:2")


def test_error_inside_an_include_names_the_included_file(tmp_path: Path) -> None:
    write(tmp_path / "bad.conf", "ok 1;\nbad {\n")
    message = parse_error(tmp_path, "include bad.conf;\n")
    assert message == f'unexpected end of file, expecting "}}" in {tmp_path}/bad.conf:3'


def test_included_file_cannot_close_the_including_block(tmp_path: Path) -> None:
    write(tmp_path / "close.conf", "}\n")
    message = parse_error(tmp_path, "mail {\ninclude close.conf;\n}\n")
    assert message == f'unexpected "}}" in {tmp_path}/close.conf:1'


def test_include_argument_count(tmp_path: Path) -> None:
    message = parse_error(tmp_path, "include a b;\n")
    assert message == f'invalid number of arguments in "include" directive in {tmp_path}/mailgate.conf:1'


def test_include_loop_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "loop.conf", "include loop.conf;\n")
    assert "include nesting too deep" in parse_error(tmp_path, "include loop.conf;\n")


def test_includes_inside_foreign_blocks_are_not_read(tmp_path: Path) -> None:
    nodes = parse(tmp_path, "http {\n include mime.types;\n include sites/*;\n}\n")
    assert nodes[0].block is not None and nodes[0].block[0].name == "include"


# --- a real nginx.conf -------------------------------------------------------------

DEBIAN_NGINX_CONF = """\
user www-data;
worker_processes auto;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log;
include /nonexistent/modules-enabled/*.conf;
load_module modules/ngx_mail_module.so;
pcre_jit on;

events {
\tworker_connections 768;
\t# multi_accept on;
\tmulti_accept on;
\tuse epoll;
}

http {
\tsendfile on;
\ttypes_hash_max_size 2048;
\tinclude /etc/nginx/mime.types;
\tdefault_type application/octet-stream;
\tlog_format main '$remote_addr - $remote_user [$time_local] "$request"';
\tmap $http_upgrade $connection_upgrade { default upgrade; '' close; }
\tinclude /etc/nginx/conf.d/*.conf;
\tinclude /etc/nginx/sites-enabled/*;
\tserver {
\t\tlisten 80 default_server;
\t\tlocation ~ ^/(x|y) { return 404; }
\t}
}

stream {
\tserver { listen 12345; proxy_pass 127.0.0.1:1; }
}

mail {
\tserver_name mail.example.com;
\tauth_http localhost:9000/auth;
\tpop3_capabilities "TOP" "USER";
\tserver {
\t\tlisten 127.0.0.1:110;
\t}
}
"""


def test_a_full_nginx_conf_loads_with_warnings(tmp_path: Path) -> None:
    path = write(tmp_path / "nginx.conf", DEBIAN_NGINX_CONF)
    config, warnings = load_with_warnings(path)
    assert config.main.worker_connections == 768
    assert config.main.user == ("www-data", None)
    assert config.main.pid == "/run/nginx.pid"
    assert [s.protocol for s in config.servers] == ["pop3"]
    assert config.servers[0].pop3_capabilities == ("TOP", "USER")
    skipped = [w.split('"')[1] for w in warnings]
    assert skipped == ["load_module", "pcre_jit", "multi_accept", "use", "http", "stream"]
    assert warnings[-1] == (
        f'"stream" directive is ignored (not a mail directive) in {tmp_path}/nginx.conf:31')
