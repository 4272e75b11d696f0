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

import hashlib
import ssl
from dataclasses import dataclass
from typing import Any

from mailgate.auth import AuthTls
from mailgate.config.model import Config, Server
from mailgate.tls_context import CertificatePair, ContextBuilder
from mailgate.tls_facts import (
    certificate_facts,
    clean_host_name,
    client_hello_alpn,
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
        builder = ContextBuilder(server)
        builder.read_passwords()
        builder.check_ticket_keys()
        pairs = builder.pairs()
        if not pairs:
            raise builder.error('no "ssl_certificate" is defined for the server')
        groups: dict[frozenset[str], list[CertificatePair]] = {}
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
