"""Value parsers for directive arguments, with nginx's syntax and wording.

Each parser takes the directive node and a ``Context`` and returns the
model value, or raises ``ConfigError`` located at the directive. The
messages are nginx's (``ngx_conf_file.c`` slots, ``ngx_parse.c``), so a
config that nginx rejects is rejected here with the same words.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailgate.config.nodes import Directive
from mailgate.errors import ConfigError

# A parser turns a directive's arguments into a model value.
Parser = Callable[[Directive, "Context"], Any]

# nginx keeps times and sizes in signed machine integers (NGX_MAX_INT_T_VALUE,
# NGX_MAX_SIZE_T_VALUE on 64-bit Linux); larger values are "invalid value".
MAX_INT = 2**63 - 1


@dataclass(slots=True)
class Context:
    """What parsers need beyond the node: where relative paths start, and
    where to record warnings (nginx logs them and carries on)."""

    base_dir: str
    warnings: list[str] = field(default_factory=list)

    def path(self, name: str) -> str:
        """nginx resolves relative paths against its prefix; mailgate uses the
        directory of the main configuration file, so a checkout or a package
        can ship relative paths next to the config."""
        return os.path.normpath(os.path.join(self.base_dir, name))

    def warn(self, message: str, d: Directive) -> None:
        self.warnings.append(f"{message} in {d.file}:{d.line}")


def fail(message: str, d: Directive) -> ConfigError:
    """A ConfigError located at ``d`` (to ``raise``)."""
    return ConfigError(message, d.file, d.line)


def directive_error(d: Directive, what: str) -> ConfigError:
    """nginx's handler-returned message: ``"timeout" directive invalid value``."""
    return fail(f'"{d.name}" directive {what}', d)


# --- numbers, sizes, times (ngx_parse.c) -----------------------------------


