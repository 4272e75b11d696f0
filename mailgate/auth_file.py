"""The embedded authenticator: a YAML users file (the ``auth_file`` directive).

It lets mailgate serve without an auth_http server. The file::

    defaults:                # apply to every user unless overridden
      server: 127.0.0.1      # backend IP literal
      pop3: 110              # backend port per protocol
      imap: 143
      smtp: 25
    users:
      alice:
        password: "$pbkdf2-sha256$600000$<salt>$<hash>"   # from `mailgate passwd`
      bob:
        password: "..."
        server: 127.0.0.2
        pop3: 1110
        backend_login: bob@example.com   # optional: the login used at the backend
        backend_password: "..."          # optional: the password used at the backend

Passwords are stored as PBKDF2-SHA256 hashes in the format passlib uses
(``$pbkdf2-sha256$<rounds>$<salt>$<checksum>``, salt and checksum in base64
with "." for "+" and no padding), so hashes made by passlib work too. Plain
text passwords are not accepted: ``hash_password`` (``mailgate passwd``) makes
a hash, and tests make cheap ones with few rounds.

Only plain logins (USER/PASS, LOGIN, AUTH PLAIN/LOGIN) can be checked against
a hash: APOP, CRAM-MD5, EXTERNAL and ``smtp_auth none`` fail like a wrong
password. A failed login gets no Auth-Wait: as with an auth server that sends
none, the client is told and disconnected (SPEC 8.4).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

from mailgate import auth
from mailgate.auth import AuthRequest, AuthResult
from mailgate.errors import ConfigError
from mailgate.protocol.base import wire

SCHEME = "pbkdf2-sha256"
# OWASP's 2023 recommendation for PBKDF2-HMAC-SHA256.
DEFAULT_ROUNDS = 600_000
MAX_ROUNDS = 100_000_000  # a sanity bound: one check must not take minutes
SALT_BYTES = 16
CHECKSUM_BYTES = 32  # SHA-256

FAILURE_MESSAGE = "Invalid login or password"
SMTP_ERROR_CODE = "535 5.7.0"  # nginx's default for SMTP (SPEC 8.5)
PROTOCOLS = ("pop3", "imap", "smtp")

_DEFAULT_KEYS = ("server", *PROTOCOLS)
_USER_KEYS = ("password", "server", *PROTOCOLS, "backend_login", "backend_password")
_HASH = re.compile(r"\$pbkdf2-sha256\$([1-9][0-9]{0,8})\$([A-Za-z0-9./+]+={0,2})\$([A-Za-z0-9./+]+={0,2})")


# --- password hashes ---------------------------------------------------------


def _ab64_encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=").replace("+", ".")


def _ab64_decode(text: str) -> bytes:
    text = text.replace(".", "+").rstrip("=")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """A new ``$pbkdf2-sha256$`` hash of ``password`` with a random salt."""
    if not 1 <= rounds <= MAX_ROUNDS:
        raise ValueError(f"rounds must be between 1 and {MAX_ROUNDS}")
    salt = secrets.token_bytes(SALT_BYTES)
    checksum = hashlib.pbkdf2_hmac("sha256", wire(password), salt, rounds)
    return f"${SCHEME}${rounds}${_ab64_encode(salt)}${_ab64_encode(checksum)}"


def parse_hash(hashed: str) -> tuple[int, bytes, bytes]:
    """(rounds, salt, checksum) of a hash; ValueError if it is not one."""
    match = _HASH.fullmatch(hashed)
    if match is None:
        raise ValueError("not a $pbkdf2-sha256$ hash")
    rounds = int(match.group(1))
    try:
        salt, checksum = _ab64_decode(match.group(2)), _ab64_decode(match.group(3))
    except (binascii.Error, ValueError):
        raise ValueError("bad base64 in the hash") from None
    if rounds > MAX_ROUNDS or not salt or len(checksum) != CHECKSUM_BYTES:
        raise ValueError("bad rounds, salt or checksum size")
    return rounds, salt, checksum


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches ``hashed``; False for a malformed hash.
    The comparison takes the same time wherever the checksums differ."""
    try:
        rounds, salt, checksum = parse_hash(hashed)
    except ValueError:
        return False
    candidate = hashlib.pbkdf2_hmac("sha256", wire(password), salt, rounds)
    return hmac.compare_digest(candidate, checksum)


