"""Statements in the docs that operators act on, each checked against the code that makes them true."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from include.gir_ops.topology import DEFAULT_TOPOLOGY_PATH, TopologyError, load_topology, parse_topology

REPO = Path(__file__).resolve().parents[2]
DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_the_connection_id_rule_in_the_readme_is_the_codes() -> None:
    document = "primary_site: DC-Paris.1\ndata_centers:\n  - site: DC-Paris.1\n"
    dc = parse_topology(document, "t.yaml").data_centers[0]
    assert dc.rws_conn_id == "gir_rws_dc_paris_1" and dc.rws_pool == "gir_rws_dc_paris_1"
    assert "site `DC-Paris.1` → `gir_rws_dc_paris_1`" in _text(REPO / "README.md")


def test_only_gir_variables_are_expanded_as_the_readme_says() -> None:
    readme = _text(REPO / "README.md")
    assert (
        "`${GIR_NAME}` and `${GIR_NAME:-default}` in values are read from\n"
        "   `GIR_*` environment variables only" in readme
    )
    base = "primary_site: DC1\ndata_centers:\n  - site: DC1\n    timezone: '{tz}'\n"
    assert parse_topology(base.format(tz="${GIR_DOC_TZ:-Europe/Paris}"), "t").data_centers[0].timezone == (
        "Europe/Paris"
    )
    with pytest.raises(TopologyError, match=r"\$\{HOME\} is not allowed: only GIR_\* environment variables"):
        parse_topology(base.format(tz="${HOME}"), "t")


def test_no_doc_says_the_benchmarks_are_not_written() -> None:
    assert (REPO / "benchmarks" / "shipping.py").exists()
    assert re.search(r"^bench:", _text(REPO / "Makefile"), re.MULTILINE)
    for path in DOCS:
        assert "not written yet" not in _text(path), path


def test_the_keystore_demo_commands_exist() -> None:
    doc = _text(REPO / "docs" / "gir_rcs_keystore_check.md")
    makefile = _text(REPO / "Makefile")
    assert "make demo-drift INSTANCE=rcs-dc2-a" in doc and "make demo-restore" in doc
    assert re.search(r"^demo-drift:", makefile, re.MULTILINE) and re.search(r"^demo-restore:", makefile, re.M)
    assert "scripts/run_stack.py drift $(INSTANCE)" in makefile
    assert "rcs-dc2-a" in [rcs.name for _, rcs in load_topology(DEFAULT_TOPOLOGY_PATH).rcs_instances]


def test_no_message_or_doc_suggests_dropping_the_ready_marker() -> None:
    from include.gir_ops.backup.readiness import Readiness
    from include.gir_ops.backup.triggers import timeout_message

    waiting = Readiness(
        root="file:///b",
        backup_name="index-2026-11-20",
        complete=False,
        reason="marker _BACKUP_COMPLETE not found",
        files=3,
        bytes=10,
        last_change=None,
        signature="s",
        seen_change_at=None,
        stable_since=0.0,
    )
    message = timeout_message("file:///b", waiting, 360, None)
    assert "do not remove the marker from the topology" in message
    assert "null" not in message
    for path in DOCS:
        assert "ready_marker to null" not in _text(path), path


@pytest.mark.parametrize(
    ("site", "cron", "timezone", "starts"),
    [
        ("a DC at UTC, e.g. DC1", "0 2 * * *", "UTC", ["2026-11-01T02:00Z", "2026-11-02T02:00Z"]),
        ("DC2", None, None, ["2026-11-01T01:00Z", "2026-11-02T01:00Z"]),
        ("DC3", None, None, ["2026-11-01T20:00Z", "2026-11-02T20:00Z"]),
    ],
)
def test_the_backfill_worked_example_is_what_airflow_creates(
    site: str, cron: str | None, timezone: str | None, starts: list[str]
) -> None:
    """The runs a backfill --from-date 2026-11-01 --to-date 2026-11-03 creates, as Airflow computes them."""
    from airflow.sdk import CronDataIntervalTimetable
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import TimeRestriction

    if cron is None:
        dc = load_topology(DEFAULT_TOPOLOGY_PATH).site(site)
        cron, timezone = dc.reindex.schedule, dc.timezone
    timetable = coerce_to_core_timetable(CronDataIntervalTimetable(cron, timezone=timezone))
    restriction = TimeRestriction(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC), True)
    found, info = [], None
    while info := timetable.next_dagrun_info_v2(last_dagrun_info=info, restriction=restriction):
        found.append(info)
    assert [i.data_interval.start.strftime("%Y-%m-%dT%H:%MZ") for i in found] == starts
    covered = f"{starts[0]} → {found[-1].data_interval.end.strftime('%Y-%m-%dT%H:%MZ')}"
    row = next(
        line
        for line in _text(REPO / "docs" / "gir_es_reindex.md").splitlines()
        if line.startswith(f"| {site} ")
    )
    assert f"{starts[0]}, {starts[1]}" in row and covered in row, row
