"""ngx_mail_ssl_module directives in the model: values, defaults, pairing of
certificates with keys, inheritance, and nginx's checks (with its words)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mailgate.config import load, load_with_warnings
from mailgate.config.model import Server, Ssl
from mailgate.errors import ConfigError

AUTH = "auth_http 127.0.0.1:9000/auth;"


def write(tmp_path: Path, text: str, name: str = "mailgate.conf") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def mail(server: str = "", level: str = "", listen: str = "listen 127.0.0.1:1993;") -> str:
    """A mail block with one IMAP server: line 1 mail, 2 auth, 3 level,
    4 server, 5 listen, 6 protocol, 7 the server's own lines."""
    return f"mail {{\n{AUTH}\n{level}\nserver {{\n{listen}\nprotocol imap;\n{server}\n}}\n}}\n"


def server_of(tmp_path: Path, server: str = "", level: str = "",
              listen: str = "listen 127.0.0.1:1993;") -> Server:
    return load(write(tmp_path, mail(server, level, listen))).servers[0]


def error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path)
    return str(err.value).replace(path, "F")


CERTS = "ssl_certificate a.crt; ssl_certificate_key a.key;"


# --- values and defaults ---------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    server = server_of(tmp_path)
    assert server.ssl == Ssl()
    assert server.ssl.protocols == ("TLSv1.2", "TLSv1.3")
    assert server.ssl.ciphers == "HIGH:!aNULL:!MD5"
    assert server.ssl.ecdh_curve == "auto" and server.ssl.session_cache == ("none",)
    assert server.ssl.session_tickets is True and server.ssl.session_timeout == 300
    assert server.ssl.verify_client == "off" and server.ssl.verify_depth == 1
    assert server.starttls == "off" and not server.uses_tls


def test_every_value_is_read(tmp_path: Path) -> None:
    (tmp_path / "k1").write_bytes(b"x" * 48)
    server = server_of(tmp_path, server="""
        ssl_certificate a.crt; ssl_certificate_key a.key;
        ssl_password_file pass.txt;
        ssl_protocols TLSv1.3; ssl_protocols TLSv1.2;
        ssl_ciphers ECDHE+AESGCM; ssl_prefer_server_ciphers on;
        ssl_dhparam dh.pem; ssl_ecdh_curve X25519;
        ssl_session_cache builtin:1000 shared:MAIL:10m; ssl_session_tickets off;
        ssl_session_ticket_key k1; ssl_session_timeout 10m;
        ssl_verify_client optional; ssl_verify_depth 3;
        ssl_client_certificate ca.pem; ssl_trusted_certificate /etc/t.pem; ssl_crl crl.pem;
        ssl_conf_command Options -SessionTicket,PrioritizeChaCha;
        ssl_conf_command MinProtocol TLSv1.2;
        ssl_certificate_compression off;
        starttls only;
    """)
    d = str(tmp_path)
    assert server.ssl == Ssl(
        certificates=((f"{d}/a.crt", f"{d}/a.key"),), password_file=f"{d}/pass.txt",
        protocols=("TLSv1.3", "TLSv1.2"), ciphers="ECDHE+AESGCM", prefer_server_ciphers=True,
        dhparam=f"{d}/dh.pem", ecdh_curve="X25519",
        session_cache=("builtin:1000", "shared:MAIL:10m"), session_tickets=False,
        session_ticket_keys=(f"{d}/k1",), session_timeout=600,
        verify_client="optional", verify_depth=3, client_certificate=f"{d}/ca.pem",
        trusted_certificate="/etc/t.pem", crl=f"{d}/crl.pem",
        conf_commands=(("Options", "-SessionTicket,PrioritizeChaCha"),
                       ("MinProtocol", "TLSv1.2")),
        certificate_compression=False)
    assert server.starttls == "only" and server.uses_tls


def test_certificates_pair_in_order(tmp_path: Path) -> None:
    server = server_of(tmp_path, server="""
        ssl_certificate rsa.crt; ssl_certificate ec.crt;
        ssl_certificate_key rsa.key; ssl_certificate_key ec.key;
    """)
    d = str(tmp_path)
    assert server.ssl.certificates == ((f"{d}/rsa.crt", f"{d}/rsa.key"),
                                       (f"{d}/ec.crt", f"{d}/ec.key"))


def test_more_keys_than_certificates_is_accepted(tmp_path: Path) -> None:
    # nginx only checks that every certificate has a key.
    server = server_of(tmp_path, server=CERTS + "ssl_certificate_key extra.key;",
                       listen="listen 127.0.0.1:1993 ssl;")
    assert len(server.ssl.certificates) == 1


