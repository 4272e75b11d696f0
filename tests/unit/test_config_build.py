"""Directive rules: contexts, arity, values, defaults, inheritance, and the
errors nginx gives for each, at the right file:line."""

from __future__ import annotations

import dataclasses
import os
import socket
import textwrap
from pathlib import Path

import pytest

from mailgate.config import DIRECTIVES, load, load_with_warnings
from mailgate.config.build import DEFAULT_ERROR_LOG
from mailgate.config.directives import SERVER, Merge
from mailgate.config.model import Config, LogTarget, Main, Server, Ssl
from mailgate.errors import ConfigError

AUTH = "auth_http 127.0.0.1:9000/auth;"


def conf(tmp_path: Path, text: str, name: str = "mailgate.conf") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def load_text(tmp_path: Path, text: str) -> Config:
    return load(conf(tmp_path, text))


def error(tmp_path: Path, text: str) -> str:
    """The error message, with the file name shortened to F."""
    path = conf(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path)
    return str(err.value).replace(path, "F")


def mail(server: str = "", level: str = "") -> str:
    """A mail block with one POP3 server."""
    return f"mail {{\n{AUTH}\n{level}\nserver {{\nlisten 127.0.0.1:1110;\nprotocol pop3;\n{server}\n}}\n}}\n"


def server_of(tmp_path: Path, server: str = "", level: str = "") -> Server:
    return load_text(tmp_path, mail(server, level)).servers[0]


# --- the table agrees with the model --------------------------------------------


def test_table_defaults_are_the_model_defaults() -> None:
    server_fields = {f.name: f.default for f in dataclasses.fields(Server)}
    main_fields = {f.name: f.default for f in dataclasses.fields(Main)}
    ssl_fields = {"ssl." + f.name: f.default for f in dataclasses.fields(Ssl)}
    ssl_fields["ssl.certificate_keys"] = ()  # paired with ssl.certificates
    for spec in DIRECTIVES.values():
        if spec.field is None or spec.field == "listens":
            continue
        if spec.name in ("server_name", "protocol"):
            continue  # computed at load: the host name; detected from the port
        if spec.field.startswith("ssl."):
            fields = ssl_fields
        else:
            fields = server_fields if SERVER in spec.contexts else main_fields
        assert spec.field in fields, spec.name
        assert spec.default == fields[spec.field], spec.name


def test_every_model_field_has_a_directive() -> None:
    fields = {spec.field for spec in DIRECTIVES.values()}
    for cls, prefix, skip in ((Server, "", {"source", "protocol", "ssl"}), (Main, "", set()),
                              (Ssl, "ssl.", set())):
        for f in dataclasses.fields(cls):
            assert prefix + f.name in fields | skip, f.name


def test_repeatable_directives() -> None:
    each = {name for name, spec in DIRECTIVES.items() if spec.merge is Merge.EACH}
    assert {"listen", "error_log", "auth_http_header", "set_real_ip_from", "env",
            "ssl_certificate", "ssl_certificate_key", "server"} <= each
    assert "resolver" not in each


def test_unsupported_directives_are_in_the_table() -> None:
    unsupported = {n for n, s in DIRECTIVES.items() if not s.supported}
    assert unsupported == set()
    assert DIRECTIVES["starttls"].supported_values == ()
    assert DIRECTIVES["proxy_protocol"].supported_values == ()
    assert DIRECTIVES["ssl_certificate_compression"].supported_values == ("off",)
    assert DIRECTIVES["ssl_verify_client"].supported_values == ("off", "on", "optional")


# --- defaults ----------------------------------------------------------------------


def test_proxy_protocol_and_realip_are_read(tmp_path: Path) -> None:
    server = load_text(tmp_path, mail("proxy_protocol v2; set_real_ip_from 10.0.0.0/8; set_real_ip_from unix:;")).servers[0]
    assert server.proxy_protocol == "v2" and server.set_real_ip_from == ("10.0.0.0/8", "unix:")


