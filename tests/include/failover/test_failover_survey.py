"""Reading RWS: the target first, unreachable nodes, the site compared with what the approver saw, and
IDs unfit for a URL path."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests_mock

from include.gir_ops.failover import survey
from include.gir_ops.failover.spec import FailoverRefused
from include.gir_ops.rws import RwsClient, RwsError
from include.gir_ops.topology import load_topology
from tests.conftest import SimulatedGir
from tests.include.failover.failover_support import environment_id

# --- reading RWS ---------------------------------------------------------------------------------------


def test_survey_asks_the_target_first_and_reports_unreachable_nodes(gir: SimulatedGir) -> None:
    gir.simulator.stop_site("DC3")
    answers: list[dict[str, Any]] = []
    found = survey.survey_rws(gir.topology, "DC3", phase="preflight", answers=answers)
    assert [n["site"] for n in found["nodes"]] == ["DC3", "DC1", "DC2"]
    assert found["nodes"][0]["answered"] is False and "could not be reached" in found["nodes"][0]["error"]
    assert found["current_site"] == "DC1" and found["consistent"]
    assert found["environment_id"] == environment_id(gir)
    assert answers[0]["site"] == "DC3" and answers[0]["request_sent"] is False
    assert gir.ops_password not in json.dumps(answers)


def test_survey_fails_when_no_rws_answers(gir: SimulatedGir) -> None:
    for site in ("DC1", "DC2", "DC3"):
        gir.simulator.stop_site(site)
    with pytest.raises(survey.RwsSurveyError, match="no RWS answered"):
        survey.survey_rws(gir.topology, "DC2", phase="preflight", answers=[])


@pytest.mark.parametrize(
    ("before", "now", "expected"),
    [
        ({"current_site": "DC1"}, {"current_site": "DC1", "consistent": True}, "switch"),
        ({"current_site": None}, {"current_site": None, "consistent": True}, "switch"),
        ({"current_site": "DC1"}, {"current_site": "DC2", "consistent": True}, "nothing-to-do"),
        ({"current_site": "DC1"}, {"current_site": "DC3", "consistent": True}, "site-changed"),
        (
            {"current_site": "DC1", "consistent": True},
            {"current_site": None, "consistent": False},
            "site-changed",
        ),
    ],
    ids=["unchanged", "unknown-both-times", "target-now-current", "changed-elsewhere", "now-disagree"],
)
def test_site_decision(before: dict[str, Any], now: dict[str, Any], expected: str) -> None:
    if expected == "site-changed":
        with pytest.raises(FailoverRefused) as caught:
            survey.site_decision(before, now, "DC2")
        assert caught.value.outcome == "site-changed"
    else:
        assert survey.site_decision(before, now, "DC2")["decision"] == expected


@pytest.mark.parametrize("listed", ["..", "..%2Fcontact-centers", "env id", "env\nid"])
def test_an_environment_id_unfit_for_a_url_path_is_never_used(
    monkeypatch: pytest.MonkeyPatch, listed: str
) -> None:
    """The ID RWS lists goes into .../genesys-environments/<id>/multimedia-switch: refused, nothing sent."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_GIR_RWS_DC2",
        json.dumps({"conn_type": "http", "host": "rws.test", "login": "ops", "password": "x"}),
    )
    dc = load_topology().site("DC2")
    answers: list[dict[str, Any]] = []
    with requests_mock.Mocker() as mocked:
        mocked.get(
            "http://rws.test/api/v2/ops/genesys-environments",
            json={"statusCode": 0, "paths": [f"/genesys-environments/{listed}"]},
        )
        node = survey.observe_node(dc, target_site="DC2", phase="switch", answers=answers)
        assert mocked.call_count == 1, "nothing may be sent with the refused ID"
    assert node["answered"] is False and node["environment_ids"] == []
    assert "genesys-environment ID" in node["error"] and "refused" in node["error"]
    with pytest.raises(RwsError, match="refused"):
        RwsClient("DC2", dc.rws_conn_id).multimedia_switch(listed, "DC2")