def test_data_values_are_kept_as_written(tmp_path: Path) -> None:
    server = server_of(tmp_path, server="""
        ssl_certificate "data:-----BEGIN CERTIFICATE-----\\nAA\\n-----END CERTIFICATE-----\\n";
        ssl_certificate_key "data:KEY";
        ssl_client_certificate "data:CA"; ssl_crl "data:CRL";
    """)
    assert server.ssl.certificates == (
        ("data:-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n", "data:KEY"),)
    assert server.ssl.client_certificate == "data:CA" and server.ssl.crl == "data:CRL"


def test_listen_ssl(tmp_path: Path) -> None:
    server = server_of(tmp_path, server=CERTS, listen="listen 127.0.0.1:1993 ssl;")
    assert server.listens[0].ssl and server.uses_tls


@pytest.mark.parametrize("value", ["on", "only", "ON"])
def test_starttls_values(tmp_path: Path, value: str) -> None:
    assert server_of(tmp_path, server=CERTS + f"starttls {value};").starttls == value.lower()


def test_server_inherits_and_overrides(tmp_path: Path) -> None:
    text = f"""mail {{
        {AUTH}
        ssl_certificate m.crt; ssl_certificate_key m.key;
        ssl_protocols TLSv1.3; ssl_ciphers HIGH; ssl_verify_client on;
        ssl_client_certificate ca.pem; starttls on;
        ssl_conf_command Options -SessionTicket;
        server {{ listen 127.0.0.1:1993; protocol imap; }}
        server {{ listen 127.0.0.1:1994; protocol imap;
                 ssl_certificate s.crt; ssl_protocols TLSv1.2; ssl_verify_client off;
                 ssl_conf_command NumTickets 0; starttls off; }}
    }}"""
    first, second = load(write(tmp_path, text)).servers
    d = str(tmp_path)
    assert first.ssl.certificates == ((f"{d}/m.crt", f"{d}/m.key"),)
    assert first.ssl.protocols == ("TLSv1.3",) and first.ssl.verify_client == "on"
    assert first.starttls == "on"
    # Each directive merges on its own, as in nginx: the server's
    # certificate pairs with the inherited key.
    assert second.ssl.certificates == ((f"{d}/s.crt", f"{d}/m.key"),)
    assert second.ssl.protocols == ("TLSv1.2",) and second.ssl.ciphers == "HIGH"
    assert second.ssl.verify_client == "off" and second.starttls == "off"
    assert second.ssl.conf_commands == (("NumTickets", "0"),)


def test_ticket_key_is_accepted_with_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, mail(server="ssl_session_ticket_key k1; ssl_session_ticket_key k2;"))
    config, warnings = load_with_warnings(path)
    assert config.servers[0].ssl.session_ticket_keys == (f"{tmp_path}/k1", f"{tmp_path}/k2")
    assert warnings == [
        f'"ssl_session_ticket_key" is ignored: session tickets use per-process keys in {path}:7',
    ] * 2


@pytest.mark.parametrize("value", ["off", "none", "builtin", "builtin:100", "shared:SSL:32k",
                                   "shared:x:1m", "builtin shared:A:1m"])
def test_session_cache_forms(tmp_path: Path, value: str) -> None:
    assert server_of(tmp_path, server=f"ssl_session_cache {value};").ssl.session_cache == \
        tuple(value.split())


