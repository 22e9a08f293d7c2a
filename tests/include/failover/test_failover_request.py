"""The request: the trigger form, the checks of the trigger conf, the switch-back command."""

from __future__ import annotations

import json
from typing import Any

import pytest

from include.gir_ops.failover import outcome, spec, steps
from include.gir_ops.failover.spec import FailoverRefused
from include.gir_ops.topology import load_topology

# --- the request ---------------------------------------------------------------------------------------


def request_params(**overrides: Any) -> dict[str, Any]:
    return {"target_site": "DC2", "reason": "DC1 Interaction Server down", **overrides}


def test_request_is_read_and_normalised() -> None:
    topology = load_topology()
    request = steps.read_request(
        {"target_site": "DC2"},
        request_params(change_ticket="  ", reason="  DC1 is down hard  "),
        "u",
        topology,
    )
    assert (request.target_site, request.reason, request.change_ticket, request.dry_run) == (
        "DC2",
        "DC1 is down hard",
        None,
        False,
    )


@pytest.mark.parametrize(
    ("conf", "params", "message"),
    [
        ({"target_site": "DC2", "dryrun": True}, request_params(), "unknown trigger conf key"),
        ({}, request_params(target_site="DC7"), "not a site"),
        ({}, request_params(reason="   short    "), "at least 10"),
        ({}, request_params(dry_run="yes"), "dry_run"),
    ],
    ids=["typo-in-conf", "unknown-site", "blank-padded-reason", "dry-run-not-bool"],
)
def test_bad_requests_are_refused_before_anything_is_asked(
    conf: dict[str, Any], params: dict[str, Any], message: str
) -> None:
    with pytest.raises(FailoverRefused, match=message) as caught:
        steps.read_request(conf, params, "oncall", load_topology())
    assert caught.value.outcome == "preflight-failed"


def test_trigger_form_has_no_default_site_and_lists_the_topology_sites() -> None:
    from airflow.sdk.definitions._internal.types import NOTSET

    topology = load_topology()
    params = spec.trigger_params(topology)
    assert params["target_site"].value is NOTSET, "a default site could be triggered by accident"
    assert params["reason"].value is NOTSET
    assert params["target_site"].schema["enum"] == ["DC1", "DC2", "DC3"]
    assert params["reason"].schema["minLength"] == 10
    assert params["dry_run"].value is False


def test_switch_back_command_is_a_valid_trigger() -> None:
    topology = load_topology()
    command = outcome.switch_back_command(topology, "CHG-1")
    # Through the REST API as the signed-in user: a CLI trigger records the OS user and cannot switch.
    assert command.startswith('curl -X POST "$AIRFLOW_URL/api/v2/dags/gir_eservices_failover/dagRuns"')
    assert "airflow dags trigger" not in command and "Bearer $MY_TOKEN" in command
    body = json.loads(command.split(" -d '", 1)[1].rstrip("'"))
    conf = body["conf"]
    assert body["logical_date"] is None
    assert conf["target_site"] == "DC1" and conf["change_ticket"] == "CHG-1"
    assert steps.read_request(conf, conf, "oncall", topology).target_site == "DC1"