def test_resolver_is_read(tmp_path: Path) -> None:
    server = load_text(tmp_path, mail("resolver 127.0.0.1:5353 valid=30s; resolver_timeout 5s;")).servers[0]
    assert server.resolver == ("127.0.0.1:5353", "valid=30s") and server.resolver_timeout == 5.0


def test_main_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, mail())
    assert config.main == Main(error_log=(DEFAULT_ERROR_LOG,))
    assert config.main.pid == "/run/mailgate.pid" and config.main.worker_connections == 512
    assert config.main.daemon is True and config.main.worker_processes == 1


def test_server_defaults(tmp_path: Path) -> None:
    server = server_of(tmp_path)
    assert server.timeout == 60.0 and server.proxy_timeout == 86400.0
    assert server.server_name == socket.gethostname().lower()
    assert server.pop3_capabilities == ("TOP", "USER", "UIDL")
    assert server.smtp_auth == ("plain", "login") and server.xclient is True
    assert server.error_log == () and server.pop3_client_buffer == 4096


def test_empty_server_name_is_the_host_name(tmp_path: Path) -> None:
    assert server_of(tmp_path, 'server_name "";').server_name == socket.gethostname().lower()


def test_no_mail_block_means_no_servers(tmp_path: Path) -> None:
    config = load_text(tmp_path, "worker_processes 2;\n")
    assert config.servers == () and config.bindings == ()


# --- main context ----------------------------------------------------------------------


def test_main_directives(tmp_path: Path) -> None:
    config = load_text(tmp_path, """\
        worker_processes 4;
        error_log logs/error.log warn;
        error_log stderr;
        pid run/mg.pid;
        user mail nogroup;
        worker_rlimit_nofile 4096;
        worker_shutdown_timeout 10s;
        daemon off;
        env TZ;
        env LANG=C;
        events { worker_connections 100; }
        """)
    main = config.main
    assert main.worker_processes == 4 and main.user == ("mail", "nogroup")
    assert main.error_log == (
        LogTarget(kind="file", level="warn", path=str(tmp_path / "logs/error.log")),
        LogTarget(kind="stderr"),
    )
    assert main.pid == str(tmp_path / "run/mg.pid")
    assert main.worker_rlimit_nofile == 4096 and main.worker_shutdown_timeout == 10.0
    assert main.daemon is False and main.env == ("TZ", "LANG=C")
    assert main.worker_connections == 100


def test_worker_processes_auto(tmp_path: Path) -> None:
    config = load_text(tmp_path, "worker_processes auto;\n")
    assert config.main.worker_processes == (os.cpu_count() or 1)


def test_absolute_paths_stay(tmp_path: Path) -> None:
    assert load_text(tmp_path, "pid /x/y.pid;\n").main.pid == "/x/y.pid"


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    path = conf(sub, "pid ../run/x.pid;\nerror_log x.log;\n"
                "mail { server { listen 1110; protocol pop3; auth_file users.yaml; } }\n")
    config = load(os.path.relpath(path))
    assert config.path == path
    assert config.main.pid == str(tmp_path / "run/x.pid")
    assert config.main.error_log[0].path == str(sub / "x.log")
    assert config.servers[0].auth_file == str(sub / "users.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("worker_processes x;", '"worker_processes" directive invalid value in F:1'),
        ("worker_processes 1;\nworker_processes 2;", '"worker_processes" directive is duplicate in F:2'),
        ("daemon yes;", 'invalid value "yes" in "daemon" directive, it must be "on" or "off" in F:1'),
        ("worker_rlimit_nofile x;", '"worker_rlimit_nofile" directive invalid number in F:1'),
        ("events { worker_connections x; }", 'invalid number "x" in F:1'),
        ("events { }\nevents { }", '"events" directive is duplicate in F:2'),
        ("worker_connections 5;", '"worker_connections" directive is not allowed here in F:1'),
        ("user a b c;", 'invalid number of arguments in "user" directive in F:1'),
        ("pid;", 'invalid number of arguments in "pid" directive in F:1'),
        ("worker_shutdown_timeout 1x;", '"worker_shutdown_timeout" directive invalid value in F:1'),
        ("mail {}\nmail {}", '"mail" directive is duplicate in F:2'),
        ("mail;", 'directive "mail" has no opening "{" in F:1'),
        ("mail x {}", 'invalid number of arguments in "mail" directive in F:1'),
        ("pid x {}", 'directive "pid" is not terminated by ";" in F:1'),
        ("include x {}", 'directive "include" is not terminated by ";" in F:1'),
        ("bogus 1;", 'unknown directive "bogus" in F:1'),
        ("timeout 5s;", '"timeout" directive is not allowed here in F:1'),
        ("mail { http {} }", '"http" directive is not allowed here in F:1'),
        ("mail { use epoll; }", '"use" directive is not allowed here in F:1'),
        ("server { }", '"server" directive is not allowed here in F:1'),
    ],
)
def test_main_errors(tmp_path: Path, text: str, message: str) -> None:
    assert error(tmp_path, text + "\n") == message


