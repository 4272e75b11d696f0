"""xtext, the encoding of Postfix XCLIENT attribute values (RFC 3461 section 4).

Postfix's XCLIENT_README: "attribute-value = xtext". An xtext character is any
ASCII character from ``!`` (0x21) to ``~`` (0x7E) except ``+`` and ``=``;
every other byte is written ``+XX`` with two upper-case hex digits. nginx
encodes LOGIN= this way since 1.29.2 (SPEC 9.4): ``go od+x=`` becomes
``go+20od+2Bx+3D``. Encoded values never hold a space, CR or LF, so a value
cannot end the attribute or the command line early.
"""

from __future__ import annotations

from typing import Final

# RFC 3461 section 4: xchar = %x21-2A / %x2C-3C / %x3E-7E.
_FIRST_XCHAR: Final = 0x21
_LAST_XCHAR: Final = 0x7E
_ESCAPED: Final = frozenset(b"+=")
_ESCAPE: Final = "+"
_HEX_DIGITS: Final = frozenset(b"0123456789ABCDEF")


def _is_xchar(byte: int) -> bool:
    return _FIRST_XCHAR <= byte <= _LAST_XCHAR and byte not in _ESCAPED


# One precomputed output per input byte.
_TABLE: Final = tuple(
    bytes([byte]) if _is_xchar(byte) else f"{_ESCAPE}{byte:02X}".encode("ascii")
    for byte in range(256)
)


def encode(value: bytes) -> bytes:
    """``value`` as xtext."""
    return b"".join(_TABLE[byte] for byte in value)


def decode(value: bytes) -> bytes:
    """The bytes an xtext stands for; ValueError if it is not valid xtext
    (RFC 3461: ``+`` must be followed by two upper-case hex digits)."""
    out = bytearray()
    i = 0
    while i < len(value):
        byte = value[i]
        if byte == ord(_ESCAPE):
            digits = value[i + 1 : i + 3]
            if len(digits) != 2 or not set(digits) <= _HEX_DIGITS:
                raise ValueError(f"invalid xtext escape at offset {i}")
            out.append(int(digits, 16))
            i += 3
            continue
        if not _is_xchar(byte):
            raise ValueError(f"byte 0x{byte:02X} at offset {i} is not an xtext character")
        out.append(byte)
        i += 1
    return bytes(out)
