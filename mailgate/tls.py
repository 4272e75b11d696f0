"""TLS for the client side: SSL contexts built from a server's ``ssl_*``
directives, certificate choice by SNI, the ALPN check, client certificates,
and the facts sent to the auth server. Imported by the workers (after
gevent's monkey patching, so ``ssl.SSLContext`` is gevent's) and by
``mailgate test`` through ``check()``; never by the master.

Use, in a worker::

    by_server = tls.load(config)            # ServerTls or None, per server
    sslsock = by_server[index].wrap(sock)   # implicit TLS, or after STARTTLS
    sslsock.do_handshake()                  # on failure: handshake_failure(err)
    problem = by_server[index].check_client(sslsock)  # SPEC 3.3: line, close
    auth_tls = by_server[index].facts(sslsock)        # AuthRequest.tls

Certificates and SNI (mailgate's own)
    nginx's mail proxy has one certificate set per server, several only for
    different key types. mailgate keeps that syntax and reads it further:
    every ``ssl_certificate``/``ssl_certificate_key`` pair is offered, and
    the client's SNI picks among them by the names *in* the certificates
    (subjectAltName DNS entries, or the subject's CN when there are none):
    an exact name first, then a wildcard ``*.example.com`` (one label, the
    leftmost). Certificates that list exactly the same names are served
    together, so an RSA and an ECDSA certificate for one name work as in
    nginx (OpenSSL picks by what the client supports). Without SNI, or when
    nothing matches, the first certificate (with its same-named partners) is
    served. The name the client asked for goes to the auth server as
    ``Auth-SSL-Server-Name`` (AuthTls.sni), lower-cased, and only if it is a
    plain host name (letters, digits, ``-``, ``_``, ``.``): anything else is
    ignored, as if the client had sent no SNI. Certificates are read when a
    worker starts, so a reload (new workers) re-reads them.

Where Python's ssl module makes mailgate differ from nginx
    * ``ssl_verify_client on|optional``: nginx lets every handshake finish
      (its verify callback always succeeds) and checks the result itself, so
      it can answer "SSL certificate error" in the protocol. Python's ssl has
      no verify callback: with CERT_OPTIONAL, OpenSSL aborts the handshake
      with a TLS alert (unknown_ca, certificate_expired, certificate_revoked,
      ...) when the client's certificate does not verify, and there is no
      TLS channel left to send the protocol's line on. The worker logs
      nginx's line ``client SSL certificate verify error: (<code>:<text>)``
      from the exception (``handshake_failure()``) and closes. A missing
      certificate with ``on`` is checked after the handshake, exactly as
      nginx (``check_client()``: "No required SSL certificate"). So
      ``Auth-SSL-Verify`` is SUCCESS or NONE, never FAILED.
    * ``ssl_verify_client optional_no_ca`` needs that callback: refused at
      load time.
    * ``ssl_verify_depth``: Python cannot set OpenSSL's depth; the depth is
      checked after the handshake on the verified chain, and a chain too
      long gets nginx's answer (error 22, "certificate chain too long", then
      the protocol's "SSL certificate error" line). nginx also drops such a
      session from its cache; Python cannot, so the refused certificates are
      remembered and their resumed sessions refused the same way.
    * ``ssl_client_certificate`` and ``ssl_trusted_certificate`` both only
      fill the trust store: Python cannot send the CA names list, so the
      CertificateRequest names no CAs.
    * ``ssl_session_cache``: Python cannot set OpenSSL's cache mode, size or
      timeout. Each worker keeps OpenSSL's built-in cache whatever the value
      (``shared`` is not shared between workers); ``off``/``none`` only stop
      TLSv1.3 stateful tickets when ``ssl_session_tickets`` is off.
      ``ssl_session_timeout`` cannot be applied: sessions live for OpenSSL's
      default (2 hours).
    * ``ssl_session_tickets off`` sets OP_NO_TICKET (and sends no TLSv1.3
      tickets at all when the cache is off/none). ``ssl_session_ticket_key``
      cannot be applied (no ticket key API): each worker has random keys,
      so tickets resume only on the worker that issued them; the file is
      still checked (48 or 80 bytes) and the config load warns.
    * ``ssl_ecdh_curve``: one curve or ``auto`` (Python sets one curve); a
      list is refused at load time.
    * ``ssl_conf_command``: the commands Python's ssl can express are applied
      (Options, Protocol, CipherString, MinProtocol, MaxProtocol, Groups,
      Curves, ECDHParameters, DHParameters, NumTickets); any other is
      refused at load time (notably Ciphersuites: TLSv1.3 suites cannot be
      set from Python 3.11).
    * ALPN: Python's ALPN callback never fails a handshake, so the check is
      done in the SNI callback (which OpenSSL runs for every ClientHello,
      before ALPN), from the ALPN list read off the ClientHello by a message
      callback: a client that offers ALPN without the server's protocol name
      gets the fatal alert no_application_protocol, as from nginx. The
      message callback is CPython's ``SSLContext._msg_callback``; without it
      the check is skipped (ALPN is then simply not negotiated).
    * TLSv1 and TLSv1.1 are enabled when listed, but OpenSSL 3 refuses them
      at its default security level unless ``ssl_ciphers`` lowers it
      (``@SECLEVEL=0``), as with nginx. SSLv2/SSLv3 are not available.
    * Key passwords: every line of ``ssl_password_file`` is tried, as nginx
      does; a key that is encrypted with no password file fails (never a
      prompt).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import ssl
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mailgate.auth import AuthTls
from mailgate.config.model import Config, Server, Ssl
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
from mailgate.tls_facts import (
    Certificate,
    certificate_facts,
    certificates,
    clean_host_name,
    client_hello_alpn,
    pem_blocks,
)

__all__ = [
    "ClientCertProblem",
    "ServerTls",
    "check",
    "facts",
    "handshake_failure",
    "load",
    "server_name",
]

# TLS alert no_application_protocol (RFC 7301); not in Python 3.11's ssl.
ALERT_NO_APPLICATION_PROTOCOL = 120
# X509_V_ERR_CERT_CHAIN_TOO_LONG and its text (X509_verify_cert_error_string).
CHAIN_TOO_LONG = (22, "certificate chain too long")
# Content and message types of a ClientHello, for the message callback.
HANDSHAKE, CLIENT_HELLO = 22, 1

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


# --- per-connection state ---------------------------------------------------------


@dataclass(slots=True)
class Hello:
    """What the ClientHello said: the SNI name (cleaned, "" if none) and the
    ALPN list (None: no ALPN extension)."""

    server_name: str = ""
    alpn: tuple[str, ...] | None = None


def _hello(conn: Any) -> Hello:
    """The Hello kept on an SSL socket (or SSLObject) during its handshake."""
    hello = getattr(conn, "_mailgate_hello", None)
    if hello is None:
        hello = Hello()
        conn._mailgate_hello = hello
    return hello


def _record_hello(conn: Any, direction: str, version: Any, content_type: Any,
                  msg_type: Any, data: bytes) -> None:
    """Message callback: keep the ClientHello's ALPN list for the SNI
    callback, which OpenSSL calls next (before it chooses ALPN)."""
    if direction != "read" or content_type != HANDSHAKE or msg_type != CLIENT_HELLO:
        return
    try:
        _hello(conn).alpn = client_hello_alpn(data)
    except ValueError:
        pass  # OpenSSL refuses a malformed ClientHello itself


def server_name(sslsock: Any) -> str:
    """The SNI name the client asked for ("" if none or not a host name)."""
    hello = getattr(sslsock, "_mailgate_hello", None)
    return hello.server_name if hello is not None else ""


# --- building contexts ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pair:
    """One certificate with its key, and the names it is for."""

    cert: str
    key: str
    names: tuple[str, ...]


@dataclass(slots=True)
class _Builder:
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

    def pairs(self) -> list[_Pair]:
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
            pairs.append(_Pair(cert, key, first.host_names))
        return pairs

    def _blocks(self, value: str, what: str) -> list[tuple[str, bytes]]:
        text = self.read(value, what)
        try:
            return pem_blocks(text)
        except ValueError as err:
            raise self.error(f'cannot load {what} "{shown(value)}": {err}') from None

    def context(self, pairs: list[_Pair], alpn: str) -> ssl.SSLContext:
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

    def certificate(self, ctx: ssl.SSLContext, pair: _Pair) -> None:
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


# --- the server's TLS ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientCertProblem:
    """A client certificate refused after the handshake (SPEC 3.3): ``kind``
    is "certificate error" or "no certificate" (which protocol line to send
    before closing); ``log`` is nginx's info message."""

    kind: str
    log: str