# --- error_log --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "target"),
    [
        ("stderr", LogTarget(kind="stderr")),
        ("stderr debug", LogTarget(kind="stderr", level="debug")),
        ("stderr debug_mail", LogTarget(kind="stderr", level="debug")),
        ("stderr debug_mail debug_core", LogTarget(kind="stderr", level="debug")),
        ("/var/log/x.log emerg", LogTarget(kind="file", level="emerg", path="/var/log/x.log")),
        ("syslog:server=unix:/dev/log",
         LogTarget(kind="syslog", server="unix:/dev/log")),
        ("syslog:server=127.0.0.1,facility=mail,severity=notice,tag=mg_1,nohostname info",
         LogTarget(kind="syslog", level="info", server="127.0.0.1:514", facility="mail",
                   severity="notice", tag="mg_1", nohostname=True)),
        ("syslog:server=[::1]:5140", LogTarget(kind="syslog", server="[::1]:5140")),
    ],
)
def test_error_log_forms(tmp_path: Path, arg: str, target: LogTarget) -> None:
    assert load_text(tmp_path, f"error_log {arg};\n").main.error_log == (target,)


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("stderr loud", 'invalid log level "loud"'),
        ("stderr info warn", 'duplicate log level "warn"'),
        ("stderr debug_mail info", 'duplicate log level "info"'),
        ("stderr info debug_mail", 'invalid log level "debug_mail"'),
        ("syslog:facility=mail", "no syslog server specified"),
        ("syslog:", "no syslog server specified"),
        ("syslog:server=127.0.0.1,facility=nope", 'unknown syslog facility "nope"'),
        ("syslog:server=127.0.0.1,severity=nope", 'unknown syslog severity "nope"'),
        ("syslog:server=127.0.0.1,tag=a-b", 'syslog "tag" only allows alphanumeric characters and underscore'),
        ("syslog:server=127.0.0.1,tag=" + "a" * 33, "syslog tag length exceeds 32"),
        ("syslog:server=127.0.0.1,bogus", 'unknown syslog parameter "bogus"'),
        ("syslog:server=127.0.0.1,server=127.0.0.2", 'duplicate syslog "server"'),
        ("syslog:server=127.0.0.1:x", 'invalid port in syslog server "127.0.0.1:x"'),
    ],
)
def test_error_log_errors(tmp_path: Path, arg: str, message: str) -> None:
    assert error(tmp_path, f"\nerror_log {arg};\n") == f"{message} in F:2"


def test_server_error_log_inherits_from_mail(tmp_path: Path) -> None:
    config = load_text(tmp_path, f"""\
        mail {{
            {AUTH}
            error_log stderr info;
            server {{ listen 1110; protocol pop3; }}
            server {{ listen 1111; protocol pop3; error_log a.log; error_log stderr debug; }}
        }}
        """)
    first, second = config.servers
    assert first.error_log == (LogTarget(kind="stderr", level="info"),)
    assert second.error_log == (
        LogTarget(kind="file", path=str(tmp_path / "a.log")),
        LogTarget(kind="stderr", level="debug"),
    )
    assert config.main.error_log == (DEFAULT_ERROR_LOG,)


