"""The workers' Celery configuration: Airflow's own, plus preloaded HTTP libraries, and nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

from include.gir_ops.celery_worker import CELERY_CONFIG, PRELOADED_MODULES

REPO_ROOT = Path(__file__).resolve().parents[2]
OPTION = "include.gir_ops.celery_worker.CELERY_CONFIG"


def test_airflows_settings_are_kept_and_only_libraries_are_preloaded() -> None:
    assert {k: v for k, v in CELERY_CONFIG.items() if k != "imports"} == {
        k: v for k, v in DEFAULT_CELERY_CONFIG.items() if k != "imports"
    }
    assert set(PRELOADED_MODULES) <= set(CELERY_CONFIG["imports"])
    # Never the project's own modules: a long-lived worker would keep running old code after an update.
    assert not [name for name in CELERY_CONFIG["imports"] if name.split(".")[0] in {"include", "dags"}]


def test_a_worker_built_from_it_imports_the_http_libraries_before_it_forks() -> None:
    """What Celery's worker does at start-up (``loader.init_worker``), in a fresh interpreter."""
    code = (
        "import sys; from celery import Celery; "
        "from include.gir_ops.celery_worker import CELERY_CONFIG, PRELOADED_MODULES; "
        "assert 'aiohttp' not in sys.modules; "
        "app = Celery('gir', config_source=CELERY_CONFIG); app.loader.init_worker(); "
        "print(sorted(m for m in (*PRELOADED_MODULES, 'aiohttp') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == str(sorted((*PRELOADED_MODULES, "aiohttp")))


def test_every_celery_deployment_selects_it() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text(encoding="utf-8"))
    env = compose["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == OPTION
    values = yaml.safe_load((REPO_ROOT / "deploy/helm/values.yaml").read_text(encoding="utf-8"))
    assert values["config"]["celery"]["celery_config_options"] == OPTION
    assert f'"AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "{OPTION}"' in (
        REPO_ROOT / "tests/engine/engine_stack.py"
    ).read_text(encoding="utf-8")
