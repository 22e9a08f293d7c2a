"""Deprecated import path kept for triggers already stored by running deployments; remove after 0.2.0.

A ``verify_switch`` task deferred before the upgrade is stored by the triggerer as
``include.gir_ops.failover_triggers.EServicesSiteTrigger``; it resumes through this name. New triggers
serialize as ``include.gir_ops.failover.triggers.EServicesSiteTrigger``.
"""

from __future__ import annotations

from include.gir_ops.failover.triggers import EServicesSiteTrigger

__all__ = ["EServicesSiteTrigger"]