# --- mail and server directives ---------------------------------------------------------------


def test_server_values(tmp_path: Path) -> None:
    server = server_of(tmp_path, """
        timeout 5m; server_name Mail.Example.COM; max_errors 3;
        auth_http_timeout 500ms; auth_http_pass_client_cert on;
        proxy on; proxy_buffer 16k; proxy_pass_error_message on; proxy_protocol off;
        proxy_smtp_auth on; proxy_timeout 1h; xclient off; starttls off; resolver off;
        pop3_auth plain APOP cram-md5 external; pop3_client_buffer 8k;
        imap_auth login; imap_capabilities IMAP4rev1; imap_client_buffer 1m;
        smtp_auth none; smtp_capabilities "SIZE 10485760" 8BITMIME; smtp_client_buffer 2k;
        smtp_greeting_delay 2s;
    """)
    assert server.timeout == 300.0 and server.server_name == "Mail.Example.COM"
    assert server.max_errors == 3 and server.auth_http_timeout == 0.5
    assert server.auth_http_pass_client_cert and server.proxy and server.proxy_smtp_auth
    assert server.proxy_buffer == 16384 and server.proxy_pass_error_message
    assert server.proxy_protocol == "off" and server.proxy_timeout == 3600.0
    assert server.xclient is False and server.starttls == "off" and server.resolver == ()
    assert server.pop3_auth == ("plain", "apop", "cram-md5", "external")
    assert server.pop3_client_buffer == 8192 and server.imap_client_buffer == 1 << 20
    assert server.imap_auth == ("login",) and server.imap_capabilities == ("IMAP4rev1",)
    assert server.smtp_auth == ("none",)
    assert server.smtp_capabilities == ("SIZE 10485760", "8BITMIME")
    assert server.smtp_client_buffer == 2048 and server.smtp_greeting_delay == 2.0


def test_server_overrides_mail(tmp_path: Path) -> None:
    config = load_text(tmp_path, f"""\
        mail {{
            {AUTH}
            timeout 10s;
            proxy_pass_error_message on;
            server {{ listen 1110; protocol pop3; timeout 20s; }}
            server {{ listen 1111; protocol pop3; }}
        }}
        """)
    first, second = config.servers
    assert (first.timeout, second.timeout) == (20.0, 10.0)
    assert first.proxy_pass_error_message and second.proxy_pass_error_message


def test_capabilities_append_on_a_level_and_replace_across(tmp_path: Path) -> None:
    config = load_text(tmp_path, f"""\
        mail {{
            {AUTH}
            pop3_capabilities TOP;
            pop3_capabilities USER "SASL PLAIN";
            server {{ listen 1110; protocol pop3; }}
            server {{ listen 1111; protocol pop3; pop3_capabilities UIDL; pop3_capabilities X; }}
        }}
        """)
    first, second = config.servers
    assert first.pop3_capabilities == ("TOP", "USER", "SASL PLAIN")
    assert second.pop3_capabilities == ("UIDL", "X")


def test_auth_methods_add_up_and_repeats_warn(tmp_path: Path) -> None:
    path = conf(tmp_path, mail("pop3_auth apop;\npop3_auth plain APOP;"))
    config, warnings = load_with_warnings(path)
    assert config.servers[0].pop3_auth == ("apop", "plain")
    assert warnings == [f'duplicate value "APOP" in {path}:8']


def test_auth_http_header_replaces_the_inherited_list(tmp_path: Path) -> None:
    config = load_text(tmp_path, f"""\
        mail {{
            {AUTH}
            auth_http_header X-A 1;
            auth_http_header X-B "two words";
            server {{ listen 1110; protocol pop3; }}
            server {{ listen 1111; protocol pop3; auth_http_header X-C 3; }}
        }}
        """)
    first, second = config.servers
    assert first.auth_http_header == (("X-A", "1"), ("X-B", "two words"))
    assert second.auth_http_header == (("X-C", "3"),)


