"""The simulator and the stack's process handling live in ``include.gir_sim``, outside production.

What a deployment runs (``dags/``, ``plugins/``, ``include/gir_ops/``) must never need them: they ship in
the image only for the compose demo profile, and ``make run`` / the engine tests start them.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = ("dags", "plugins", "include/gir_ops")


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_production_code_never_imports_the_simulator_package() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m for m in _imported_modules(path) if m.startswith("include.gir_sim")
        )
        for folder in PRODUCTION
        for path in sorted((REPO / folder).rglob("*.py"))
    }
    assert {path: found for path, found in offenders.items() if found} == {}
    assert len(offenders) > 10, f"scanned only {sorted(offenders)}: is PRODUCTION still the right list?"


def test_simulator_and_processes_are_gone_from_the_production_package() -> None:
    assert importlib.util.find_spec("include.gir_ops.simulator") is None
    assert importlib.util.find_spec("include.gir_ops.processes") is None
    for name in ("include.gir_sim", "include.gir_sim.__main__", "include.gir_sim.processes"):
        assert importlib.util.find_spec(name) is not None, name