def atoi(text: str) -> int | None:
    """ngx_atoi: ASCII digits only (no sign, no spaces), None on error."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_INT else None


_SIZE_UNITS = {"k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024}


def parse_size(text: str) -> int | None:
    """ngx_parse_size: ``512``, ``4k``, ``1m``, ``1g`` (unit case-insensitive)."""
    scale = _SIZE_UNITS.get(text[-1:].lower(), 1)
    value = atoi(text[:-1] if scale != 1 else text)
    if value is None or value * scale > MAX_INT:
        return None
    return value * scale


# Time units in the order they must appear (ngx_parse_time's ``step``), with
# their length in milliseconds. "ms" is only valid where milliseconds are.
_TIME_UNITS: dict[str, tuple[int, int]] = {
    "y": (1, 365 * 86400_000),
    "M": (2, 30 * 86400_000),
    "w": (3, 7 * 86400_000),
    "d": (4, 86400_000),
    "h": (5, 3600_000),
    "m": (6, 60_000),
    "s": (7, 1000),
    "ms": (8, 1),
}
_MONTH_STEP = 2


def parse_time_ms(text: str, *, seconds_only: bool = False) -> int | None:
    """ngx_parse_time, in milliseconds: ``1h 30m``, ``1h30m``, ``500ms``,
    ``30`` (a bare number is seconds). Units must come in decreasing order,
    each once. Directives kept in milliseconds (``seconds_only`` False) do
    not accept years or months; ones kept in seconds do not accept ``ms``."""
    step = 0 if seconds_only else _MONTH_STEP
    total, value, digits, i = 0, 0, False, 0
    while i < len(text):
        ch = text[i]
        if ch.isascii() and ch.isdigit():
            value, digits, i = value * 10 + int(ch), True, i + 1
            continue
        unit = "ms" if text.startswith("ms", i) else ch
        if unit == " ":
            unit_step, scale = 9, 1000  # a bare number followed by a space
            if step >= _TIME_UNITS["s"][0]:
                return None
        elif unit in _TIME_UNITS:
            unit_step, scale = _TIME_UNITS[unit]
            if (unit == "ms" and seconds_only) or unit_step <= step:
                return None
        else:
            return None
        step, total, value = unit_step, total + value * scale, 0
        i += len(unit)
        while i < len(text) and text[i] == " ":
            i += 1
    if not digits:
        return None
    total += value * 1000
    return total if total <= MAX_INT else None


# --- parsers used by the directive table ------------------------------------


def p_string(d: Directive, ctx: Context) -> str:
    return d.args[0]


def p_strings(d: Directive, ctx: Context) -> tuple[str, ...]:
    return d.args


def p_path(d: Directive, ctx: Context) -> str:
    return ctx.path(d.args[0])


def p_flag(d: Directive, ctx: Context) -> bool:
    """ngx_conf_set_flag_slot: on/off, case-insensitive."""
    value = d.args[0].lower()
    if value not in ("on", "off"):
        raise fail(
            f'invalid value "{d.args[0]}" in "{d.name}" directive, it must be "on" or "off"', d
        )
    return value == "on"


def p_number(d: Directive, ctx: Context) -> int:
    """ngx_conf_set_num_slot."""
    value = atoi(d.args[0])
    if value is None:
        raise directive_error(d, "invalid number")
    return value


def p_size(d: Directive, ctx: Context) -> int:
    """ngx_conf_set_size_slot."""
    value = parse_size(d.args[0])
    if value is None:
        raise directive_error(d, "invalid value")
    return value


def p_msec(d: Directive, ctx: Context) -> float:
    """ngx_conf_set_msec_slot, returned in (float) seconds."""
    value = parse_time_ms(d.args[0])
    if value is None:
        raise directive_error(d, "invalid value")
    return value / 1000


def p_sec(d: Directive, ctx: Context) -> int:
    """ngx_conf_set_sec_slot: a time kept in whole seconds."""
    value = parse_time_ms(d.args[0], seconds_only=True)
    if value is None:
        raise directive_error(d, "invalid value")
    return value // 1000


def p_enum(*values: str) -> Parser:
    """ngx_conf_set_enum_slot: one of ``values``, case-insensitive."""

    def parse(d: Directive, ctx: Context) -> str:
        value = d.args[0].lower()
        if value not in values:
            raise fail(f'invalid value "{d.args[0]}"', d)
        return value

    return parse


def p_methods(*values: str) -> Parser:
    """ngx_conf_set_bitmask_slot (``*_auth``, ``ssl_protocols``): several
    values, case-insensitive; a repeated value is only a warning."""

    def parse(d: Directive, ctx: Context) -> tuple[str, ...]:
        lookup = {v.lower(): v for v in values}
        seen: list[str] = []
        for arg in d.args:
            value = lookup.get(arg.lower())
            if value is None:
                raise fail(f'invalid value "{arg}"', d)
            if value in seen:
                ctx.warn(f'duplicate value "{arg}"', d)
                continue
            seen.append(value)
        return tuple(seen)

    return parse


def p_pair(d: Directive, ctx: Context) -> tuple[str, str]:
    return (d.args[0], d.args[1])


def p_worker_processes(d: Directive, ctx: Context) -> int:
    """ngx_set_worker_processes: a number or ``auto`` (the CPU count)."""
    if d.args[0] == "auto":
        return os.cpu_count() or 1
    value = atoi(d.args[0])
    if value is None:
        raise directive_error(d, "invalid value")
    return value


def p_worker_connections(d: Directive, ctx: Context) -> int:
    """ngx_event_connections words its error differently from num_slot."""
    value = atoi(d.args[0])
    if value is None:
        raise fail(f'invalid number "{d.args[0]}"', d)
    return value


def p_user(d: Directive, ctx: Context) -> tuple[str, str | None]:
    """``user name [group]``: looked up by the master when it drops
    privileges, not here (nginx ignores it unless started as root)."""
    return (d.args[0], d.args[1] if len(d.args) > 1 else None)


def p_resolver(d: Directive, ctx: Context) -> tuple[str, ...]:
    """``resolver off`` or addresses with parameters; () means off."""
    if d.args == ("off",):
        return ()
    return d.args
