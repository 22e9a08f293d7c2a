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
from include.gir_ops.shared import (
    CONTACT_CENTER_ID_FORMS,
    CONTACT_CENTER_ID_PATTERN,
    ISO_WITH_OFFSET_PATTERN,
)

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
        "625a5cf1-dea8-4e46-b18b-831d4b254488",  # as real RWS lists them
        "625A5CF1-DEA8-4E46-B18B-831D4B254488",
        "625a5CF1-dea8-4E46-b18b-831d4B254488",
        "00000000-0000-0000-0000-000000000000",
    ],
)
def test_dashed_uuid_contact_center_ids_are_accepted(value: str) -> None:
    assert is_contact_center_id(value)
    assert re.search(CONTACT_CENTER_ID_PATTERN, value)  # the trigger form's JSON-schema pattern too


@pytest.mark.parametrize(
    "value",
    [
        "625a5cf1-dea8-4e46-b18b-831d4b25448",  # last group one digit short
        "625a5cf1-dea8-4e46-b18b-831d4b2544880",  # one digit long
        "625a5cf1dea8-4e46-b18b-831d4b254488",  # a dash missing
        "625a5cf1-dea8-4e46-b18b-831d-4b254488",  # a dash too many
        "625a5cf1--dea8-4e46-b18b-831d4b254488",
        "-625a5cf1",
        "625a5cf1-",
        "{625a5cf1-dea8-4e46-b18b-831d4b254488}",  # as .NET prints it
        "urn:uuid:625a5cf1-dea8-4e46-b18b-831d4b254488",
        "625a5cf1-dea8-4e46-b18b-831d4b25448g",
        "625a5cf1-dea8-4e46-b18b-831d4b254488\n",
    ],
)
def test_malformed_uuids_are_refused_everywhere(value: str) -> None:
    """Only the exact 8-4-4-4-12 dashed form or plain hex: nothing else reaches a URL path."""
    assert not is_contact_center_id(value)


def test_the_refusal_shows_both_accepted_forms() -> None:
    assert "dashed UUID (8-4-4-4-12 hex digits, e.g. 625a5cf1-dea8-4e46-b18b-831d4b254488)" in (
        CONTACT_CENTER_ID_FORMS
    )
    assert "plain hex (1-64 hex digits" in CONTACT_CENTER_ID_FORMS


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
