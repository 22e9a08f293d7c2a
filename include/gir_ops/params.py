"""Trigger-form building blocks shared by the DAG files: kept tiny because every DAG parse imports it.

Airflow checks each Param's JSON schema against its dialect's metaschema every time a DAG's params are
validated, compared or dumped: at DAG construction, and several times per task while the DAG is
serialized (``jsonschema.validate`` re-checks the schema on every call; apache/airflow#28059, #32434).
With jsonschema's default dialect (2020-12) one check costs 2.5-4x a draft-07 check, because the 2020-12
metaschema is a stack of vocabularies with dynamic references. Our forms declare draft-07: every keyword
they use (type, enum, format, pattern, items, uniqueItems, minimum/maximum, minLength/maxLength,
examples, title, description) means the same there, the UI ignores ``$schema``, and trigger-time
validation (REST API and UI) uses the dialect the schema names. ``make bench`` shows the parse cost.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from include.gir_ops.shared import CONTACT_CENTER_ID_PATTERN

if TYPE_CHECKING:
    from airflow.sdk import Param

# Declared in every trigger-form Param schema; see the module docstring for why not 2020-12.
JSON_SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"

# A contact center ID as GET /api/v2/ops/contact-centers returns it (the last segment of each URI): a
# dashed UUID, as real RWS answers, or plain hex, as the guide writes it. ONE pattern for the topology, the
# re-index trigger form and discovery, because the ID goes into a URL path
# (``.../contact-centers/<id>/recordings``): nothing else may reach it ('..', '/', '%2F', whitespace,
# control characters). Plain hex at most 64 digits, so what is sent and logged stays bounded.
_CONTACT_CENTER_ID = re.compile(CONTACT_CENTER_ID_PATTERN)

_NO_DEFAULT: Any = object()


def is_contact_center_id(value: object) -> bool:
    """True for a contact center ID: a dashed UUID or plain hex, in any case.

    ``fullmatch``, because ``$`` also matches before a final newline.

    JSON Schema validation in Python uses ``re.search``, so the trigger form's ``pattern`` lets
    ``"9a4c\\n"`` through; every server-side check goes through here instead.
    """
    return isinstance(value, str) and _CONTACT_CENTER_ID.fullmatch(value) is not None


def trigger_param(default: Any = _NO_DEFAULT, **schema: Any) -> Param:
    """A ``Param`` whose JSON schema declares :data:`JSON_SCHEMA_DIALECT`.

    Without ``default`` the param is required: a run without it is refused when it is created.
    """
    from airflow.sdk import Param  # here: the ID check above needs no Airflow

    schema = {"$schema": JSON_SCHEMA_DIALECT, **schema}
    if default is _NO_DEFAULT:
        return Param(**schema)
    return Param(default, **schema)
