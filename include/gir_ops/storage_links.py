"""Symbolic links at a place this project writes: found with ``lstat``, never followed.

Shared by every writer (the backup destination, the RCS keystore replication), so "nothing outside the
configured path is touched" is one rule: a link is refused right before every write, rename and delete,
with an error naming it. Object stores have no links; there every check passes.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

# Stores with POSIX semantics (links, atomic rename, fsync).
LOCAL_PROTOCOLS = frozenset({"file", "local"})


def is_local(path: ObjectStoragePath) -> bool:
    return (path.protocol or "file") in LOCAL_PROTOCOLS


def link_target(path: ObjectStoragePath) -> str | None:
    """Where ``path`` points if it is a symbolic link on a local store (``lstat``: never followed).

    ``None`` when it is not a link, does not exist, or the store has no links (object stores).
    """
    if not is_local(path):
        return None
    try:
        mode = os.lstat(path.path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISLNK(mode):
        return None
    try:
        return os.readlink(path.path)
    except OSError:
        return "?"


def lexists(path: ObjectStoragePath) -> bool:
    """Exists, counting a dangling link as existing (local stores; elsewhere ``exists()``)."""
    if is_local(path):
        return os.path.lexists(path.path)
    return bool(path.exists())
