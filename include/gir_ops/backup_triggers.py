"""Deprecated import path kept for triggers already stored by running deployments; remove after 0.2.0.

A deferred ``wait_for_backup`` stored before the move names
``include.gir_ops.backup_triggers.BackupReadyTrigger``; the triggerer still finds it here. New triggers
serialize as ``include.gir_ops.backup.triggers.BackupReadyTrigger``.
"""

from __future__ import annotations

from include.gir_ops.backup.triggers import BackupReadyTrigger

__all__ = ["BackupReadyTrigger"]
