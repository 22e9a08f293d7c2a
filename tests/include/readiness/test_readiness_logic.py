"""The readiness rules on plain data: coverage arithmetic, the RWS probe cache, the verdict's wording."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from include.gir_ops.readiness import coverage as cov
from include.gir_ops.readiness.probe import ProbeCache, RwsProbe, reported_site
from include.gir_ops.readiness.status import Inputs, judge, standby_site
from include.gir_ops.readiness.triggers import reindex_conf
from include.gir_ops.topology import load_topology, parse_topology
from tests.conftest import DEFAULT_TOPOLOGY

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def hours(n: int) -> timedelta:
    return timedelta(hours=n)


def test_coverage_merges_overlaps_and_names_each_gap() -> None:
    spans = [(T0, T0 + hours(5)), (T0 + hours(3), T0 + hours(8)), (T0 + hours(10), T0 + hours(12))]
    ranges = [(int(a.timestamp()), int(b.timestamp())) for a, b in spans]
    pair = cov.pair_coverage("ab", "recordings", ranges, T0 - hours(2), T0 + hours(14))
    assert (pair.expected_hours, pair.covered_hours) == (16, 10)
    assert pair.missing == (
        (T0 - hours(2), T0),
        (T0 + hours(8), T0 + hours(10)),
        (T0 + hours(12), T0 + hours(14)),
    )
    assert pair.ratio == pytest.approx(10 / 16)


def test_coverage_counts_only_the_window_and_every_expected_pair() -> None:
    returned = [
        {
            "contact_center_id": "ab",
            "kind": "recordings",
            "from": "2026-10-01T00:00Z",
            "to": "2026-11-02T00:00Z",
        },
        {"contact_center_id": "ab", "kind": "recordings", "from": "not a time", "to": "2026-11-02T00:00Z"},
    ]
    pairs = cov.coverage(
        returned, contact_centers=["ab", "cd"], kinds=["recordings"], start=T0, end=T0 + hours(48)
    )
    assert [(p.contact_center_id, p.covered_hours, p.expected_hours) for p in pairs] == [
        ("ab", 24, 48),
        ("cd", 0, 48),
    ]
    # Without a topology list, the contact centers the runs reported are the ones expected.
    found = cov.coverage(returned, contact_centers=[], kinds=["recordings"], start=T0, end=T0 + hours(1))
    assert [p.contact_center_id for p in found] == ["ab"]


def test_the_probe_cache_asks_once_per_site_within_the_ttl() -> None:
    topology = load_topology(DEFAULT_TOPOLOGY)
    asked: list[str] = []
    clock = [0.0]

    def probe(dc: Any) -> RwsProbe:
        asked.append(dc.site)
        return RwsProbe(dc.site, True, "DC1", ("e",), None, T0)

    cache = ProbeCache(probe, ttl=30, clock=lambda: clock[0])
    first = cache.probe_all(topology.data_centers)
    clock[0] = 29
    second = cache.probe_all(topology.data_centers)
    assert sorted(asked) == ["DC1", "DC2", "DC3"]
    assert not first["DC2"].cached and second["DC2"].cached
    clock[0] = 31
    cache.probe_all(topology.data_centers)
    assert len(asked) == 6


def test_the_site_is_read_at_the_top_or_nested_under_the_resource() -> None:
    assert reported_site({"statusCode": 0, "eServicesSite": "DC2"}) == "DC2"
    assert reported_site({"statusCode": 0, "genesysEnvironment": {"eServicesSite": "DC1"}}) == "DC1"
    assert reported_site({"statusCode": 0}) is None


def answering(topology: Any, sites: dict[str, str]) -> dict[str, RwsProbe]:
    return {s: RwsProbe(s, True, sites.get(s), ("e",), None, T0) for s in topology.sites}


def test_rws_nodes_that_disagree_are_a_reason() -> None:
    topology = load_topology(DEFAULT_TOPOLOGY)
    status = judge(topology, Inputs(), answering(topology, {"DC1": "DC1", "DC2": "DC2"}), now=T0)
    assert (
        "RWS nodes disagree on the eServices site: {'DC1': 'DC1', 'DC2': 'DC2'}"
        in status["verdict"]["reasons"]
    )
    assert status["rws"]["current_site"] is None


def test_the_standby_is_the_backup_destination_or_the_first_other_dc() -> None:
    topology = load_topology(DEFAULT_TOPOLOGY)
    assert standby_site(topology) == "DC2"
    no_shipping = parse_topology(
        "primary_site: A\ndata_centers:\n  - site: A\n  - site: B\n  - site: C\n", "inline"
    )
    assert standby_site(no_shipping) == "B"
    alone = parse_topology("primary_site: A\ndata_centers:\n  - site: A\n", "inline")
    status = judge(alone, Inputs(), {}, now=T0)
    assert status["verdict"] == {
        "ready": False,
        "text": "no standby DC: the topology has one data center",
        "reasons": [],
    }


def test_a_reindex_link_is_checked_before_it_is_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIR_TOPOLOGY", str(DEFAULT_TOPOLOGY))
    dag_id, conf = reindex_conf("DC2", "9a4c1e3f0b", "recordings", "2026-11-01T00:00Z", "2026-11-01T05:00Z")
    assert dag_id == "gir_es_reindex_dc2"
    assert conf == {
        "from": "2026-11-01T00:00Z",
        "to": "2026-11-01T05:00Z",
        "contact_centers": ["9a4c1e3f0b"],
        "kinds": ["recordings"],
        "purge_old": False,
    }
    for args, named in (
        (("DC1", "9a4c1e3f0b", "recordings", "2026-11-01T00:00Z", "2026-11-01T05:00Z"), "site 'DC1'"),
        (("DC3", "9a4c1e3f0b", "screen-recordings", "2026-11-01T00:00Z", "2026-11-01T05:00Z"), "kind"),
        (("DC2", "../x", "recordings", "2026-11-01T00:00Z", "2026-11-01T05:00Z"), "contact_center_id"),
        (("DC2", "9a4c1e3f0b", "recordings", "yesterday", "2026-11-01T05:00Z"), "from 'yesterday'"),
        (("DC2", "9a4c1e3f0b", "recordings", "2026-11-01T05:00Z", "2026-11-01T00:00Z"), "must be after"),
    ):
        with pytest.raises(ValueError, match=named):
            reindex_conf(*args)


def test_loading_the_plugin_does_not_import_the_web_app() -> None:
    """Every task runner loads the plugins: only the API server, asking for ``fastapi_apps``, builds it."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = (
        "import sys\n"
        "import plugins.gir_readiness as p\n"
        "assert 'fastapi' not in sys.modules and 'include.gir_ops.readiness.app' not in sys.modules\n"
        "(app,) = p.GirReadinessPlugin().fastapi_apps\n"
        "assert app['url_prefix'] == '/gir-readiness' and type(app['app']).__name__ == 'FastAPI'\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
