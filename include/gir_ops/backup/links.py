"""The destination is never escaped through a symbolic link.

On local stores a symbolic link anywhere at the destination (staging folder, published copy, retention
candidate, a file or folder inside them, and the destination root unless
``shipping.destination_may_be_link``) is refused with an error naming it, checked with ``lstat`` right
before every write, rename and delete: nothing is followed, written or deleted through a link. Object
stores have no links; there every check passes. Finding a link is ``include/gir_ops/storage_links.py``,
shared with the RCS keystore replication.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from include.gir_ops.backup.errors import BackupRefused
from include.gir_ops.backup.tree import entries, is_local, printable
from include.gir_ops.storage_links import lexists, link_target

__all__ = [
    "check_destination_root",
    "lexists",
    "link_target",
    "refuse_link",
    "refuse_links_inside",
    "refuse_links_on_the_way",
]

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


def refuse_link(path: ObjectStoragePath, role: str) -> None:
    """``BackupRefused`` naming ``path``, its ``role`` and where it points, if it is a link."""
    target = link_target(path)
    if target is not None:
        raise BackupRefused(
            f"{path} ({role}) is a symbolic link to {printable(target)}: this DAG never follows, writes, "
            "renames or deletes through a link at the destination; remove the link (and find out who "
            "made it), then rerun"
        )


def refuse_links_on_the_way(base: ObjectStoragePath, relative: str, role: str) -> None:
    """No component of ``base/relative`` (``base`` included) is a link: checked right before a write."""
    refuse_link(base, role)
    current = base
    for part in relative.split("/"):
        current = current / part
        refuse_link(current, role)


def refuse_links_inside(folder: ObjectStoragePath, role: str) -> None:
    """``folder`` and nothing inside it is a link (one listing): checked before a tree is deleted."""
    refuse_link(folder, role)
    if not is_local(folder) or not lexists(folder):
        return
    for relative, info in entries(folder):
        if info.get("islink"):
            name = relative if isinstance(relative, str) else str(info.get("name"))
            refuse_link(folder / name, f"inside the {role}")


def check_destination_root(root: ObjectStoragePath, *, may_be_link: bool) -> None:
    """Refuse a destination root that is a symbolic link, unless ``shipping.destination_may_be_link``."""
    if may_be_link:
        return
    target = link_target(root)
    if target is not None:
        raise BackupRefused(
            f"the destination {root} is a symbolic link to {printable(target)}; this DAG does not follow "
            "it: point shipping.destination at the real folder, or set shipping.destination_may_be_link: "
            "true if the link is intended (links below it are still refused)"
        )
