"""The native YAML front-end: the same directives, spelled as YAML.

The file is composed, not loaded (``yaml.compose``): every scalar stays the
string it was written as (``off``, ``yes``, ``0755`` and ``1.10`` are not
turned into booleans or numbers) and every node keeps its line, so errors
point at the line of the key, like nginx's do.

Shape (keys are directive names)::

    worker_processes: auto              # unquoted scalar: split on whitespace
    events: {worker_connections: 1024}  # or worker_connections at top level
    mail:
      smtp_capabilities: ["SIZE 10485760", 8BITMIME]  # list: one argument each
      auth_http_header: {X-Auth-Key: "secret string"} # mapping: one line per key
      servers:                          # list of server {} blocks
        - listen: [127.0.0.1:1110, "[::1]:1110 bind"]
          protocol: pop3

A quoted scalar is one argument. Directives whose every line is an entry of
its own (``listen``, ``error_log``, ``auth_http_header``, ``env``...) take a
list of entries, each a scalar (always split, as YAML often forces quotes
around addresses) or a list of arguments. ``include: PATTERN`` reads other
YAML files holding directives of the same block. YAML merge keys
(``<<: *defaults``) work; keys written in the mapping itself win.
"""

from __future__ import annotations

import glob
import os
from dataclasses import replace

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mailgate.config.directives import is_block, is_repeatable
from mailgate.config.nginx import MAX_INCLUDE_DEPTH, read_text
from mailgate.config.nodes import Directive
from mailgate.errors import ConfigError

MERGE_TAG = "tag:yaml.org,2002:merge"
# Keys that hold server {} blocks: "servers" reads best for a list.
SERVER_KEYS = ("servers", "server")
# Accepted at the top level as a shorthand for events: {worker_connections: N}.
EVENTS_SHORTHAND = ("worker_connections",)


def parse(path: str) -> tuple[Directive, ...]:
    """Parse a YAML configuration into directive nodes."""
    path = os.path.abspath(path)
    reader = _Reader(os.path.dirname(path))
    return tuple(_fold_events(reader.read_file(path, 0), path))


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _Reader:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def read_file(self, path: str, depth: int,
                  where: tuple[str | None, int | None] = (None, None)) -> list[Directive]:
        text = read_text(path, where)
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            line = mark.line + 1 if mark is not None else None
            raise ConfigError(f"invalid YAML: {err.problem or err.context}", path, line) from None
        except yaml.YAMLError as err:
            raise ConfigError(f"invalid YAML: {err}", path) from None
        if root is None or (isinstance(root, ScalarNode) and root.value == ""):
            return []
        if not isinstance(root, MappingNode):
            raise ConfigError("a YAML configuration must be a mapping of directives",
                              path, _line(root))
        return self.mapping(root, path, depth)

    def mapping(self, node: MappingNode, file: str, depth: int) -> list[Directive]:
        """The directives of one block, in the order written."""
        out: list[Directive] = []
        for key, value in _pairs(node):
            if not isinstance(key, ScalarNode):
                raise ConfigError("a directive name must be a plain string", file, _line(key))
            out.extend(self.entry(key.value, value, file, _line(key), depth))
        return out

    def entry(self, name: str, value: Node, file: str, line: int,
              depth: int) -> list[Directive]:
        """One key: usually one directive, several for lists of entries."""
        if name == "include":
            return self.include(value, file, line, depth)
        if name in SERVER_KEYS:
            items = value.value if isinstance(value, SequenceNode) else [value]
            return [self.block("server", item, file, depth, name) for item in items]
        if is_block(name) and isinstance(value, MappingNode):
            return [Directive(name, (), file, line, tuple(self.mapping(value, file, depth)))]
        if is_block(name) and _is_empty(value):
            return [Directive(name, (), file, line, ())]
        if is_repeatable(name):
            return _entries(name, value, file, line)
        return [Directive(name, _args(name, value, file, line), file, line)]

    def block(self, name: str, node: Node, file: str, depth: int, key: str) -> Directive:
        if not isinstance(node, MappingNode):
            raise ConfigError(f'"{key}" must be a list of server mappings', file, _line(node))
        return Directive(name, (), file, _line(node), tuple(self.mapping(node, file, depth)))

    def include(self, value: Node, file: str, line: int, depth: int) -> list[Directive]:
        """Other YAML files whose directives belong to this block; relative
        patterns start from the main configuration's directory."""
        if depth >= MAX_INCLUDE_DEPTH:
            raise ConfigError("include nesting too deep", file, line)
        out: list[Directive] = []
        for arg, at in _entry_list("include", value, file, line):
            if len(arg) != 1:
                raise ConfigError('invalid number of arguments in "include" directive', file, at)
            pattern = os.path.join(self.prefix, arg[0])
            magic = any(c in arg[0] for c in "*?[")
            for name in sorted(glob.glob(pattern)) if magic else [pattern]:
                out.extend(self.read_file(os.path.normpath(name), depth + 1, (file, at)))
        return out