class ServerTls:
    """The SSL contexts of one server: ``context`` (the one to wrap client
    sockets with, for implicit TLS and STARTTLS alike) serves the first
    certificate; the SNI callback switches a connection to the context of
    the certificate its name matches."""

    def __init__(self, server: Server, identities: list[tuple[tuple[str, ...], ssl.SSLContext]]):
        self.server = server
        self.alpn = server.protocol
        self.identities = tuple(identities)
        self.context = identities[0][1]
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}
        # Client certificates refused for their chain's length (SHA-256 of
        # the DER): bounded by the distinct certificates a trusted CA issued.
        self.refused: set[bytes] = set()
        for names, ctx in identities:
            for name in names:
                if name.startswith("*."):
                    self.wildcard.setdefault(name[2:], ctx)
                elif "*" not in name:
                    self.exact.setdefault(name, ctx)
        for _names, ctx in identities:
            ctx.sni_callback = self._on_client_hello
        if hasattr(self.context, "_msg_callback"):
            self.context._msg_callback = _record_hello

    @classmethod
    def from_server(cls, server: Server) -> ServerTls:
        """Read and load everything the server's ssl_* directives name.
        Raises ConfigError (at the server's file:line) naming the file."""
        builder = _Builder(server)
        builder.read_passwords()
        builder.check_ticket_keys()
        pairs = builder.pairs()
        if not pairs:
            raise builder.error('no "ssl_certificate" is defined for the server')
        groups: dict[frozenset[str], list[_Pair]] = {}
        for pair in pairs:
            groups.setdefault(frozenset(pair.names), []).append(pair)
        identities = [(group[0].names, builder.context(group, server.protocol))
                      for group in groups.values()]
        return cls(server, identities)

    def select(self, name: str) -> ssl.SSLContext:
        """The context for an SNI name (already cleaned): exact name, then
        wildcard, then the first certificate's."""
        if name:
            ctx = self.exact.get(name)
            if ctx is None and "." in name:
                ctx = self.wildcard.get(name.split(".", 1)[1])
            if ctx is not None:
                return ctx
        return self.context

    def _on_client_hello(self, conn: Any, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        """SNI callback, run by OpenSSL for every ClientHello (with or
        without SNI), before ALPN is chosen."""
        hello = _hello(conn)
        hello.server_name = clean_host_name(name)
        if hello.alpn is not None and self.alpn not in hello.alpn:
            return ALERT_NO_APPLICATION_PROTOCOL
        target = self.select(hello.server_name)
        if conn.context is not target:
            conn.context = target
        return None

    def wrap(self, sock: Any, **kwargs: Any) -> Any:
        """``sock`` as the server side of a TLS connection (no handshake
        unless ``do_handshake_on_connect`` is passed true)."""
        kwargs.setdefault("do_handshake_on_connect", False)
        return self.context.wrap_socket(sock, server_side=True, **kwargs)

    def check_client(self, sslsock: Any) -> ClientCertProblem | None:
        """SPEC 3.3 after a completed handshake: a certificate ``on`` needs
        but did not get, or a chain longer than ``ssl_verify_depth``."""
        verify = self.server.ssl.verify_client
        if verify == "off":
            return None
        if sslsock.getpeercert(binary_form=True) is None:
            if verify == "on":
                return ClientCertProblem("no certificate", "client sent no required SSL certificate")
            return None
        if self._too_deep(sslsock):
            code, text = CHAIN_TOO_LONG
            return ClientCertProblem("certificate error",
                                     f"client SSL certificate verify error: ({code}:{text})")
        return None

    def _too_deep(self, sslsock: Any) -> bool:
        """OpenSSL's depth limit: ``ssl_verify_depth`` intermediates plus the
        trust anchor. A resumed session has no verified chain, and nginx
        drops a refused session from its cache, which Python cannot do: the
        leaf certificates refused on a full handshake are remembered, so
        their sessions are refused again. Sessions only resume on the worker
        (and contexts) that made them, so this worker saw the full handshake."""
        mark = hashlib.sha256(sslsock.getpeercert(binary_form=True)).digest()
        chain = _verified_chain(sslsock)
        if chain is None:
            return mark in self.refused
        if len(chain) > self.server.ssl.verify_depth + 2:
            self.refused.add(mark)
            return True
        return False

    def facts(self, sslsock: Any) -> AuthTls:
        return facts(sslsock, self.server.ssl.verify_client,
                     self.server.auth_http_pass_client_cert)


def _verified_chain(sslsock: Any) -> list[Any] | None:
    """The verified chain, leaf first (public in Python 3.13, on the
    internal object before)."""
    getter = getattr(sslsock, "get_verified_chain", None)
    if getter is None:
        getter = getattr(getattr(sslsock, "_sslobj", None), "get_verified_chain", None)
    return getter() if getter is not None else None


def handshake_failure(exc: BaseException) -> str | None:
    """nginx's info line when a handshake failed on the client's
    certificate (OpenSSL refused it: see the module's notes), else None."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"client SSL certificate verify error: ({exc.verify_code}:{exc.verify_message})"
    return None


def facts(sslsock: Any, verify_client: str, pass_cert: bool) -> AuthTls:
    """The Auth-SSL-* values of a connection after its handshake."""
    cipher = sslsock.cipher()
    result: dict[str, str] = {
        "protocol": sslsock.version() or "",
        "cipher": cipher[0] if cipher else "",
        "sni": server_name(sslsock),
    }
    if verify_client != "off":
        der = sslsock.getpeercert(binary_form=True)
        result["verify"] = "NONE" if der is None else "SUCCESS"
        if der is not None:
            result.update(certificate_facts(der, pass_cert))
    return AuthTls(**result)


# --- whole configurations -------------------------------------------------------------


def load(config: Config) -> tuple[ServerTls | None, ...]:
    """A ServerTls for each server of ``config`` that uses TLS (None for the
    others), in ``config.servers`` order. Raises ConfigError."""
    return tuple(ServerTls.from_server(server) if server.uses_tls else None
                 for server in config.servers)


def check(config: Config) -> None:
    """Load every certificate, key, CA, CRL and parameter file of
    ``config`` (``mailgate test``). Raises ConfigError."""
    load(config)