def _dummy_hash(rounds: int) -> str:
    """A hash nothing matches, costing ``rounds`` to check: unknown users take
    as long to refuse as known ones."""
    salt, checksum = secrets.token_bytes(SALT_BYTES), secrets.token_bytes(CHECKSUM_BYTES)
    return f"${SCHEME}${rounds}${_ab64_encode(salt)}${_ab64_encode(checksum)}"


# --- the table ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backend:
    """Where logins go: a server and a port per protocol (None: not set)."""

    server: str | None = None
    pop3: int | None = None
    imap: int | None = None
    smtp: int | None = None

    def port(self, protocol: str) -> int | None:
        return getattr(self, protocol, None) if protocol in PROTOCOLS else None


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password_hash: str = field(repr=False)
    backend: Backend = Backend()
    backend_login: str | None = None
    backend_password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class UsersTable:
    path: str
    defaults: Backend
    users: dict[str, User]
    dummy_hash: str = field(repr=False)

    def target(self, user: User, protocol: str) -> tuple[str | None, int | None]:
        """The user's backend server and port for ``protocol``."""
        server = user.backend.server or self.defaults.server
        port = user.backend.port(protocol) or self.defaults.port(protocol)
        return server, port


def load_users(path: str) -> UsersTable:
    """Read and check a users file; ConfigError (with file:line) if it is wrong."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise ConfigError(f'open() "{path}" failed ({err.errno}: {err.strerror})') from None
    try:
        root = yaml.compose(data.decode("utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError:
        raise ConfigError("users file is not valid UTF-8", path) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise ConfigError(f"invalid YAML: {err.problem or err}", path, mark.line + 1 if mark else None) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML: {err}", path) from None
    if root is None:
        raise ConfigError("users file is empty", path)
    return _Loader(path).table(root)


class _Loader:
    """Turns the composed YAML nodes into a UsersTable, checking as it goes."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, message: str, node: yaml.Node) -> ConfigError:
        return ConfigError(message, self.path, node.start_mark.line + 1)

    def table(self, root: yaml.Node) -> UsersTable:
        top = self.mapping(root, "the users file", ("defaults", "users"))
        defaults = Backend()
        if "defaults" in top:
            fields = self.mapping(top["defaults"][1], '"defaults"', _DEFAULT_KEYS)
            defaults = self.backend(fields, '"defaults"')
        users: dict[str, User] = {}
        if "users" in top:
            users_node = top["users"][1]
            if not self.is_null(users_node):
                for name, (key, value) in self.mapping(users_node, '"users"', None).items():
                    users[name] = self.user(name, key, value)
        rounds = Counter(parse_hash(user.password_hash)[0] for user in users.values())
        dummy_rounds = rounds.most_common(1)[0][0] if rounds else DEFAULT_ROUNDS
        return UsersTable(self.path, defaults, users, _dummy_hash(dummy_rounds))

    def mapping(
        self, node: yaml.Node, what: str, known: tuple[str, ...] | None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(f"{what} must be a mapping", node)
        items: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or not key.value:
                raise self.fail(f"invalid key in {what}", key)
            if known is not None and key.value not in known:
                raise self.fail(f'unknown key "{key.value}" in {what}', key)
            if key.value in items:
                raise self.fail(f'duplicate key "{key.value}" in {what}', key)
            items[key.value] = (key, value)
        return items

    def user(self, name: str, key: yaml.Node, node: yaml.Node) -> User:
        what = f'user "{name}"'
        if self.is_null(node):
            raise self.fail(f"{what} has no password", key)
        fields = self.mapping(node, what, _USER_KEYS)
        if "password" not in fields:
            raise self.fail(f"{what} has no password", key)
        password_node = fields["password"][1]
        password_hash = self.string(password_node, f'"password" of {what}')
        try:
            parse_hash(password_hash)
        except ValueError:
            message = f"invalid password hash for {what} (make one with `mailgate passwd`)"
            raise self.fail(message, password_node) from None
        login = fields.get("backend_login")
        secret = fields.get("backend_password")
        return User(
            name,
            password_hash,
            self.backend(fields, what),
            self.string(login[1], f'"backend_login" of {what}') if login else None,
            self.string(secret[1], f'"backend_password" of {what}') if secret else None,
        )

    def backend(self, fields: dict[str, tuple[yaml.Node, yaml.Node]], what: str) -> Backend:
        values: dict[str, object] = {}
        if "server" in fields:
            values["server"] = self.address(fields["server"][1], what)
        for protocol in PROTOCOLS:
            if protocol in fields:
                values[protocol] = self.port(fields[protocol][1], f'"{protocol}" of {what}')
        return Backend(**values)  # type: ignore[arg-type]

    def string(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or self.is_null(node):
            raise self.fail(f"{what} must be a string", node)
        return str(node.value)

    def address(self, node: yaml.Node, what: str) -> str:
        value = self.string(node, f'"server" of {what}')
        try:
            if "%" in value:
                raise ValueError(value)
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise self.fail(f'invalid server address "{value}" in {what} (an IP address is needed)', node) from None

    def port(self, node: yaml.Node, what: str) -> int:
        value = self.string(node, what)
        if not value.isdigit() or not 1 <= int(value) <= 65535:
            raise self.fail(f'invalid port "{value}" in {what}', node)
        return int(value)

    @staticmethod
    def is_null(node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


# --- the authenticator -------------------------------------------------------


class FileAuthenticator:
    """Answers auth requests from a users file, re-reading it when it changes.

    ``authenticate`` blocks and is CPU-bound (PBKDF2): run it in a thread
    pool. A changed file that does not load is not used: the previous table
    stays, ``last_error`` says why (None once a good version loads), and
    ``on_error`` is called once per broken version.
    """

    def __init__(self, path: str, on_error: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.on_error = on_error
        self.last_error: str | None = None
        signature = self._signature()
        self._state = (signature, load_users(path))

    @property
    def table(self) -> UsersTable:
        return self._state[1]

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload_if_changed(self) -> bool:
        """Load the file again if it changed; True if a new table is in use.
        Lock-free: two threads may both load a new version, with the same
        result, and each swap is one assignment."""
        signature, table = self._state
        current = self._signature()
        if current == signature:
            return False
        try:
            fresh = load_users(self.path)
        except ConfigError as err:
            self._state = (current, table)  # try again only when it changes again
            self.last_error = f"{err}; still using the previous users"
            if self.on_error is not None:
                self.on_error(self.last_error)
            return False
        self._state = (current, fresh)
        self.last_error = None
        return True

    def authenticate(self, request: AuthRequest) -> AuthResult:
        self.reload_if_changed()
        table = self.table
        creds = request.credentials
        if creds.method != "plain":
            return _failed(request)  # a digest or no password cannot be checked against a hash
        user = table.users.get(creds.login)
        matches = verify_password(creds.password, user.password_hash if user else table.dummy_hash)
        if user is None or not matches:
            return _failed(request)
        server, port = table.target(user, request.protocol)
        if server is None:
            return AuthResult(auth.ERROR, log_message=f'users file {table.path} gives no server for user "{user.name}"')
        if port is None:
            return AuthResult(
                auth.ERROR,
                log_message=f'users file {table.path} gives no {request.protocol} port for user "{user.name}"',
            )
        return AuthResult(auth.OK, server=server, port=port, login=user.backend_login, password=user.backend_password)


def _failed(request: AuthRequest) -> AuthResult:
    return AuthResult(
        auth.FAIL,
        message=FAILURE_MESSAGE,
        error_code=SMTP_ERROR_CODE if request.protocol == "smtp" else "",
        log_message=f'client login failed: "{FAILURE_MESSAGE}"',
        log_level="info",
    )
