"""Celery configuration of the gir-ops workers: Airflow's own, plus the libraries every RWS task imports.

A Celery worker forks a process per task instance, and that process imports what the task needs. The RWS
client goes through ``HttpHook``, whose module imports ``aiohttp`` (for the provider's async hook) and
``requests``: about 0.4 s of CPU in every re-index, failover and keystore task (``make bench``, engine
backfill row). Celery's ``imports`` setting loads them once in the worker's main process, before it
forks its pool, so every task process inherits them.

Only installed libraries are preloaded, never the project's ``include`` modules: a worker keeps what it
imported until it restarts, and a DAG bundle update must not leave tasks running yesterday's code.

Selected with ``[celery] celery_config_options = include.gir_ops.celery_worker.CELERY_CONFIG``
(docker-compose.yaml, deploy/helm/values.yaml and the engine tests set it).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

# What the tasks import through include.gir_ops.rws: the HTTP provider's hook (aiohttp with it) and requests.
PRELOADED_MODULES = ("requests", "airflow.providers.http.hooks.http")

CELERY_CONFIG: dict[str, Any] = {
    **DEFAULT_CELERY_CONFIG,
    "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), *PRELOADED_MODULES),
}
