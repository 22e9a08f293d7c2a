"""The simulator must behave like the guide, or every DAG test built on it proves nothing."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from include.gir_ops.params import is_contact_center_id
from include.gir_ops.topology import DEFAULT_TOPOLOGY_PATH, load_topology
from include.gir_sim.server import GirSimulator, simulated_contact_centers
from include.gir_sim.state import HOUR_MS, Fault, SimError, SimState, round_to_nearest_hour

OPS = "/api/v2/ops"
T0 = 1_369_272_257_713  # the guide's example "from"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _state(clock: FakeClock | None = None) -> SimState:
    return SimState(
        [
            ("DC1", ["625A5CF1-DEA8-4E46-B18B-831D4B254488"], True),
            ("DC2", ["625a5cf1-dea8-4e46-b18b-831d4b254488"], False),
        ],
        primary_site="DC1",
        dr_monitoring_delay_seconds=30,
        clock=clock or FakeClock(),
    )


# --- state, without HTTP -------------------------------------------------------------------------------


def test_rounding_is_to_the_nearest_hour() -> None:
    hour = 10 * HOUR_MS
    assert round_to_nearest_hour(hour + HOUR_MS // 2 - 1) == hour
    assert round_to_nearest_hour(hour + HOUR_MS // 2) == hour + HOUR_MS
    assert round_to_nearest_hour(T0) == 1_369_270_800_000


def test_force_index_records_each_rounded_hour() -> None:
    state = _state()
    answer = state.force_index(
        "DC1",
        "625a5cf1-dea8-4e46-b18b-831d4b254488",
        "recordings",
        {"operationName": "forceIndex", "from": T0, "to": T0 + 3 * HOUR_MS},
    )
    assert answer["hours"] == 3
    start = round_to_nearest_hour(T0)
    assert state.indexed("DC1") == {
        "625a5cf1-dea8-4e46-b18b-831d4b254488": {"recordings": {start + i * HOUR_MS: 1 for i in range(3)}}
    }


def test_force_index_accepts_the_guides_string_milliseconds() -> None:
    state = _state()
    body = {"operationName": "forceIndex", "from": "1369272257713", "to": "1369275857713", "purgeOld": False}
    assert state.force_index("DC1", "625a5cf1-dea8-4e46-b18b-831d4b254488", "recordings", body)["hours"] == 1


@pytest.mark.parametrize(
    ("body", "http_status", "status_code", "message"),
    [
        ({"from": T0, "to": T0 + HOUR_MS}, 400, 1, "operationName is mandatory"),
        ({"operationName": "forceIndex", "to": T0}, 400, 1, "from is mandatory"),
        ({"operationName": "purge", "from": T0}, 400, 2, "unsupported operationName"),
        ({"operationName": "forceIndex", "from": "yesterday"}, 400, 10, "from must be milliseconds"),
        (
            {"operationName": "forceIndex", "from": T0, "to": T0 + HOUR_MS, "purgeOld": "yes"},
            400,
            10,
            "purgeOld",
        ),
        ({"operationName": "forceIndex", "from": T0, "to": T0 + 5 * 60_000}, 400, 2, "under one hour"),
    ],
)
def test_force_index_validates_like_the_guides_table(
    body: dict[str, object], http_status: int, status_code: int, message: str
) -> None:
    with pytest.raises(SimError, match=message) as caught:
        _state().force_index("DC1", "625a5cf1-dea8-4e46-b18b-831d4b254488", "recordings", body)
    assert (caught.value.http_status, caught.value.status_code) == (http_status, status_code)


def test_force_index_refuses_unknown_contact_center_and_disabled_screen_recording() -> None:
    state = _state()
    body = {"operationName": "forceIndex", "from": T0, "to": T0 + HOUR_MS}
    with pytest.raises(SimError, match="contact center 0000 not found") as caught:
        state.force_index("DC1", "0000", "recordings", body)
    assert caught.value.status_code == 6
    with pytest.raises(SimError, match="screen recording is not enabled") as caught:
        state.force_index("DC2", "625a5cf1-dea8-4e46-b18b-831d4b254488", "screen-recordings", body)
    assert caught.value.status_code == 2
    assert state.indexed("DC2") == {}


def test_purge_old_drops_the_index_first() -> None:
    state = _state()
    first = {"operationName": "forceIndex", "from": T0, "to": T0 + 2 * HOUR_MS}
    state.force_index("DC1", "625a5cf1-dea8-4e46-b18b-831d4b254488", "recordings", first)
    purge = {
        "operationName": "forceIndex",
        "from": T0 + 5 * HOUR_MS,
        "to": T0 + 6 * HOUR_MS,
        "purgeOld": True,
    }
    state.force_index("DC1", "625a5cf1-dea8-4e46-b18b-831d4b254488", "recordings", purge)
    hours = state.indexed("DC1")["625a5cf1-dea8-4e46-b18b-831d4b254488"]["recordings"]
    assert list(hours) == [round_to_nearest_hour(T0 + 5 * HOUR_MS)]
    assert state.sites["DC1"].purges == [("625a5cf1-dea8-4e46-b18b-831d4b254488", "recordings")]


def _site(state: SimState, env_id: str) -> str | None:
    return state.environment_body(env_id)["genesysEnvironment"].get("eServicesSite")


def test_switch_takes_effect_at_a_random_moment_within_dr_monitoring_delay() -> None:
    """RWS checks eServicesSite every drMonitoringDelay seconds: the switch lands at its next tick,
    anywhere within the delay of the POST, never after it (and not always at its very end)."""
    moments = []
    for seed in range(20):
        clock = FakeClock()
        state = SimState(
            [("DC1", ["9a4c1e3f0b"], True), ("DC2", ["9a4c1e3f0b"], False)],
            primary_site="DC1",
            dr_monitoring_delay_seconds=30,
            clock=clock,
            rng=random.Random(seed),
        )
        env_id = state.environment.environment_id
        posted_at = clock.now
        state.multimedia_switch("DC2", env_id, {"eServicesSite": "DC2"})
        while _site(state, env_id) == "DC1":
            assert clock.now - posted_at <= 30, "a switch must take effect within drMonitoringDelay"
            clock.now += 0.5
        moments.append(clock.now - posted_at)
        clock.now += 100
        assert _site(state, env_id) == "DC2", "and stay"
        assert [s["via"] for s in state.environment.switches] == ["DC2"]
    assert max(moments) <= 30
    assert len(set(moments)) > 5, f"the moment must vary, not always be the delay's end: {moments}"
    assert min(moments) < 25


def test_single_resource_is_nested_and_the_site_can_be_top_level_or_absent() -> None:
    state = _state()
    env_id = state.environment.environment_id
    assert state.environment_body(env_id) == {
        "statusCode": 0,
        "genesysEnvironment": {"id": env_id, "eServicesSite": "DC1"},
    }
    state.environment.site_format = "top-level"
    assert state.environment_body(env_id) == {"statusCode": 0, "id": env_id, "eServicesSite": "DC1"}
    state.environment.report_site = False
    state.environment.site_format = "nested"
    assert state.environment_body(env_id) == {"statusCode": 0, "genesysEnvironment": {"id": env_id}}


def test_switch_refuses_unknown_site_and_environment() -> None:
    state = _state()
    env_id = state.environment.environment_id
    with pytest.raises(SimError, match="not a configured siteName"):
        state.multimedia_switch("DC1", env_id, {"eServicesSite": "DC9"})
    with pytest.raises(SimError, match="eServicesSite is mandatory"):
        state.multimedia_switch("DC1", env_id, {})
    with pytest.raises(SimError, match="not found"):
        state.multimedia_switch("DC1", "nope", {"eServicesSite": "DC2"})


def test_faults_are_consumed_by_count_and_match() -> None:
    state = _state()
    state.add_fault("DC1", Fault(count=2, path_contains="/recordings"))
    assert state.take_fault("DC1", "GET", f"{OPS}/contact-centers") is None
    assert state.take_fault("DC1", "POST", f"{OPS}/contact-centers/x/recordings") is not None
    assert state.take_fault("DC1", "POST", f"{OPS}/contact-centers/x/recordings") is not None
    assert state.take_fault("DC1", "POST", f"{OPS}/contact-centers/x/recordings") is None


# --- over HTTP -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulator() -> GirSimulator:
    sim = GirSimulator(
        load_topology(DEFAULT_TOPOLOGY_PATH), ops_password="s3cret", dr_monitoring_delay_seconds=0.3
    )
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    if "simulator" in request.fixturenames:
        sim: GirSimulator = request.getfixturevalue("simulator")
        sim.state.reset()
        sim.state.environment.current_site = "DC1"
        sim.state.environment.report_site = True
        sim.state.environment.site_format = "nested"


AUTH = ("ops", "s3cret")


def test_ops_api_requires_the_ops_user(simulator: GirSimulator) -> None:
    response = requests.get(f"{simulator.url('DC1')}{OPS}/contact-centers", auth=("ops", "wrong"), timeout=5)
    assert response.status_code == 401
    assert response.json()["statusCode"] == 20
    response = requests.get(f"{simulator.url('DC1')}{OPS}/contact-centers", timeout=5)
    assert response.status_code == 401
    recorded = requests.get(f"{simulator.url('DC1')}/_sim/requests", timeout=5).json()
    assert [r["authorized"] for r in recorded] == [False, False]


def test_contact_centers_listed_as_uris_ending_in_dashed_uuids(simulator: GirSimulator) -> None:
    """As real RWS deployments address contact centers (the guide only says "in hex format")."""
    body = requests.get(f"{simulator.url('DC3')}{OPS}/contact-centers", auth=AUTH, timeout=5).json()
    assert body["statusCode"] == 0
    listed = [uri.rsplit("/", 1)[-1] for uri in body["uris"]]
    assert listed == simulated_contact_centers("DC3")
    assert len(set(listed)) == 3
    assert all(str(uuid.UUID(cc)) == cc for cc in listed)  # canonical 8-4-4-4-12, lower case
    assert all(is_contact_center_id(cc) for cc in listed)  # what the DAGs accept from discovery
    assert all(uri.startswith(simulator.url("DC3")) for uri in body["uris"])
    assert simulated_contact_centers("DC3") == listed  # the same IDs on every start
    assert set(simulated_contact_centers("DC2")).isdisjoint(listed)


def test_force_index_matches_the_contact_center_id_case_insensitively(simulator: GirSimulator) -> None:
    cc = "625a5cf1-dea8-4e46-b18b-831d4b254488"
    body = {"operationName": "forceIndex", "from": T0, "to": T0 + HOUR_MS}
    upper = f"{simulator.url('DC2')}{OPS}/contact-centers/{cc.upper()}/recordings"
    assert requests.post(upper, json=body, auth=AUTH, timeout=5).json()["statusCode"] == 0
    unknown = f"{simulator.url('DC2')}{OPS}/contact-centers/{cc.replace('-', '')}/recordings"
    response = requests.post(unknown, json=body, auth=AUTH, timeout=5)
    assert (response.status_code, response.json()["statusCode"]) == (404, 6)
    indexed = requests.get(f"{simulator.url('DC2')}/_sim/indexed", timeout=5).json()
    assert list(indexed) == [cc]


def test_force_index_over_http_is_recorded(simulator: GirSimulator) -> None:
    url = (
        f"{simulator.url('DC2')}{OPS}/contact-centers/625a5cf1-dea8-4e46-b18b-831d4b254488/screen-recordings"
    )
    body = {"operationName": "forceIndex", "from": T0, "to": T0 + 2 * HOUR_MS, "purgeOld": False}
    response = requests.post(url, json=body, auth=AUTH, timeout=5)
    assert response.status_code == 200 and response.json()["statusCode"] == 0
    indexed = requests.get(f"{simulator.url('DC2')}/_sim/indexed", timeout=5).json()
    assert indexed == {
        "625a5cf1-dea8-4e46-b18b-831d4b254488": {
            "screen-recordings": {
                str(round_to_nearest_hour(T0)): 1,
                str(round_to_nearest_hour(T0) + HOUR_MS): 1,
            }
        }
    }
    recorded = requests.get(f"{simulator.url('DC2')}/_sim/requests", timeout=5).json()
    assert recorded[-1] | {"time": 0} == {
        "method": "POST",
        "path": f"{OPS}/contact-centers/625a5cf1-dea8-4e46-b18b-831d4b254488/screen-recordings",
        "body": body,
        "authorized": True,
        "http_status": 200,
        "status_code": 0,
        "time": 0,
    }
    # other DCs are untouched
    assert requests.get(f"{simulator.url('DC1')}/_sim/indexed", timeout=5).json() == {}


def test_refusal_carries_status_code_and_message(simulator: GirSimulator) -> None:
    url = f"{simulator.url('DC2')}{OPS}/contact-centers/625a5cf1-dea8-4e46-b18b-831d4b254488/recordings"
    response = requests.post(
        url, json={"operationName": "forceIndex", "from": T0, "to": T0}, auth=AUTH, timeout=5
    )
    assert response.status_code == 400
    assert response.json() == {
        "statusCode": 2,
        "statusMessage": "the re-index interval is under one hour after rounding",
    }
    recorded = requests.get(f"{simulator.url('DC2')}/_sim/requests", timeout=5).json()
    assert (recorded[-1]["http_status"], recorded[-1]["status_code"]) == (400, 2)


def test_status_fault_then_normal_answer(simulator: GirSimulator) -> None:
    base = simulator.url("DC1")
    requests.post(f"{base}/_sim/faults", json={"count": 2, "http_status": 503, "status_code": 4}, timeout=5)
    codes = [requests.get(f"{base}{OPS}/contact-centers", auth=AUTH, timeout=5).status_code for _ in range(3)]
    assert codes == [503, 503, 200]


def test_drop_fault_closes_the_connection_without_an_answer(simulator: GirSimulator) -> None:
    base = simulator.url("DC1")
    requests.post(f"{base}/_sim/faults", json={"count": 1, "mode": "drop"}, timeout=5)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}{OPS}/contact-centers", auth=AUTH, timeout=5)
    assert requests.get(f"{base}{OPS}/contact-centers", auth=AUTH, timeout=5).status_code == 200
    recorded = requests.get(f"{base}/_sim/requests", timeout=5).json()
    assert [r.get("fault") for r in recorded] == ["drop", None]


def test_delay_fault_and_latency_slow_the_answer(simulator: GirSimulator) -> None:
    base = simulator.url("DC1")
    requests.post(f"{base}/_sim/faults", json={"count": 1, "mode": "delay", "delay_ms": 1500}, timeout=5)
    with pytest.raises(requests.Timeout):
        requests.get(f"{base}{OPS}/contact-centers", auth=AUTH, timeout=0.5)
    requests.post(f"{base}/_sim/latency", json={"ms": 200}, timeout=5)
    started = time.monotonic()
    requests.get(f"{base}{OPS}/contact-centers", auth=AUTH, timeout=5)
    assert time.monotonic() - started >= 0.2


def test_environment_is_shared_by_every_dcs_rws(simulator: GirSimulator) -> None:
    listing = requests.get(f"{simulator.url('DC1')}{OPS}/genesys-environments", auth=AUTH, timeout=5).json()
    assert listing["statusCode"] == 0
    env_id = listing["paths"][0].rsplit("/", 1)[-1]
    assert listing["uris"][0].endswith(f"/genesys-environments/{env_id}")
    switch = f"{simulator.url('DC2')}{OPS}/genesys-environments/{env_id}/multimedia-switch"
    assert requests.post(switch, json={"eServicesSite": "DC2"}, auth=AUTH, timeout=5).json() == {
        "statusCode": 0
    }
    env_url = f"{OPS}/genesys-environments/{env_id}"
    time.sleep(0.35)
    for site in ("DC1", "DC2", "DC3"):
        body = requests.get(f"{simulator.url(site)}{env_url}", auth=AUTH, timeout=5).json()
        assert body["genesysEnvironment"]["eServicesSite"] == "DC2"


def test_environment_can_hide_the_site_like_an_unknown_rws_version(simulator: GirSimulator) -> None:
    base = simulator.url("DC1")
    requests.post(f"{base}/_sim/environment", json={"report_site": False}, timeout=5)
    env_id = simulator.state.environment.environment_id
    body = requests.get(f"{base}{OPS}/genesys-environments/{env_id}", auth=AUTH, timeout=5).json()
    assert body == {"statusCode": 0, "genesysEnvironment": {"id": env_id}}


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded"], ids=["none", "text", "form"]
)
def test_a_post_without_json_content_type_is_refused_with_415(
    simulator: GirSimulator, content_type: str | None
) -> None:
    env_id = simulator.state.environment.environment_id
    url = f"{simulator.url('DC2')}{OPS}/genesys-environments/{env_id}/multimedia-switch"
    headers = {"Content-Type": content_type} if content_type else {}
    before = len(simulator.state.environment.switches)
    response = requests.post(url, data=b'{"eServicesSite": "DC2"}', headers=headers, auth=AUTH, timeout=5)
    assert (response.status_code, response.json()["statusCode"]) == (415, 10)
    assert len(simulator.state.environment.switches) == before, "a refused POST changes nothing"
    accepted = requests.post(
        url,
        data=b'{"eServicesSite": "DC2"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
        auth=AUTH,
        timeout=5,
    )
    assert (accepted.status_code, accepted.json()) == (200, {"statusCode": 0})


def test_unknown_ops_path_is_not_found(simulator: GirSimulator) -> None:
    response = requests.get(f"{simulator.url('DC1')}{OPS}/nothing-here", auth=AUTH, timeout=5)
    assert (response.status_code, response.json()["statusCode"]) == (404, 6)


def test_a_stopped_site_refuses_connections_and_can_come_back(simulator: GirSimulator) -> None:
    base = simulator.url("DC3")
    simulator.stop_site("DC3")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/_sim/health", timeout=2)
    simulator.start_site("DC3")
    assert requests.get(f"{base}/_sim/health", timeout=2).json() == {"site": "DC3", "ok": True}


def test_port_in_use_is_a_clear_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    sim = GirSimulator(load_topology(DEFAULT_TOPOLOGY_PATH), ops_password="x")
    try:
        with pytest.raises(OSError, match=rf"cannot listen on 127.0.0.1:{port} for DC1 .*another stack"):
            sim.start({"DC1": port})
    finally:
        sim.stop()
        taken.close()


def test_cli_serves_every_dc_and_stops_on_sigterm(tmp_path: Path) -> None:
    ports = []
    for _ in range(3):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    env = os.environ | {"GIR_SIM_OPS_PASSWORD": "cli-pass", "PYTHONPATH": str(Path(__file__).parents[2])}
    args = [sys.executable, "-m", "include.gir_sim", "serve"]
    for site, port in zip(("DC1", "DC2", "DC3"), ports, strict=True):
        args += ["--port", f"{site}={port}"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{ports[2]}/_sim/health", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        answer = requests.get(
            f"http://127.0.0.1:{ports[1]}{OPS}/contact-centers", auth=("ops", "cli-pass"), timeout=5
        )
        assert answer.json()["statusCode"] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"DC2 RWS at http://127.0.0.1:{ports[1]}" in out
    assert "cli-pass" not in out + err


def test_cli_without_password_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GIR_SIM_OPS_PASSWORD"}
    env["PYTHONPATH"] = str(Path(__file__).parents[2])
    result = subprocess.run(
        [sys.executable, "-m", "include.gir_sim", "serve"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "GIR_SIM_OPS_PASSWORD is not set" in result.stderr