# --- nginx's errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("ssl_session_cache shared:SSL:1k;", 'session cache "shared:SSL:1k" is too small in F:7'),
        ("ssl_session_cache shared:SSL;", 'invalid session cache "shared:SSL" in F:7'),
        ("ssl_session_cache shared::1m;", 'invalid session cache "shared::1m" in F:7'),
        ("ssl_session_cache shared:a:x;", 'invalid session cache "shared:a:x" in F:7'),
        ("ssl_session_cache builtin:x;", 'invalid session cache "builtin:x" in F:7'),
        ("ssl_session_cache builtin:;", 'invalid session cache "builtin:" in F:7'),
        ("ssl_session_cache Off;", 'invalid session cache "Off" in F:7'),
        ("ssl_session_cache on;", 'invalid session cache "on" in F:7'),
        ("ssl_session_cache a b c;", 'invalid number of arguments in "ssl_session_cache" '
                                     "directive in F:7"),
        ("ssl_protocols TLSv1.4;", 'invalid value "TLSv1.4" in F:7'),
        ("ssl_verify_client maybe;", 'invalid value "maybe" in F:7'),
        ("ssl_verify_depth x;", '"ssl_verify_depth" directive invalid number in F:7'),
        ("ssl_session_timeout 5ms;", '"ssl_session_timeout" directive invalid value in F:7'),
        ("ssl_prefer_server_ciphers yes;", 'invalid value "yes" in "ssl_prefer_server_ciphers" '
                                           'directive, it must be "on" or "off" in F:7'),
        ("ssl_ciphers A; ssl_ciphers B;", '"ssl_ciphers" directive is duplicate in F:7'),
        ("ssl_password_file a; ssl_password_file b;",
         '"ssl_password_file" directive is duplicate in F:7'),
        ("ssl_conf_command Options;",
         'invalid number of arguments in "ssl_conf_command" directive in F:7'),
        ("starttls maybe;", 'invalid value "maybe" in F:7'),
    ],
)
def test_value_errors(tmp_path: Path, server: str, message: str) -> None:
    assert error(tmp_path, mail(server=server)) == message


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("ssl_certificate_compression on;",
         '"ssl_certificate_compression" directive is not supported yet in F:7'),
        ("ssl_verify_client optional_no_ca;",
         '"ssl_verify_client" directive is not supported yet in F:7'),
        ("ssl_certificate_key engine:pkcs11:key;",
         '"engine:" keys are not supported in "ssl_certificate_key" directive in F:7'),
        ("ssl_certificate_key store:file:/k;",
         '"store:" keys are not supported in "ssl_certificate_key" directive in F:7'),
        ("ssl_ecdh_curve X25519:prime256v1;",
         'a list of curves in "ssl_ecdh_curve" directive is not supported: '
         '"X25519:prime256v1" in F:7'),
        ("ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;",
         'the "Ciphersuites" command of the "ssl_conf_command" directive is not supported '
         "in F:7"),
        ("ssl_conf_command Bogus x;",
         'the "Bogus" command of the "ssl_conf_command" directive is not supported in F:7'),
        ("ssl_conf_command Options NoSuchOption;",
         'invalid option "NoSuchOption" in "ssl_conf_command Options" in F:7'),
        ("ssl_conf_command Protocol -TLSv9;",
         'invalid protocol "-TLSv9" in "ssl_conf_command Protocol" in F:7'),
        ("ssl_conf_command MinProtocol tlsv1.2;",
         'invalid value "tlsv1.2" in "ssl_conf_command MinProtocol" in F:7'),
        ("ssl_conf_command NumTickets many;",
         'invalid value "many" in "ssl_conf_command NumTickets" in F:7'),
        ("ssl_conf_command Groups X25519:P-256;",
         'a list of curves in "ssl_conf_command Groups" is not supported: "X25519:P-256" in F:7'),
    ],
)
def test_refused_values(tmp_path: Path, server: str, message: str) -> None:
    assert error(tmp_path, mail(server=server)) == message


@pytest.mark.parametrize(
    "command",
    ["Options ServerPreference", "options -sessionticket, +PrioritizeChaCha",
     "Protocol -ALL,TLSv1.3", "CipherString HIGH", "MinProtocol None", "MaxProtocol TLSv1.3",
     "Groups X25519", "Curves prime256v1", "ECDHParameters auto", "NumTickets 4",
     "DHParameters dh.pem"],
)
def test_conf_commands_mailgate_applies(tmp_path: Path, command: str) -> None:
    name, value = command.split(" ", 1)
    server = server_of(tmp_path, server=f'ssl_conf_command {name} "{value}";')
    expected = f"{tmp_path}/dh.pem" if name == "DHParameters" else value
    assert server.ssl.conf_commands == ((name, expected),)


def test_listen_ssl_without_certificate(tmp_path: Path) -> None:
    assert error(tmp_path, mail(listen="listen 127.0.0.1:1993 ssl;")) == (
        'no "ssl_certificate" is defined for the "listen ... ssl" directive in F:5')


def test_listen_ssl_without_key(tmp_path: Path) -> None:
    assert error(tmp_path, mail(server="ssl_certificate a.crt;",
                                listen="listen 127.0.0.1:1993 ssl;")) == (
        'no "ssl_certificate_key" is defined for the "listen ... ssl" directive in F:5')


def test_certificate_without_its_key(tmp_path: Path) -> None:
    text = mail(server=CERTS + "ssl_certificate b.crt;", listen="listen 127.0.0.1:1993 ssl;")
    assert error(tmp_path, text) == (
        f'no "ssl_certificate_key" is defined for certificate "{tmp_path}/b.crt" and the '
        '"listen ... ssl" directive in F:5')


