"""Capability and SASL mechanism lists, built once from the settings.

nginx computes these replies when it reads the configuration, not per
session (``ngx_mail_pop3_merge_conf``); mailgate caches them per settings
object, which the worker builds once per server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from mailgate.protocol.base import wire

# Advertised in this fixed order whatever the order in *_auth (SPEC 2.10):
# (*_auth method, SASL mechanism name).
SASL_ORDER: Final = (
    ("plain", "PLAIN"),
    ("login", "LOGIN"),
    ("cram-md5", "CRAM-MD5"),
    ("external", "EXTERNAL"),
)

CRLF: Final = b"\r\n"


def sasl_mechanisms(methods: Iterable[str]) -> tuple[str, ...]:
    """The SASL mechanism names to advertise for these *_auth methods."""
    enabled = {method.lower() for method in methods}
    return tuple(name for method, name in SASL_ORDER if method in enabled)


@dataclass(frozen=True, slots=True)
class Pop3Lists:
    """The POP3 CAPA and AUTH replies (SPEC 5.3), complete with ``.\\r\\n``."""

    capa: bytes  # TLS active, starttls off, or in the USER state
    capa_starttls: bytes  # starttls on, no TLS yet: adds STLS
    capa_starttls_only: bytes  # starttls only, no TLS yet: no USER, no SASL
    auth: bytes  # AUTH without arguments


def pop3_lists(capabilities: Sequence[str], auth_methods: Iterable[str]) -> Pop3Lists:
    """Build the POP3 lists from pop3_capabilities and pop3_auth."""
    methods = {method.lower() for method in auth_methods}
    if "plain" in methods:
        # pop3_auth plain covers USER/PASS, AUTH PLAIN and AUTH LOGIN (SPEC 2.7).
        methods.add("login")
    mechanisms = sasl_mechanisms(methods)
    caps = [wire(cap) + CRLF for cap in capabilities]
    # RFC 2449 section 6.3: SASL followed by the mechanisms. nginx writes the
    # line even when there is no mechanism to list.
    sasl = b"".join([b"SASL", *(b" " + wire(name) for name in mechanisms), CRLF])
    head = b"+OK Capability list follows" + CRLF
    end = b"." + CRLF
    stls = b"STLS" + CRLF
    # With starttls only, USER (RFC 2449 section 6.8) must not be offered
    # before TLS (SPEC 5.3).
    caps_without_user = [cap for cap, raw in zip(caps, capabilities) if raw.upper() != "USER"]
    return Pop3Lists(
        capa=b"".join([head, *caps, sasl, end]),
        capa_starttls=b"".join([head, *caps, sasl, stls, end]),
        capa_starttls_only=b"".join([head, *caps_without_user, stls, end]),
        auth=b"".join(
            [b"+OK methods supported:" + CRLF, *(wire(name) + CRLF for name in mechanisms), end]
        ),
    )


# --- SMTP ---------------------------------------------------------------------

# EHLO keywords never advertised, whatever smtp_capabilities lists: RFC 3030
# CHUNKING (the BDAT command) and BINARYMIME (which requires CHUNKING). nginx
# copies smtp_capabilities verbatim, and a client that believed it sent BDAT
# which the pre-login tokenizer cannot parse: nginx answered and closed, and
# the mail was silently lost (Mailu issue 1766, PEERS.md). The EHLO list a
# client sees is mailgate's, not the backend's, so BDAT is not known to be
# relayed end to end; see mailgate.protocol.smtp for the whole reasoning.
SMTP_WITHHELD_KEYWORDS: Final = frozenset({"CHUNKING", "BINARYMIME"})


def smtp_keyword(capability: str) -> str:
    """The EHLO keyword of a capability line (RFC 5321 section 4.1.1.1:
    ``ehlo-keyword *(SP ehlo-param)``), upper-cased."""
    words = capability.split()
    return words[0].upper() if words else ""


def smtp_advertised(capabilities: Iterable[str]) -> tuple[str, ...]:
    """smtp_capabilities without the withheld keywords."""
    return tuple(cap for cap in capabilities if smtp_keyword(cap) not in SMTP_WITHHELD_KEYWORDS)


@dataclass(frozen=True, slots=True)
class SmtpLists:
    """The fixed SMTP replies of a server (SPEC 3.4, 7.4, 7.5)."""

    greeting: bytes  # 220 <server_name> ESMTP ready
    helo: bytes  # the HELO reply: 250 <server_name>
    ehlo: bytes  # TLS active, or starttls off
    ehlo_starttls: bytes  # starttls on, no TLS yet: STARTTLS appended
    ehlo_starttls_only: bytes  # starttls only, no TLS yet: STARTTLS, no AUTH


def _smtp_multiline(lines: Sequence[bytes]) -> bytes:
    # RFC 5321 section 4.2.1: "250-" on every line but the last, "250 " there.
    last = len(lines) - 1
    return b"".join(
        (b"250 " if i == last else b"250-") + line + CRLF for i, line in enumerate(lines)
    )


def smtp_lists(
    server_name: str, capabilities: Sequence[str], auth_methods: Iterable[str]
) -> SmtpLists:
    """Build the SMTP replies from server_name, smtp_capabilities and smtp_auth.

    ``none`` is never listed; the mechanisms come in the fixed order of
    ``SASL_ORDER`` (SPEC 2.10), on one ``AUTH`` line (RFC 4954 section 3).
    """
    name = wire(server_name)
    head = [name, *(wire(cap) for cap in smtp_advertised(capabilities))]
    mechanisms = sasl_mechanisms(auth_methods)
    auth = [b" ".join([b"AUTH", *(wire(mech) for mech in mechanisms)])] if mechanisms else []
    starttls = [b"STARTTLS"]  # RFC 3207 section 4
    return SmtpLists(
        greeting=b"220 " + name + b" ESMTP ready" + CRLF,
        helo=b"250 " + name + CRLF,
        ehlo=_smtp_multiline(head + auth),
        ehlo_starttls=_smtp_multiline(head + auth + starttls),
        ehlo_starttls_only=_smtp_multiline(head + starttls),
    )


# --- IMAP ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImapCapabilities:
    """The IMAP ``* CAPABILITY`` lines (SPEC 6.4), each with its CRLF."""

    normal: bytes  # TLS active or starttls off
    starttls: bytes  # starttls on, no TLS yet: adds STARTTLS
    starttls_only: bytes  # starttls only, no TLS yet: no AUTH=, LOGINDISABLED


def imap_capabilities(capabilities: Sequence[str], auth_methods: Iterable[str]) -> ImapCapabilities:
    """Build the IMAP lines from imap_capabilities and imap_auth.

    Extensions such as SASL-IR (RFC 4959), LITERAL+ (RFC 7888) or ID
    (RFC 2971) are advertised only when imap_capabilities lists them, as in
    nginx, although mailgate always accepts them.
    """
    head = b"* CAPABILITY" + b"".join(b" " + wire(cap) for cap in capabilities)
    # RFC 3501 section 6.2.2: AUTH=<mechanism> for each SASL mechanism.
    auths = b"".join(b" AUTH=" + wire(name) for name in sasl_mechanisms(auth_methods))
    return ImapCapabilities(
        normal=head + auths + CRLF,
        starttls=head + auths + b" STARTTLS" + CRLF,
        # RFC 3501 section 6.2.3: LOGINDISABLED while LOGIN is refused
        # before TLS; no mechanism is offered either (SPEC 6.4).
        starttls_only=head + b" STARTTLS LOGINDISABLED" + CRLF,
    )
