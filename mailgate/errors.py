"""Error types shared across mailgate.

Errors are types, not strings: a configuration error carries the file and line
it was found at, and renders itself in nginx's wording ("... in FILE:LINE").
Nothing below ``cli.py`` exits the process; callers catch these.
"""

from __future__ import annotations


class MailgateError(Exception):
    """Base of every error mailgate raises on purpose."""


class ConfigError(MailgateError):
    """A configuration problem, located at ``file:line`` when known.

    ``str(err)`` is nginx's form: ``unknown directive "foo" in /etc/x.conf:12``.
    """

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        if self.file is None:
            return self.message
        if self.line is None:
            return f"{self.message} in {self.file}"
        return f"{self.message} in {self.file}:{self.line}"


class StartupError(MailgateError):
    """The server could not start (bind failure, pid file in use, ...)."""