def _pairs(node: MappingNode) -> list[tuple[Node, Node]]:
    """The mapping's pairs with YAML merge keys expanded; a key written in
    the mapping itself overrides a merged one (YAML 1.1 merge semantics)."""
    own = [(k, v) for k, v in node.value if k.tag != MERGE_TAG]
    merged: list[tuple[Node, Node]] = []
    for key, value in node.value:
        if key.tag != MERGE_TAG:
            continue
        sources = value.value if isinstance(value, SequenceNode) else [value]
        for source in sources:
            if isinstance(source, MappingNode):
                merged.extend(_pairs(source))
    names = {k.value for k, _ in own if isinstance(k, ScalarNode)}
    return [(k, v) for k, v in merged
            if not isinstance(k, ScalarNode) or k.value not in names] + own


def _is_empty(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.style is None and node.value in ("", "~", "null")


def _scalar_args(node: ScalarNode, split: bool) -> tuple[str, ...]:
    """A plain scalar is split on whitespace; a quoted one is one argument."""
    if split or node.style is None:
        return tuple(node.value.split())
    return (node.value,)


def _args(name: str, value: Node, file: str, line: int) -> tuple[str, ...]:
    """The arguments of a directive written once."""
    if isinstance(value, ScalarNode):
        return _scalar_args(value, split=False)
    if isinstance(value, SequenceNode) and all(isinstance(v, ScalarNode) for v in value.value):
        return tuple(v.value for v in value.value)
    raise ConfigError(f'"{name}" directive invalid value', file, line)


def _entry_list(name: str, value: Node, file: str,
                line: int) -> list[tuple[tuple[str, ...], int]]:
    """(arguments, line) of each entry of a directive whose lines are
    separate entries: at the line of its list item or mapping key."""
    if isinstance(value, ScalarNode):
        return [(_scalar_args(value, split=True), line)]
    if isinstance(value, MappingNode):
        return [((k.value, *_args(name, v, file, _line(k))), _line(k)) for k, v in _pairs(value)]
    entries = []
    for item in value.value:
        args = (_scalar_args(item, split=True) if isinstance(item, ScalarNode)
                else _args(name, item, file, _line(item)))
        entries.append((args, _line(item)))
    return entries


def _entries(name: str, value: Node, file: str, line: int) -> list[Directive]:
    return [Directive(name, args, file, at) for args, at in _entry_list(name, value, file, line)]


def _fold_events(nodes: list[Directive], file: str) -> list[Directive]:
    """Move top-level ``worker_connections`` into ``events {}`` (creating it
    where the first one was written), so build sees nginx's structure."""
    moved = tuple(d for d in nodes if d.name in EVENTS_SHORTHAND and d.block is None)
    if not moved:
        return nodes
    has_events = any(d.name == "events" and d.block is not None for d in nodes)
    out, placed = [], False
    for d in nodes:
        if d.name in EVENTS_SHORTHAND and d.block is None:
            if not has_events and not placed:
                out.append(Directive("events", (), file, d.line, moved))
                placed = True
            continue
        if d.name == "events" and d.block is not None and not placed:
            d, placed = replace(d, block=d.block + moved), True
        out.append(d)
    return out
