"""Trigger-form params: the declared JSON Schema dialect, and that validation still refuses bad values."""

from __future__ import annotations

import pytest
from jsonschema import Draft7Validator, validators

from include.gir_ops.params import ISO_WITH_OFFSET_PATTERN, JSON_SCHEMA_DIALECT, trigger_param


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