def test_auth_file_and_auth_http_replace_each_other(tmp_path: Path) -> None:
    config = load_text(tmp_path, f"""\
        mail {{
            {AUTH}
            server {{ listen 1110; protocol pop3; auth_file users.yaml; }}
            server {{ listen 1111; protocol pop3; }}
        }}
        """)
    first, second = config.servers
    assert first.auth_http is None and first.auth_file == str(tmp_path / "users.yaml")
    assert second.auth_http is not None and second.auth_file is None


def test_auth_http_last_one_wins(tmp_path: Path) -> None:
    server = server_of(tmp_path, "auth_http 127.0.0.2:80;")
    assert server.auth_http is not None and server.auth_http.host == "127.0.0.2"


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("timeout 5s;\ntimeout 6s;", '"timeout" directive is duplicate in F:8'),
        ("timeout x;", '"timeout" directive invalid value in F:7'),
        ("proxy_buffer 4x;", '"proxy_buffer" directive invalid value in F:7'),
        ("max_errors -1;", '"max_errors" directive invalid number in F:7'),
        ("xclient yes;", 'invalid value "yes" in "xclient" directive, it must be "on" or "off" in F:7'),
        ("proxy_protocol v3;", 'invalid value "v3" in F:7'),
        ("starttls maybe;", 'invalid value "maybe" in F:7'),
        ("pop3_auth login;", 'invalid value "login" in F:7'),
        ("smtp_auth plain bogus;", 'invalid value "bogus" in F:7'),
        ("timeout;", 'invalid number of arguments in "timeout" directive in F:7'),
        ("timeout 1 2;", 'invalid number of arguments in "timeout" directive in F:7'),
        ("pop3_capabilities;", 'invalid number of arguments in "pop3_capabilities" directive in F:7'),
        ("auth_http_header X-A;", 'invalid number of arguments in "auth_http_header" directive in F:7'),
        ("resolver;", 'invalid number of arguments in "resolver" directive in F:7'),
        ("resolver off;\nresolver off;", '"resolver" directive is duplicate in F:8'),
        ("server_name a;\nserver_name b;", '"server_name" directive is duplicate in F:8'),
        ("bogus;", 'unknown directive "bogus" in F:7'),
        ("server { }", '"server" directive is not allowed here in F:7'),
        ("worker_processes 1;", '"worker_processes" directive is not allowed here in F:7'),
        ("protocol ftp;", 'unknown protocol "ftp" in F:7'),
    ],
)
def test_server_errors(tmp_path: Path, server: str, message: str) -> None:
    assert error(tmp_path, mail(server)) == message


def test_auth_file_and_auth_http_on_one_level(tmp_path: Path) -> None:
    assert error(tmp_path, mail(level="auth_file u.yaml;")) == (
        '"auth_file" directive is not allowed together with "auth_http" in F:3')
    assert error(tmp_path, mail("auth_file u.yaml;\nauth_http 127.0.0.1;")) == (
        '"auth_http" directive is not allowed together with "auth_file" in F:8')


def test_mail_level_errors(tmp_path: Path) -> None:
    assert error(tmp_path, mail(level="listen 1110;")) == (
        '"listen" directive is not allowed here in F:3')
    assert error(tmp_path, mail(level="protocol pop3;")) == (
        '"protocol" directive is not allowed here in F:3')


# --- protocol ----------------------------------------------------------------------------


@pytest.mark.parametrize(("port", "protocol"), [(110, "pop3"), (995, "pop3"), (143, "imap"), (993, "imap"),
                                              (25, "smtp"), (465, "smtp"), (587, "smtp")])
def test_protocol_detected_from_the_port(tmp_path: Path, port: int, protocol: str) -> None:
    text = f"mail {{ {AUTH} server {{ listen 127.0.0.1:{port}; }} }}\n"
    assert load_text(tmp_path, text).servers[0].protocol == protocol


