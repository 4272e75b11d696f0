"""The syntax tree both configuration front-ends produce.

nginx syntax (``nginx.py``) and YAML (``yaml.py``) are two spellings of the
same thing: a list of directives, each with a name, string arguments, the
place it was written, and, for block directives such as ``mail`` or
``server``, the directives inside. ``build.py`` reads only these nodes, so the
directive rules (contexts, arity, values, inheritance) are written once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Directive:
    """One directive as written.

    ``block`` is None for a directive ended by ``;`` and a (possibly empty)
    tuple for one that opened a ``{`` block: the difference matters, nginx
    refuses ``mail;`` ("has no opening "{"") and ``timeout 5s {}`` ("is not
    terminated by ";""). ``line`` is the line nginx would report: the line
    of the ``;`` or ``{`` that ended the directive (for YAML, the key's line).
    """

    name: str
    args: tuple[str, ...]
    file: str
    line: int
    block: tuple[Directive, ...] | None = None

    @property
    def where(self) -> tuple[str, int]:
        """(file, line), ready to unpack into ``ConfigError``."""
        return (self.file, self.line)

