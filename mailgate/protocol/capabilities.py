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