def test_only_the_first_listen_detects(tmp_path: Path) -> None:
    # 1110 detects nothing, 110 then picks pop3; once set, 143 changes nothing.
    text = f"mail {{ {AUTH} server {{ listen 1110; listen 110; listen 143; }} }}\n"
    assert load_text(tmp_path, text).servers[0].protocol == "pop3"


def test_explicit_protocol_before_listen_prevents_detection(tmp_path: Path) -> None:
    text = f"mail {{\n{AUTH}\nserver {{\nprotocol pop3;\nlisten 143;\n}}\n}}\n"
    assert load_text(tmp_path, text).servers[0].protocol == "pop3"


def test_explicit_protocol_after_listen_overrides_detection(tmp_path: Path) -> None:
    text = f"mail {{\n{AUTH}\nserver {{\nlisten 143;\nprotocol pop3;\n}}\n}}\n"
    assert load_text(tmp_path, text).servers[0].protocol == "pop3"


def test_unsupported_protocol_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A protocol the table marks unsupported is refused at the server's line,
    whether named or detected from the port."""
    from mailgate.config import directives

    monkeypatch.setitem(directives.PROTOCOLS, "smtp", directives.Protocol("smtp", (25, 465, 587), supported=False))
    text = f"mail {{\n{AUTH}\nserver {{\nlisten 1025;\nprotocol smtp;\n}}\n}}\n"
    assert error(tmp_path, text) == '"smtp" protocol is not supported yet in F:3'
    text = f"mail {{\n{AUTH}\nserver {{\nlisten 127.0.0.1:587;\n}}\n}}\n"
    assert error(tmp_path, text) == '"smtp" protocol is not supported yet in F:3'


def test_unknown_mail_protocol(tmp_path: Path) -> None:
    text = f"mail {{\n{AUTH}\nserver {{\nlisten 1110;\n}}\n}}\n"
    assert error(tmp_path, text) == "unknown mail protocol for server in F:3"


def test_no_listen(tmp_path: Path) -> None:
    text = f"mail {{\n{AUTH}\nserver {{\nprotocol pop3;\n}}\n}}\n"
    assert error(tmp_path, text) == 'no "listen" is defined for server in F:3'


def test_no_auth(tmp_path: Path) -> None:
    text = "mail {\nserver {\nlisten 1110;\nprotocol pop3;\n}\n}\n"
    assert error(tmp_path, text) == 'no "auth_http" or "auth_file" is defined for server in F:2'


def test_checks_run_in_nginx_order(tmp_path: Path) -> None:
    # The listen check comes right after each server block; the protocol
    # check only after the whole mail block.
    text = "mail {\nserver {\nlisten 1110;\n}\nserver {\nprotocol pop3;\n}\n}\n"
    assert error(tmp_path, text) == 'no "listen" is defined for server in F:5'


# --- not supported yet --------------------------------------------------------------------


@pytest.mark.parametrize(
    "directive",
    [
        "ssl_certificate_compression on", "ssl_verify_client optional_no_ca",
        "ssl_verify_client OPTIONAL_NO_CA",
    ],
)
def test_not_supported_yet(tmp_path: Path, directive: str) -> None:
    name = directive.split()[0]
    assert error(tmp_path, mail(level=directive + ";")) == (
        f'"{name}" directive is not supported yet in F:3')


def test_unsupported_directive_values_are_still_validated(tmp_path: Path) -> None:
    assert error(tmp_path, mail(level="ssl_verify_client maybe;")) == 'invalid value "maybe" in F:3'
    assert error(tmp_path, mail(level="ssl_session_timeout 5ms;")) == (
        '"ssl_session_timeout" directive invalid value in F:3')


def test_the_removed_ssl_directive_is_unknown(tmp_path: Path) -> None:
    assert error(tmp_path, mail(level="ssl on;")) == 'unknown directive "ssl" in F:3'
