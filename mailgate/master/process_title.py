"""Process titles as nginx shows them in ps: ``mailgate: master process ...``."""

from __future__ import annotations

try:
    from setproctitle import setproctitle as _setproctitle
except ImportError:  # pragma: no cover - a dependency; titles are cosmetic
    _setproctitle = None


def set_title(title: str) -> None:
    if _setproctitle is not None:
        _setproctitle(title)
