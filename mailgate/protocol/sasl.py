"""SASL as the POP3, IMAP and SMTP pre-authentication dialogues share it.

Everything here is protocol-neutral: a session picks the mechanism from its
AUTH/AUTHENTICATE arguments with ``select_mechanism``, runs a
``SaslExchange``, wraps each ``Challenge`` in its own continuation line
(``+ `` for POP3 and IMAP, ``334 `` for SMTP) and answers a ``SaslFailure``
with its own invalid-command reply after logging ``failure.message`` at info.

The decoding matches nginx (SPEC 4.4), with one deliberate difference: a
decoded login or password holding CR or LF is refused, because it would
become a second command line towards the backend (nginx PR 1620, PEERS.md).
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import Final

from mailgate.protocol.base import Credentials, text, wire

# Mechanism names, as Auth-Method values and *_auth directive values.
PLAIN: Final = "plain"
LOGIN: Final = "login"
CRAM_MD5: Final = "cram-md5"
EXTERNAL: Final = "external"

# The challenges nginx sends: base64 of "Username:" and "Password:" (SPEC 4.4).
USERNAME_CHALLENGE: Final = b"VXNlcm5hbWU6"
PASSWORD_CHALLENGE: Final = b"UGFzc3dvcmQ6"

# RFC 2195: the CRAM-MD5 digest is 16 bytes written as 32 hex digits. nginx
# checks only the length, not that the digits are hex (SPEC 4.4).
CRAM_MD5_DIGEST_LENGTH: Final = 32

# nginx draws the salt's number from C random(): 0 .. 2**31 - 1 (SPEC 3.4).
SALT_RANDOM_RANGE: Final = 2**31

_BASE64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

# The name in the "client sent invalid ... in AUTH <name> command" messages.
_MESSAGE_NAMES: Final = {
    PLAIN: "PLAIN",
    LOGIN: "LOGIN",
    CRAM_MD5: "CRAM-MD5",
    EXTERNAL: "EXTERNAL",
}

# AUTH argument (upper-cased) -> mechanism, and whether an initial response
# may follow it (SPEC 5.2: "AUTH CRAM-MD5" takes no further argument).
_MECHANISMS: Final = {
    b"PLAIN": (PLAIN, True),
    b"LOGIN": (LOGIN, True),
    b"CRAM-MD5": (CRAM_MD5, False),
    b"EXTERNAL": (EXTERNAL, True),
}

# PLAIN and LOGIN are accepted whatever *_auth says; *_auth only controls
# what is advertised and whether these are accepted (SPEC 2.7, Appendix B 12).
_OPTIONAL_MECHANISMS: Final = frozenset({CRAM_MD5, EXTERNAL})


class SaslFailure(Exception):
    """The client's SASL data was refused.

    ``message`` is logged at info level, then the protocol's invalid-command
    reply is sent and the session returns to its initial state. It never holds
    a password.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``data`` (base64 text, possibly empty) as a continuation line."""

    data: bytes


Step = Challenge | Credentials


# --- base64 -------------------------------------------------------------------


def decode_base64(data: bytes) -> bytes | None:
    """nginx's ``ngx_decode_base64`` (SPEC 4.4), None when it says invalid.

    Scanning stops at the first ``=``; a character outside the alphabet before
    it, or a length of 1 mod 4, is invalid; padding is not required and
    leftover bits are dropped.
    """
    end = data.find(b"=")
    if end >= 0:
        data = data[:end]
    if data.translate(None, _BASE64_ALPHABET) or len(data) % 4 == 1:
        return None
    # The standard decoder ignores leftover bits; it only needs the padding.
    return base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)


def _decode(token: bytes, mechanism: str) -> bytes:
    decoded = decode_base64(token)
    if decoded is None:
        raise SaslFailure(
            f"client sent invalid base64 encoding in AUTH {_MESSAGE_NAMES[mechanism]} command"
        )
    return decoded


def _has_line_break(value: bytes) -> bool:
    return b"\r" in value or b"\n" in value


def _checked(value: bytes, what: str, mechanism: str) -> str:
    """``value`` as text, unless it holds CR or LF (see the module docstring)."""
    if _has_line_break(value):
        raise SaslFailure(f"client sent invalid {what} in AUTH {_MESSAGE_NAMES[mechanism]} command")
    return text(value)


# --- per-mechanism decoding ----------------------------------------------------


def decode_plain(token: bytes) -> tuple[str, str]:
    """RFC 4616 ``[authzid] NUL authcid NUL passwd`` -> (login, password).

    As nginx: the authorisation identity is skipped; the first NUL must not be
    the last byte, a second NUL must follow the login, and the password is
    everything after it (it may be empty and may hold further NULs).
    """
    decoded = _decode(token, PLAIN)
    first = decoded.find(b"\0")
    if first < 0 or first == len(decoded) - 1:
        raise SaslFailure("client sent invalid login in AUTH PLAIN command")
    second = decoded.find(b"\0", first + 1)
    if second < 0:
        raise SaslFailure("client sent invalid password in AUTH PLAIN command")
    login = _checked(decoded[first + 1 : second], "login", PLAIN)
    password = _checked(decoded[second + 1 :], "password", PLAIN)
    return login, password


def decode_login_username(token: bytes) -> str:
    """The AUTH LOGIN user name (may be empty, as in nginx)."""
    return _checked(_decode(token, LOGIN), "login", LOGIN)


def decode_login_password(token: bytes) -> str:
    """The AUTH LOGIN password (may be empty, as in nginx)."""
    return _checked(_decode(token, LOGIN), "password", LOGIN)


def split_cram_md5(decoded: bytes) -> tuple[bytes, bytes | None]:
    """RFC 2195 ``user SP digest``: split at the first space (digest None
    when there is no space)."""
    login, space, digest = decoded.partition(b" ")
    return login, (digest if space else None)


def decode_cram_md5(token: bytes) -> tuple[str, str]:
    """RFC 2195 response -> (login, digest); the digest must be 32 bytes."""
    login, digest = split_cram_md5(_decode(token, CRAM_MD5))
    if digest is None or len(digest) != CRAM_MD5_DIGEST_LENGTH or _has_line_break(digest):
        raise SaslFailure("client sent invalid CRAM-MD5 hash in AUTH CRAM-MD5 command")
    return _checked(login, "login", CRAM_MD5), text(digest)


def decode_external(token: bytes) -> str:
    """The EXTERNAL authorisation identity, which nginx uses as the login."""
    return _checked(_decode(token, EXTERNAL), "login", EXTERNAL)


# --- salt and CRAM-MD5 challenge ----------------------------------------------


def make_salt(
    server_name: str,
    random_source: Callable[[], int] | None = None,
    clock: Callable[[], float] | None = None,
) -> str:
    """The APOP/CRAM-MD5 salt ``<R.T@server_name>`` with its CRLF (SPEC 3.4).

    R comes from ``random_source`` (default: a secure draw in nginx's range),
    T is the Unix time in whole seconds from ``clock`` (default time.time).
    """
    number = random_source() if random_source is not None else secrets.randbelow(SALT_RANDOM_RANGE)
    seconds = int((clock or time.time)())
    return f"<{number}.{seconds}@{server_name}>\r\n"


def cram_md5_challenge(salt: str) -> bytes:
    """Base64 of the salt without its CRLF (RFC 2195, SPEC 4.4)."""
    return base64.b64encode(wire(salt.removesuffix("\r\n")))


# --- choosing the mechanism -----------------------------------------------------


def select_mechanism(
    args: Sequence[bytes], enabled: Container[str]
) -> tuple[str, bytes | None] | None:
    """(mechanism, initial response or None) for AUTH/AUTHENTICATE ``args``.

    None means the command is refused: no or an unknown mechanism, a
    CRAM-MD5 or EXTERNAL that ``enabled`` (the *_auth methods) lacks, or too
    many arguments (SPEC 5.2). Mechanism names are case-insensitive.
    """
    if not args or len(args) > 2:
        return None
    found = _MECHANISMS.get(args[0].upper())
    if found is None:
        return None
    mechanism, takes_initial_response = found
    if mechanism in _OPTIONAL_MECHANISMS and mechanism not in enabled:
        return None
    if len(args) == 2 and not takes_initial_response:
        return None
    return mechanism, (args[1] if len(args) == 2 else None)


# --- one exchange -----------------------------------------------------------------

_USERNAME = "username"  # LOGIN/EXTERNAL: the user name is expected
_PASSWORD = "password"  # LOGIN: the password is expected
_RESPONSE = "response"  # PLAIN/CRAM-MD5: the whole response is expected


class SaslExchange:
    """One AUTH exchange: ``start`` it, then pass each client response to
    ``respond``.

    Each call returns the next ``Challenge`` or the finished ``Credentials``,
    or raises ``SaslFailure``. ``login`` is the login decoded so far: nginx
    keeps it after a failure and shows it in later log lines (SPEC 4.4).
    """

    def __init__(self, mechanism: str, salt: str = "") -> None:
        if mechanism not in _MESSAGE_NAMES:
            raise ValueError(f"unknown SASL mechanism {mechanism!r}")
        if mechanism == CRAM_MD5 and not salt:
            raise ValueError("CRAM-MD5 needs the salt")
        self.mechanism = mechanism
        self.salt = salt
        self.login: str | None = None
        self._expect = _USERNAME if mechanism in (LOGIN, EXTERNAL) else _RESPONSE

    def start(self, initial_response: bytes | None = None) -> Step:
        if initial_response is not None:
            if self.mechanism == CRAM_MD5:
                raise ValueError("CRAM-MD5 takes no initial response")
            return self.respond(initial_response)
        if self.mechanism == CRAM_MD5:
            return Challenge(cram_md5_challenge(self.salt))
        if self.mechanism == PLAIN:
            return Challenge(b"")
        return Challenge(USERNAME_CHALLENGE)

    def respond(self, response: bytes) -> Step:
        if self.mechanism == PLAIN:
            login, password = decode_plain(response)
            self.login = login
            return Credentials(PLAIN, login, password)
        if self.mechanism == CRAM_MD5:
            return self._cram_md5(response)
        if self.mechanism == EXTERNAL:
            self.login = decode_external(response)
            return Credentials(EXTERNAL, self.login)
        if self._expect == _USERNAME:
            self.login = decode_login_username(response)
            self._expect = _PASSWORD
            return Challenge(PASSWORD_CHALLENGE)
        # AUTH LOGIN is reported to the auth server as "plain" (SPEC 5.4).
        return Credentials(PLAIN, self.login or "", decode_login_password(response))

    def _cram_md5(self, response: bytes) -> Credentials:
        try:
            login, digest = decode_cram_md5(response)
        except SaslFailure:
            # nginx leaves the text before the space (or all of it) as the
            # login even when the hash is refused.
            decoded = decode_base64(response)
            if decoded is not None:
                partial = split_cram_md5(decoded)[0]
                if not _has_line_break(partial):
                    self.login = text(partial)
            raise
        self.login = login
        return Credentials(CRAM_MD5, login, digest, salt=self.salt)
