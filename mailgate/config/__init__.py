"""mailgate's configuration: two syntaxes, one frozen model.

``load(path)`` reads ``*.yaml``/``*.yml`` files as YAML and anything else
as nginx syntax (so an existing ``nginx.conf`` with a ``mail {}`` block
works), applies the directive table, and returns a ``Config``. Every problem
is a ``ConfigError`` worded as nginx words it, located at file:line.

This package imports no runtime module (no gevent, requests or ssl): the
master loads and validates configurations before it forks anything.
"""

from __future__ import annotations

import os

from mailgate.config import nginx, yaml
from mailgate.config.build import build
from mailgate.config.directives import (
    DIRECTIVES,
    LISTEN_PARAMETERS,
    PROTOCOLS,
    Merge,
    Spec,
)
from mailgate.config.model import Config
from mailgate.config.nodes import Directive

__all__ = [
    "DIRECTIVES",
    "LISTEN_PARAMETERS",
    "PROTOCOLS",
    "YAML_SUFFIXES",
    "Config",
    "Directive",
    "Merge",
    "Spec",
    "load",
    "load_with_warnings",
    "parse",
]

YAML_SUFFIXES = (".yaml", ".yml")


def parse(path: str) -> tuple[Directive, ...]:
    """The directive nodes of ``path`` (includes expanded), by its syntax."""
    if os.path.splitext(path)[1].lower() in YAML_SUFFIXES:
        return yaml.parse(path)
    return nginx.parse(path)


def load_with_warnings(path: str) -> tuple[Config, list[str]]:
    """The configuration at ``path`` and the warnings to log (nginx
    directives that are skipped, repeated values), each ending
    "in FILE:LINE". Raises ConfigError."""
    return build(parse(path), path)


def load(path: str) -> Config:
    """The configuration at ``path``. Raises ConfigError."""
    return load_with_warnings(path)[0]
