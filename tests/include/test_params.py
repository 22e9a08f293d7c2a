"""Trigger-form params: the declared JSON Schema dialect, and that validation still refuses bad values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from jsonschema import Draft7Validator, validators

from include.gir_ops.params import (
    JSON_SCHEMA_DIALECT,
    is_contact_center_id,
    trigger_param,
)
from include.gir_ops.shared import CONTACT_CENTER_ID_PATTERN, ISO_WITH_OFFSET_PATTERN

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_trigger_param_declares_draft_07_and_keeps_its_schema() -> None:
    param = trigger_param(None, type=["null", "string"], pattern=ISO_WITH_OFFSET_PATTERN, title="From")
    assert param.schema == {
        "$schema": JSON_SCHEMA_DIALECT,
        "type": ["null", "string"],
        "pattern": ISO_WITH_OFFSET_PATTERN,
        "title": "From",
    }
    assert validators.validator_for(param.schema) is Draft7Validator
    assert param.resolve() is None


def test_bad_values_are_still_refused() -> None:
    from airflow.sdk.exceptions import ParamValidationError

    moment = trigger_param(None, type=["null", "string"], format="date-time", pattern=ISO_WITH_OFFSET_PATTERN)
    assert moment.resolve("2026-11-20T00:00:00Z") == "2026-11-20T00:00:00Z"
    with pytest.raises(ParamValidationError, match="does not match"):
        moment.resolve("yesterday")
    kinds = trigger_param(
        [], type="array", items={"type": "string", "enum": ["recordings"]}, uniqueItems=True
    )
    with pytest.raises(ParamValidationError, match="is not one of"):
        kinds.resolve(["videos"])
    with pytest.raises(ParamValidationError, match="non-unique"):
        kinds.resolve(["recordings", "recordings"])


def test_without_a_default_the_param_is_required() -> None:
    from airflow.sdk.exceptions import ParamValidationError

    site = trigger_param(type="string", enum=["DC1", "DC2"])
    with pytest.raises(ParamValidationError, match="No value passed"):
        site.resolve()
    assert site.resolve("DC2") == "DC2"


# --- the one contact center ID pattern ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["9a4c1e3f0b", "ABCDEF0123", "0", "f" * 64])
def test_hex_contact_center_ids_are_accepted(value: str) -> None:
    assert is_contact_center_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "9a4c\n",
        "9a4c\r",
        "\n9a4c",
        "9a 4c",
        "..",
        "../9a4c",
        "9a4c/x",
        "9a%2F4c",
        "9a4g",
        "f" * 65,
        None,
        42,
    ],
)
def test_anything_else_is_refused_even_where_the_json_schema_pattern_lets_it_through(value: object) -> None:
    """``re.search`` (what jsonschema uses) lets a trailing newline pass ``$``; the server check does not."""
    assert not is_contact_center_id(value)
    if value == "9a4c\n":
        assert re.search(CONTACT_CENTER_ID_PATTERN, value)  # why the server-side check must not use it


def test_one_contact_center_id_pattern_serves_topology_trigger_form_and_discovery() -> None:
    """The hex pattern was once written out three times (topology, re-index params, DAG form): one home."""
    written_out = [
        str(path.relative_to(REPO_ROOT))
        for folder in ("include", "dags")
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
        if path.name != "shared.py" and "0-9a-fA-F" in path.read_text(encoding="utf-8")
    ]
    assert written_out == []
    from include.gir_ops import rws, topology
    from include.gir_ops.reindex import plan as reindex_plan

    assert topology.is_contact_center_id is rws.is_contact_center_id is reindex_plan.is_contact_center_id
    assert is_contact_center_id is topology.is_contact_center_id
