"""The ``user`` directive: the master binds as root, workers run as ``user``."""

from __future__ import annotations

import grp
import os
import pwd

from mailgate.errors import StartupError


def lookup_user(user: tuple[str, str | None]) -> tuple[int, int]:
    """(uid, gid) for nginx's ``user name [group]``; the group defaults to the
    user's primary group."""
    name, group = user
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise StartupError(f'getpwnam("{name}") failed') from None
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise StartupError(f'getgrnam("{group}") failed') from None
    return entry.pw_uid, gid


def drop_privileges(user: tuple[str, str | None] | None) -> None:
    """In a worker: become ``user`` when started as root (nginx ignores
    ``user`` when the master is not root, and so do we)."""
    if user is None or os.geteuid() != 0:
        return
    uid, gid = lookup_user(user)
    os.setgroups([])
    os.initgroups(user[0], gid)
    os.setgid(gid)
    os.setuid(uid)
