"""Building SSL contexts from a server's ``ssl_*`` directives (for
``mailgate.tls``, which serves connections with them): certificates and keys
(files or ``data:``), key passwords, protocols, ciphers, curves, DH
parameters, client verification, CRLs and ``ssl_conf_command``. Every problem
is a ConfigError at the server's file:line naming the file. See
``mailgate.tls`` for where Python's ssl module makes mailgate differ from
nginx.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

from mailgate.config.model import Server, Ssl
from mailgate.config.sslconf import (
    CONF_COMMANDS,
    DATA_PREFIX,
    NO_PROTOCOL,
    OPTIONS,
    TLS_VERSIONS,
    conf_items,
    is_data,
    session_cache_stores,
    shown,
)
from mailgate.errors import ConfigError
from mailgate.tls_facts import Certificate, certificates, pem_blocks

TLS_VERSION = {
    "TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
BOUND_VERSION = {
    **TLS_VERSION, "SSLv3": ssl.TLSVersion.SSLv3,
    "None": None,
}
NO_VERSION = {version: NO_PROTOCOL[version.lower()] for version in TLS_VERSIONS}
TICKET_KEY_SIZES = (48, 80)
# OpenSSL's reasons for a key that is not the certificate's: same type but
# another key, or another type (the certificate's slot stays without a key).
MISMATCH = ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED")


@dataclass(frozen=True, slots=True)
class CertificatePair:
    """One certificate with its key, and the names it is for."""

    cert: str
    key: str
    names: tuple[str, ...]


@dataclass(slots=True)
class ContextBuilder:
    """Builds the contexts of one server; every error is a ConfigError at
    the server's file:line."""

    server: Server
    passwords: list[bytes] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # each file is read once

    @property
    def ssl(self) -> Ssl:
        return self.server.ssl

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, self.server.source.file, self.server.source.line)

    def read(self, value: str, what: str) -> bytes:
        if is_data(value):
            return value[len(DATA_PREFIX):].encode("utf-8")
        if value not in self.files:
            try:
                with open(value, "rb") as f:
                    self.files[value] = f.read()
            except OSError as err:
                raise self.error(f'cannot load {what} "{value}": {err.strerror}') from None
        return self.files[value]

    def read_passwords(self) -> None:
        """ngx_ssl_read_password_file: one password per line (CR LF or LF),
        empty lines skipped; no file or no line: the empty password, which
        never prompts."""
        path = self.ssl.password_file
        self.passwords = []
        if path is not None:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as err:
                raise self.error(f'open() "{path}" failed ({err.errno}: {err.strerror})') from None
            self.passwords = [line.rstrip(b"\r") for line in data.split(b"\n")
                              if line.rstrip(b"\r")]
        self.passwords = self.passwords or [b""]

    def check_ticket_keys(self) -> None:
        """ngx_ssl_session_ticket_keys reads the files; mailgate cannot use
        them but refuses what nginx refuses."""
        for path in self.ssl.session_ticket_keys:
            try:
                size = os.path.getsize(path)
            except OSError as err:
                raise self.error(f'open() "{path}" failed ({err.errno}: {err.strerror})') from None
            if size not in TICKET_KEY_SIZES:
                raise self.error(f'"{path}" must be 48 or 80 bytes')

    def pairs(self) -> list[CertificatePair]:
        pairs = []
        for cert, key in self.ssl.certificates:
            blocks = certificates(self._blocks(cert, "certificate"))
            if not blocks:
                raise self.error(f'cannot load certificate "{shown(cert)}": '
                                 "no PEM certificate found")
            try:
                first = Certificate.from_der(blocks[0])
            except ValueError as err:
                raise self.error(f'cannot load certificate "{shown(cert)}": {err}') from None
            key_blocks = self._blocks(key, "certificate key")
            if not any(label.endswith("PRIVATE KEY") for label, _ in key_blocks):
                raise self.error(f'cannot load certificate key "{shown(key)}": '
                                 "no PEM private key found")
            pairs.append(CertificatePair(cert, key, first.host_names))
        return pairs

    def _blocks(self, value: str, what: str) -> list[tuple[str, bytes]]:
        text = self.read(value, what)
        try:
            return pem_blocks(text)
        except ValueError as err:
            raise self.error(f'cannot load {what} "{shown(value)}": {err}') from None

    def context(self, pairs: list[CertificatePair], alpn: str) -> ssl.SSLContext:
        """A server context with every setting of the server and the
        certificates of ``pairs``."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.protocols(ctx)
        try:
            ctx.set_ciphers(self.ssl.ciphers)
        except ssl.SSLError:
            raise self.error(f'SSL_CTX_set_cipher_list("{self.ssl.ciphers}") failed') from None
        _set_option(ctx, ssl.OP_CIPHER_SERVER_PREFERENCE, self.ssl.prefer_server_ciphers)
        # nginx refuses client-initiated renegotiation (ngx_ssl_create_connection).
        _set_option(ctx, ssl.OP_NO_RENEGOTIATION, True)
        if self.ssl.dhparam is not None:
            self.dhparam(ctx, self.ssl.dhparam)
        if self.ssl.ecdh_curve != "auto":
            self.curve(ctx, self.ssl.ecdh_curve, '"ssl_ecdh_curve"')
        if not self.ssl.session_tickets:
            _set_option(ctx, ssl.OP_NO_TICKET, True)
            if not session_cache_stores(self.ssl.session_cache):
                ctx.num_tickets = 0
        if self.ssl.verify_client != "off":
            self.verification(ctx)
        ctx.set_alpn_protocols([alpn])
        for name, value in self.ssl.conf_commands:
            self.conf_command(ctx, name, value)
        for pair in pairs:
            self.certificate(ctx, pair)
        return ctx

    def protocols(self, ctx: ssl.SSLContext) -> None:
        """ssl_protocols: the lowest and highest listed TLS versions as the
        bounds, and the ones in between that are not listed switched off."""
        listed = [v for v in TLS_VERSIONS if v in self.ssl.protocols]
        if not listed:
            raise self.error('no TLS protocol is enabled by "ssl_protocols"')
        with _no_deprecation_warnings():  # TLSv1 and TLSv1.1, when listed
            ctx.minimum_version = TLS_VERSION[listed[0]]
            ctx.maximum_version = TLS_VERSION[listed[-1]]
        start, end = TLS_VERSIONS.index(listed[0]), TLS_VERSIONS.index(listed[-1])
        for version in TLS_VERSIONS[start:end + 1]:
            if version not in listed:
                _set_option(ctx, NO_VERSION[version], True)

    def dhparam(self, ctx: ssl.SSLContext, path: str) -> None:
        try:
            ctx.load_dh_params(path)
        except OSError as err:  # ssl.SSLError is an OSError too
            reason = err.strerror if not isinstance(err, ssl.SSLError) else _reason(err)
            raise self.error(f'cannot load DH parameters "{path}": {reason}') from None

    def curve(self, ctx: ssl.SSLContext, name: str, what: str) -> None:
        try:
            ctx.set_ecdh_curve(name)
        except ValueError:
            raise self.error(f'unknown curve "{name}" in {what}') from None

    def verification(self, ctx: ssl.SSLContext) -> None:
        """Ask for the client's certificate (CERT_OPTIONAL for on and
        optional: a missing one is checked after the handshake) against the
        CA files, and the CRL with nginx's flags (CRL_CHECK | CRL_CHECK_ALL)."""
        ctx.verify_mode = ssl.CERT_OPTIONAL
        for value in (self.ssl.client_certificate, self.ssl.trusted_certificate):
            if value is not None:
                self.trust(ctx, value)
        if self.ssl.crl is not None:
            self.crl(ctx, self.ssl.crl)

    def trust(self, ctx: ssl.SSLContext, value: str) -> None:
        ders = certificates(self._blocks(value, "certificate"))
        if not ders:
            raise self.error(f'cannot load certificate "{shown(value)}": no PEM certificate found')
        try:
            ctx.load_verify_locations(cadata=b"".join(ders))
        except ssl.SSLError as err:
            raise self.error(f'cannot load certificate "{shown(value)}": {_reason(err)}') from None

    def crl(self, ctx: ssl.SSLContext, value: str) -> None:
        """Only CRLs: loading the file through OpenSSL's cafile would also
        trust any certificate in it."""
        text = self.read(value, "CRL")
        labels = [label for label, _ in self._blocks(value, "CRL")]
        if not labels or any(label != "X509 CRL" for label in labels):
            raise self.error(f'cannot load CRL "{shown(value)}": the file must hold PEM CRLs only')
        with _file_for(value, text) as path:
            try:
                ctx.load_verify_locations(cafile=path)
            except ssl.SSLError as err:
                raise self.error(f'cannot load CRL "{shown(value)}": {_reason(err)}') from None
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN

    def certificate(self, ctx: ssl.SSLContext, pair: CertificatePair) -> None:
        """load_cert_chain with each password in turn (nginx tries them all)."""
        cert_text = self.read(pair.cert, "certificate")
        key_text = self.read(pair.key, "certificate key")
        failure: ssl.SSLError | None = None
        with _file_for(pair.cert, cert_text) as cert_path, \
                _file_for(pair.key, key_text) as key_path:
            for password in self.passwords:
                try:
                    ctx.load_cert_chain(cert_path, key_path, password=password)
                    return
                except ssl.SSLError as err:
                    failure = err
                    if err.reason in MISMATCH:
                        break
        assert failure is not None
        key = shown(pair.key)
        if failure.reason in MISMATCH:
            raise self.error(f'cannot load certificate key "{key}": it does not match '
                             f'certificate "{shown(pair.cert)}"')
        if b"ENCRYPTED" in key_text:
            if self.ssl.password_file is None:
                raise self.error(f'cannot load certificate key "{key}": the key is encrypted '
                                 'and no "ssl_password_file" is set')
            raise self.error(f'cannot load certificate key "{key}": no password in '
                             f'"{self.ssl.password_file}" decrypts it')
        raise self.error(f'cannot load certificate "{shown(pair.cert)}" with key "{key}": '
                         f"{_reason(failure)}")

    def conf_command(self, ctx: ssl.SSLContext, name: str, value: str) -> None:
        """Apply one ssl_conf_command (the config package accepted only the
        commands of CONF_COMMANDS, with valid names for Options/Protocol)."""
        kind = CONF_COMMANDS[name.lower()]
        failed = f'SSL_CONF_cmd("{name}", "{value}") failed'
        if kind == "options":
            for item in conf_items(value):
                bit, inverted = OPTIONS[item.lstrip("+-").lower()]
                _set_option(ctx, bit, (not item.startswith("-")) != inverted)
        elif kind == "protocol":
            for item in conf_items(value):
                version = item.lstrip("+-").lower()
                bits = sum(NO_PROTOCOL.values()) if version == "all" else NO_PROTOCOL[version]
                _set_option(ctx, bits, item.startswith("-"))
        elif kind == "ciphers":
            try:
                ctx.set_ciphers(value)
            except ssl.SSLError:
                raise self.error(failed) from None
        elif kind in ("min_protocol", "max_protocol"):
            version = BOUND_VERSION[value]
            try:
                with _no_deprecation_warnings():
                    if kind == "min_protocol":
                        ctx.minimum_version = version or ssl.TLSVersion.MINIMUM_SUPPORTED
                    else:
                        ctx.maximum_version = version or ssl.TLSVersion.MAXIMUM_SUPPORTED
            except ValueError:
                raise self.error(failed) from None
        elif kind == "curve":
            if value.lower() not in ("auto", "automatic"):
                self.curve(ctx, value, f'"ssl_conf_command {name}"')
        elif kind == "dhparam":
            self.dhparam(ctx, value)
        elif kind == "num_tickets":
            ctx.num_tickets = int(value)


@contextlib.contextmanager
def _no_deprecation_warnings() -> Iterator[None]:
    """Python warns about TLSv1/TLSv1.1 and OP_NO_TLS*; a configuration
    that asks for them (ssl_protocols, ssl_conf_command) gets them quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _set_option(ctx: ssl.SSLContext, bits: int, on: bool) -> None:
    with _no_deprecation_warnings():
        ctx.options = (ctx.options | bits) if on else (ctx.options & ~bits)


def _reason(err: ssl.SSLError) -> str:
    """OpenSSL's reason, readable: "key values mismatch", "PEM lib"."""
    if err.reason:
        return err.reason.replace("_", " ").lower()
    text = str(err.args[-1]) if err.args else str(err)
    return re.sub(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", text)


@contextlib.contextmanager
def _file_for(value: str, text: bytes) -> Iterator[str]:
    """A path OpenSSL can read ``value`` from: the file itself, or for
    ``data:`` an anonymous memory file (never on disk: it may be a key)."""
    if not is_data(value):
        yield value
        return
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("mailgate-tls", os.MFD_CLOEXEC)
        try:
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view):]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as directory:  # mode 0700
        path = os.path.join(directory, "pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(text)
        yield path