def test_data_certificate_is_not_printed(tmp_path: Path) -> None:
    text = mail(server=CERTS + 'ssl_certificate "data:SECRET";',
                listen="listen 127.0.0.1:1993 ssl;")
    assert error(tmp_path, text) == (
        'no "ssl_certificate_key" is defined for certificate "data:..." and the '
        '"listen ... ssl" directive in F:5')


def test_the_last_ssl_listen_is_named(tmp_path: Path) -> None:
    text = (f"mail {{\n{AUTH}\nserver {{\nprotocol imap;\nlisten 127.0.0.1:1993 ssl;\n"
            "listen 127.0.0.1:1143;\nlisten 127.0.0.1:1994 ssl;\nstarttls on;\n}\n}\n")
    assert error(tmp_path, text) == (
        'no "ssl_certificate" is defined for the "listen ... ssl" directive in F:7')


def test_starttls_without_certificate(tmp_path: Path) -> None:
    assert error(tmp_path, mail(server="starttls on;")) == (
        'no "ssl_certificate" is defined for the "starttls" directive in F:7')


def test_inherited_starttls_names_the_mail_level(tmp_path: Path) -> None:
    assert error(tmp_path, mail(level="starttls only;")) == (
        'no "ssl_certificate" is defined for the "starttls" directive in F:3')


def test_starttls_key_missing(tmp_path: Path) -> None:
    assert error(tmp_path, mail(server="starttls on;", level="ssl_certificate a.crt;")) == (
        'no "ssl_certificate_key" is defined for the "starttls" directive in F:7')


def test_servers_without_tls_are_not_checked(tmp_path: Path) -> None:
    server = server_of(tmp_path, server="starttls off; ssl_verify_client on;",
                       level="starttls on;")
    assert not server.uses_tls and server.ssl.verify_client == "on"


def test_verify_client_needs_a_ca(tmp_path: Path) -> None:
    text = mail(server=CERTS + "starttls on;", level="ssl_verify_client on;")
    assert error(tmp_path, text) == (
        "no ssl_client_certificate or ssl_trusted_certificate for ssl_verify_client in F:3")
    text = mail(server=CERTS + "starttls on; ssl_verify_client optional;")
    assert error(tmp_path, text) == (
        "no ssl_client_certificate or ssl_trusted_certificate for ssl_verify_client in F:7")


@pytest.mark.parametrize("ca", ["ssl_client_certificate ca.pem;", "ssl_trusted_certificate t.pem;"])
def test_either_ca_directive_will_do(tmp_path: Path, ca: str) -> None:
    server = server_of(tmp_path, server=CERTS + "starttls on; ssl_verify_client on;" + ca)
    assert server.ssl.verify_client == "on"


def test_tls_checks_come_before_the_auth_check(tmp_path: Path) -> None:
    # nginx merges the ssl module before auth_http.
    text = "mail {\nserver {\nlisten 127.0.0.1:1993 ssl;\nprotocol imap;\n}\n}\n"
    assert error(tmp_path, text) == (
        'no "ssl_certificate" is defined for the "listen ... ssl" directive in F:3')


# --- YAML --------------------------------------------------------------------------------


def test_yaml_spelling(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        mail:
          auth_http: 127.0.0.1:9000/auth
          ssl_protocols: TLSv1.2 TLSv1.3
          ssl_conf_command: {Options: "-SessionTicket", NumTickets: "0"}
          servers:
            - listen: 127.0.0.1:1993 ssl
              protocol: imap
              ssl_certificate: [rsa.crt, ec.crt]
              ssl_certificate_key: [rsa.key, ec.key]
              ssl_verify_client: "on"
              ssl_client_certificate: ca.pem
              ssl_session_cache: shared:MAIL:10m
            - listen: 127.0.0.1:1143
              protocol: imap
              starttls: only
              ssl_certificate: [["data:-----BEGIN CERTIFICATE-----\\nAA\\n-----END CERTIFICATE-----\\n"]]
              ssl_certificate_key: [["data:KEY"]]
        """, "mailgate.yaml")
    first, second = load(path).servers
    d = str(tmp_path)
    assert first.ssl.certificates == ((f"{d}/rsa.crt", f"{d}/rsa.key"),
                                      (f"{d}/ec.crt", f"{d}/ec.key"))
    assert first.ssl.verify_client == "on" and first.ssl.session_cache == ("shared:MAIL:10m",)
    assert first.ssl.conf_commands == (("Options", "-SessionTicket"), ("NumTickets", "0"))
    assert first.listens[0].ssl
    assert second.ssl.certificates == (
        ("data:-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n", "data:KEY"),)
    assert second.starttls == "only"
