"""The embedded users file: loading, hashes, decisions, reloads."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from mailgate import auth
from mailgate.auth import AuthRequest
from mailgate.auth_file import (
    DEFAULT_ROUNDS,
    FileAuthenticator,
    hash_password,
    load_users,
    parse_hash,
    verify_password,
)
from mailgate.errors import ConfigError
from mailgate.protocol.base import Credentials, text

ROUNDS = 1000  # cheap hashes for tests
ALICE = hash_password("wonderland", ROUNDS)
BOB = hash_password("builder", ROUNDS)


def write(path: Path, body: str) -> str:
    path.write_text(textwrap.dedent(body))
    return str(path)


def bump_mtime(path: str) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def request(login: str, password: str, protocol: str = "pop3", method: str = "plain") -> AuthRequest:
    return AuthRequest(Credentials(method, login, password), protocol, 1, "192.0.2.1")


@pytest.fixture
def users(tmp_path: Path) -> str:
    return write(tmp_path / "users.yaml", f"""\
        defaults:
          server: 127.0.0.1
          pop3: 11110
          imap: 1143
        users:
          alice:
            password: "{ALICE}"
          bob:
            password: '{BOB}'
            server: 127.0.0.2
            pop3: 1110
            smtp: 2525
            backend_login: bob@example.com
            backend_password: "backend secret"
          carol:
            password: "{ALICE}"
            backend_login: carol@example.com
          "4711":
            password: "{ALICE}"
        """)


# --- hashes -------------------------------------------------------------------


def test_hash_format_and_verify() -> None:
    hashed = hash_password("wonderland", ROUNDS)
    assert hashed.startswith(f"$pbkdf2-sha256${ROUNDS}$")
    rounds, salt, checksum = parse_hash(hashed)
    assert (rounds, len(salt), len(checksum)) == (ROUNDS, 16, 32)
    assert "+" not in hashed and "=" not in hashed  # passlib's adapted base64
    assert verify_password("wonderland", hashed)
    assert not verify_password("Wonderland", hashed)
    assert not verify_password("", hashed)
    assert hash_password("wonderland", ROUNDS) != hashed  # random salt


def test_default_rounds() -> None:
    assert DEFAULT_ROUNDS >= 600_000


def test_passlib_hash_is_accepted() -> None:
    # passlib's own test vectors for pbkdf2_sha256.
    assert verify_password("password", "$pbkdf2-sha256$1212$4vjV83LKPjQzk31VI4E0Vw$"
                                       "hsYF68OiOUPdDZ1Fg.fJPeq1h/gXXY7acBp9/6c.tmQ")
    assert verify_password("\u0399\u03c9\u03b1\u03bd\u03bd\u03b7\u03c2", "$pbkdf2-sha256$1212$3SABFJGDtyhrQMVt1uABPw$"
                           "WyaUoqCLgvz97s523nF4iuOqZNbp5Nt8do/cuaa7AiI")


def test_any_client_bytes_can_be_hashed() -> None:
    password = text(b"p\xff\x00ss")
    assert verify_password(password, hash_password(password, ROUNDS))


@pytest.mark.parametrize("bad", ["", "wonderland", "{PLAIN}wonderland", "$pbkdf2-sha256$0$c2FsdA$AAAA",
                                 "$pbkdf2-sha256$1000$c2FsdA$AAAA", "$pbkdf2-sha512$1000$c2FsdA$" + "A" * 43,
                                 "$pbkdf2-sha256$1000$$" + "A" * 43, "$pbkdf2-sha256$1000$c2F*dA$" + "A" * 43])
def test_malformed_hashes(bad: str) -> None:
    assert not verify_password("x", bad)
    with pytest.raises(ValueError):
        parse_hash(bad)


def test_rounds_bounds() -> None:
    with pytest.raises(ValueError):
        hash_password("x", 0)


# --- decisions -------------------------------------------------------------------


def test_ok_with_defaults(users: str) -> None:
    result = FileAuthenticator(users).authenticate(request("alice", "wonderland"))
    assert (result.outcome, result.server, result.port, result.login, result.password) == (
        auth.OK, "127.0.0.1", 11110, None, None)
    result = FileAuthenticator(users).authenticate(request("alice", "wonderland", "imap"))
    assert (result.server, result.port) == ("127.0.0.1", 1143)


def test_overrides(users: str) -> None:
    authenticator = FileAuthenticator(users)
    result = authenticator.authenticate(request("bob", "builder"))
    assert (result.outcome, result.server, result.port, result.login, result.password) == (
        auth.OK, "127.0.0.2", 1110, "bob@example.com", "backend secret")
    assert "backend secret" not in repr(result)
    result = authenticator.authenticate(request("bob", "builder", "imap"))
    assert (result.server, result.port) == ("127.0.0.2", 1143)  # the default port, his server
    result = authenticator.authenticate(request("carol", "wonderland"))
    assert (result.login, result.password) == ("carol@example.com", None)  # the client's password goes on


def test_numeric_user_name(users: str) -> None:
    assert FileAuthenticator(users).authenticate(request("4711", "wonderland")).outcome == auth.OK


@pytest.mark.parametrize(("login", "password"), [("alice", "wrong"), ("alice", ""), ("nobody", "wonderland"),
                                                 ("Alice", "wonderland"), ("", "")])
def test_failures_look_alike(users: str, login: str, password: str) -> None:
    result = FileAuthenticator(users).authenticate(request(login, password))
    assert (result.outcome, result.message, result.wait) == (auth.FAIL, "Invalid login or password", 0)
    assert result.log_message == 'client login failed: "Invalid login or password"'
    assert result.log_level == "info"


def test_smtp_failure_has_nginx_code(users: str) -> None:
    result = FileAuthenticator(users).authenticate(request("alice", "wrong", "smtp"))
    assert (result.outcome, result.error_code) == (auth.FAIL, "535 5.7.0")


@pytest.mark.parametrize("method", ["apop", "cram-md5", "external", "none"])
def test_methods_that_cannot_be_checked_fail(users: str, method: str) -> None:
    result = FileAuthenticator(users).authenticate(request("alice", "wonderland", method=method))
    assert (result.outcome, result.message) == (auth.FAIL, "Invalid login or password")


def test_unknown_user_is_checked_against_a_dummy_hash(users: str) -> None:
    table = load_users(users)
    assert parse_hash(table.dummy_hash)[0] == ROUNDS  # as costly as the real users' hashes
    assert not verify_password("", table.dummy_hash)


def test_missing_port_for_protocol(users: str) -> None:
    result = FileAuthenticator(users).authenticate(request("alice", "wonderland", "smtp"))
    assert result.outcome == auth.ERROR
    assert result.log_message == f'users file {users} gives no smtp port for user "alice"'
    assert FileAuthenticator(users).authenticate(request("bob", "builder", "smtp")).port == 2525


def test_missing_server(tmp_path: Path) -> None:
    path = write(tmp_path / "u.yaml", f"""\
        users:
          alice: {{password: "{ALICE}", pop3: 110}}
        """)
    result = FileAuthenticator(path).authenticate(request("alice", "wonderland"))
    assert (result.outcome, result.log_message) == (auth.ERROR, f'users file {path} gives no server for user "alice"')


def test_ipv6_server(tmp_path: Path) -> None:
    path = write(tmp_path / "u.yaml", f"""\
        defaults: {{server: "::1", pop3: 110}}
        users: {{alice: {{password: "{ALICE}"}}}}
        """)
    assert FileAuthenticator(path).authenticate(request("alice", "wonderland")).server == "::1"


def test_empty_users(tmp_path: Path) -> None:
    path = write(tmp_path / "u.yaml", "users:\n")
    assert load_users(path).users == {}
    assert FileAuthenticator(path).authenticate(request("a", "b")).outcome == auth.FAIL


# --- load errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message", "line"),
    [
        ("users:\n  alice: [\n", "invalid YAML", 3),
        ("users:\n  alice:\n    password: x\n\tbad: 1\n", "invalid YAML", 4),
        ("", "users file is empty", None),
        ("- a\n- b\n", "the users file must be a mapping", 1),
        ("defaults: {}\ngroups: {}\n", 'unknown key "groups" in the users file', 2),
        ("defaults:\n  server: 127.0.0.1\n  pop: 110\n", 'unknown key "pop" in "defaults"', 3),
        ("defaults:\n  server: mail.example\n", 'invalid server address "mail.example" in "defaults"', 2),
        ("defaults:\n  pop3: 70000\n", 'invalid port "70000" in "pop3" of "defaults"', 2),
        ("defaults:\n  pop3: 0\n", 'invalid port "0" in "pop3" of "defaults"', 2),
        ("defaults:\n  pop3: abc\n", 'invalid port "abc" in "pop3" of "defaults"', 2),
        ("defaults:\n  pop3:\n", '"pop3" of "defaults" must be a string', 2),
        ("users:\n  alice:\n    pasword: x\n", 'unknown key "pasword" in user "alice"', 3),
        ("users:\n  alice:\n    server: 127.0.0.1\n", 'user "alice" has no password', 2),
        ("users:\n  alice:\n", 'user "alice" has no password', 2),
        ("users:\n  alice:\n    password: wonderland\n", 'invalid password hash for user "alice"', 3),
        ("users:\n  alice:\n    password: [a]\n", '"password" of user "alice" must be a string', 3),
        (f"users:\n  alice:\n    password: '{ALICE}'\n  alice:\n    password: '{ALICE}'\n",
         'duplicate key "alice" in "users"', 4),
        (f"users:\n  a:\n    password: '{ALICE}'\n    server: 10.0.0.1%eth0\n",
         'invalid server address "10.0.0.1%eth0" in user "a"', 4),
        ("users: [alice]\n", '"users" must be a mapping', 1),
    ],
)
def test_load_errors_name_file_and_line(tmp_path: Path, body: str, message: str, line: int | None) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as caught:
        load_users(str(path))
    err = caught.value
    assert err.message.startswith(message), err.message
    assert (err.file, err.line) == (str(path), line)
    assert str(err).endswith(f" in {path}" + (f":{line}" if line else ""))


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "none.yaml")
    with pytest.raises(ConfigError) as caught:
        load_users(path)
    assert str(caught.value) == f'open() "{path}" failed (2: No such file or directory)'


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "u.yaml"
    path.write_bytes(b"users:\n  \xff: {}\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_users(str(path))


def test_shipped_example_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "etc" / "users.yaml"
    table = load_users(str(path))
    assert verify_password("wonderland", table.users["alice"].password_hash)
    assert table.target(table.users["alice"], "pop3") == ("127.0.0.1", 11110)


# --- reloads -------------------------------------------------------------------------


def test_reload_when_mtime_changes(users: str) -> None:
    authenticator = FileAuthenticator(users)
    assert authenticator.authenticate(request("dave", "pw")).outcome == auth.FAIL
    with open(users, "a") as handle:
        handle.write(f"  dave:\n    password: '{hash_password('pw', ROUNDS)}'\n")
    bump_mtime(users)
    assert authenticator.authenticate(request("dave", "pw")).outcome == auth.OK
    assert authenticator.last_error is None


def test_broken_reload_keeps_the_old_table(users: str) -> None:
    errors: list[str] = []
    authenticator = FileAuthenticator(users, on_error=errors.append)
    Path(users).write_text("users:\n  alice:\n    password: nothash\n")
    bump_mtime(users)
    assert authenticator.authenticate(request("alice", "wonderland")).outcome == auth.OK  # still the old users
    assert authenticator.last_error is not None
    assert authenticator.last_error.startswith(f'invalid password hash for user "alice" (make one with `mailgate '
                                               f'passwd`) in {users}:3')
    assert "still using the previous users" in authenticator.last_error
    authenticator.authenticate(request("alice", "wonderland"))
    assert len(errors) == 1  # reported once per broken version
    # Fixed: loaded, and the error is gone.
    Path(users).write_text(f"defaults: {{server: 10.9.9.9, pop3: 1}}\nusers:\n  alice:\n    password: '{BOB}'\n")
    bump_mtime(users)
    result = authenticator.authenticate(request("alice", "builder"))
    assert (result.outcome, result.server) == (auth.OK, "10.9.9.9")
    assert authenticator.last_error is None


def test_deleted_file_keeps_the_old_table(users: str) -> None:
    authenticator = FileAuthenticator(users)
    os.unlink(users)
    assert authenticator.authenticate(request("alice", "wonderland")).outcome == auth.OK
    assert authenticator.last_error is not None and "No such file" in authenticator.last_error


def test_unchanged_file_is_not_reread(users: str, monkeypatch: pytest.MonkeyPatch) -> None:
    authenticator = FileAuthenticator(users)
    calls = []
    monkeypatch.setattr("mailgate.auth_file.load_users", lambda path: calls.append(path))
    authenticator.authenticate(request("alice", "wonderland"))
    assert calls == []
    assert not authenticator.reload_if_changed()


def test_initial_load_error_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "u.yaml", "users: {alice: {password: x}}\n")
    with pytest.raises(ConfigError):
        FileAuthenticator(path)
