"""The topology is the edge of the system: every mistake must name the file, the key path and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from include.gir_ops.topology import (
    DEFAULT_TOPOLOGY_PATH,
    TopologyError,
    load_topology,
    parse_topology,
)

VALID = {
    "primary_site": "DC1",
    "data_centers": [
        {"site": "DC1", "rws": {"contact_centers": ["9a4c1e3f0b"]}},
        {"site": "DC2", "timezone": "Asia/Kolkata", "reindex": {"enabled": True}},
    ],
    "shipping": {
        "from_site": "DC1",
        "to_site": "DC2",
        "destination": "file:///tmp/replica",
    },
    "failover": {"approvers": [{"id": "approver"}], "audit_log": "file:///tmp/audit"},
}


def _with(path: tuple[str | int, ...], value: object) -> str:
    document = yaml.safe_load(yaml.safe_dump(VALID))
    document["data_centers"][0]["speechminer"] = {"index_backup": "file:///tmp/backup"}
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return yaml.safe_dump(document)


def test_default_topology_is_valid_and_describes_the_simulator() -> None:
    topology = load_topology(DEFAULT_TOPOLOGY_PATH)
    assert topology.sites == ["DC1", "DC2", "DC3"]
    assert topology.primary_site == "DC1"
    assert [dc.site for dc in topology.reindex_data_centers] == ["DC2", "DC3"]
    assert topology.keystore_reference == "rcs-dc1-a"
    assert topology.site("DC2").rws_conn_id == "gir_rws_dc2"
    assert topology.site("DC1").rws_conn_id == "gir_rws_dc1"
    assert topology.site("DC3").rws_pool == "gir_rws_dc3"


def test_the_example_topology_uses_dashed_uuid_contact_centers_as_real_rws_does() -> None:
    topology = load_topology(DEFAULT_TOPOLOGY_PATH)
    listed = [cc for dc in topology.data_centers for cc in dc.rws.contact_centers]
    assert listed
    assert all(
        re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", cc) for cc in listed
    )


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("625a5cf1-dea8-4e46-b18b-831d4b254488", "625a5cf1-dea8-4e46-b18b-831d4b254488"),
        ("625A5CF1-DEA8-4E46-B18B-831D4B254488", "625a5cf1-dea8-4e46-b18b-831d4b254488"),
        ("9A4C1E3F0B", "9a4c1e3f0b"),
        ("f" * 64, "f" * 64),
    ],
)
def test_contact_center_ids_in_either_form_are_accepted_and_kept_lowercase(written: str, kept: str) -> None:
    """One real (UUID) ID used to break the parse of every DAG; both forms parse, in any case."""
    topology = parse_topology(_with(("data_centers", 0, "rws", "contact_centers"), [written]), "t.yaml")
    assert topology.site("DC1").rws.contact_centers == [kept]


@pytest.mark.parametrize(
    "written",
    [
        "625a5cf1-dea8-4e46-b18b-831d4b25448",
        "625a5cf1dea8-4e46-b18b-831d4b254488",
        "{625a5cf1-dea8-4e46-b18b-831d4b254488}",
        "urn:uuid:625a5cf1-dea8-4e46-b18b-831d4b254488",
        "f" * 65,
        "../9a4c",
    ],
)
def test_other_contact_center_id_forms_are_refused_showing_both_accepted_forms(written: str) -> None:
    with pytest.raises(TopologyError) as caught:
        parse_topology(_with(("data_centers", 0, "rws", "contact_centers"), [written]), "bad.yaml")
    message = str(caught.value)
    assert f"data_centers[0].rws.contact_centers[0]: contact center ID {written!r} is not" in message
    assert "a dashed UUID (8-4-4-4-12 hex digits, e.g. 625a5cf1-dea8-4e46-b18b-831d4b254488)" in message
    assert "or plain hex (1-64 hex digits, e.g. 9a4c1e3f0b)" in message
    assert "fix: use the ID that GET /api/v2/ops/contact-centers returns" in message


def test_connection_ids_default_to_the_site_name() -> None:
    topology = parse_topology(_with(("primary_site",), "DC1"), "t.yaml")
    assert topology.site("DC2").rws_conn_id == "gir_rws_dc2"
    assert topology.site("DC1").rws.conn_id is None


def test_environment_references_are_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIR_DATA_DIR", "/srv/gir")
    text = _with(("shipping", "destination"), "file://${GIR_DATA_DIR}/replica")
    assert parse_topology(text, "t.yaml").shipping.destination == "file:///srv/gir/replica"
    monkeypatch.delenv("GIR_DATA_DIR")
    assert (
        parse_topology(
            _with(("shipping", "destination"), "file://${GIR_DATA_DIR:-/x}/r"), "t"
        ).shipping.destination
        == "file:///x/r"
    )
    with pytest.raises(
        TopologyError, match=r"shipping\.destination: environment variable GIR_DATA_DIR is not set"
    ):
        parse_topology(_with(("shipping", "destination"), "file://${GIR_DATA_DIR}/r"), "t")


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("data_centers", 0, "colour"), "red", r"data_centers\[0\]\.colour: unknown key; fix: remove it"),
        (("data_centers", 1, "site"), "DC1", r"data_centers\[1\]\.site: duplicate site 'DC1'"),
        (("primary_site",), "DC9", r"primary_site: 'DC9' is not among the sites \(DC1, DC2\)"),
        (
            ("data_centers", 0, "rws", "contact_centers"),
            ["625a5cf1-dea8-4e46-b18b-831d4b254488", "not-hex"],
            r"data_centers\[0\]\.rws\.contact_centers\[1\]: contact center ID 'not-hex' is not a dashed UUID "
            r"\(8-4-4-4-12 hex digits, e\.g\. 625a5cf1-dea8-4e46-b18b-831d4b254488\) or plain hex \(1-64 hex "
            r"digits, e\.g\. 9a4c1e3f0b\); fix: use the ID that GET /api/v2/ops/contact-centers returns",
        ),
        (
            ("data_centers", 1, "timezone"),
            "Mars/Olympus",
            r"data_centers\[1\]\.timezone: timezone 'Mars/Olympus'",
        ),
        (
            ("data_centers", 1, "reindex", "schedule"),
            "every day at two",
            r"data_centers\[1\]\.reindex\.schedule: cron expression 'every day at two' does not parse",
        ),
        (
            ("data_centers", 1, "reindex", "max_window_hours"),
            0,
            r"data_centers\[1\]\.reindex\.max_window_hours: .*greater than or equal to 1",
        ),
        (
            ("shipping", "to_site"),
            "DC7",
            r"shipping\.to_site: site 'DC7' does not exist; use one of DC1, DC2",
        ),
        (("shipping", "from_site"), "DC8", r"shipping\.from_site: site 'DC8' does not exist"),
        (
            ("shipping", "destination"),
            "ftp://x/y",
            r"shipping\.destination: URL scheme 'ftp' is not supported",
        ),
        (("failover", "audit_log"), "/no/scheme", r"failover\.audit_log: '/no/scheme' is not a storage URL"),
        (("failover", "approvers"), [], r"failover\.approvers: .*fix: add at least one entry"),
        (
            ("failover", "site_field"),
            "genesysEnvironment..eServicesSite",
            r"failover\.site_field: site_field 'genesysEnvironment\.\.eServicesSite' is not a dotted path "
            r"of JSON keys; fix: .*e\.g\. genesysEnvironment\.eServicesSite",
        ),
        (("failover", "site_field"), "a/b", r"failover\.site_field: .*is not a dotted path"),
        (
            ("keystore_check",),
            {"reference": "rcs-nowhere"},
            r"keystore_check\.reference: RCS instance 'rcs-nowhere'",
        ),
        (
            ("keystore_check",),
            {"parallel_reads": 0},
            r"keystore_check\.parallel_reads: .*greater than or equal to 1",
        ),
        (
            ("keystore_check",),
            {"parallel_reads": 1000},
            r"keystore_check\.parallel_reads: .*less than or equal to 256",
        ),
    ],
)
def test_bad_topology_names_file_key_and_fix(
    path: tuple[str | int, ...], value: object, expected: str
) -> None:
    with pytest.raises(TopologyError, match=r"^bad\.yaml: invalid topology:") as caught:
        parse_topology(_with(path, value), "bad.yaml")
    assert re.search(expected, str(caught.value)), str(caught.value)


def test_file_that_is_not_yaml(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("primary_site: DC1\ndata_centers: [unclosed\n", encoding="utf-8")
    expected = rf"^{broken}: not valid YAML: line 3, column 1: .*fix the syntax"
    with pytest.raises(TopologyError, match=expected):
        load_topology(broken)


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    listing = tmp_path / "list.yaml"
    listing.write_text("- DC1\n- DC2\n", encoding="utf-8")
    with pytest.raises(TopologyError, match=r"expected a YAML mapping with primary_site and data_centers"):
        load_topology(listing)


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"topology file not found; set GIR_TOPOLOGY"):
        load_topology(tmp_path / "nowhere.yaml")


def test_gir_topology_env_var_replaces_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    custom = tmp_path / "custom.yaml"
    custom.write_text(_with(("primary_site",), "DC2"), encoding="utf-8")
    monkeypatch.setenv("GIR_TOPOLOGY", str(custom))
    assert load_topology().primary_site == "DC2"


def test_edited_file_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(_with(("primary_site",), "DC1"), encoding="utf-8")
    assert load_topology(path).primary_site == "DC1"
    path.write_text(_with(("primary_site",), "DC2") + "\n# edited\n", encoding="utf-8")
    assert load_topology(path).primary_site == "DC2"


def test_shipping_needs_a_source_backup_folder() -> None:
    document = yaml.safe_load(yaml.safe_dump(VALID))
    with pytest.raises(
        TopologyError, match=r"shipping\.from_site: site 'DC1' has no speechminer\.index_backup"
    ):
        parse_topology(yaml.safe_dump(document), "t.yaml")


def test_list_defaults_are_never_shared_between_data_centers() -> None:
    """``[]`` defaults (cheaper to parse than ``default_factory=list``) still give each DC its own list."""
    topology = parse_topology(_with(("data_centers", 0, "rws"), {}), "t.yaml")
    first, second = topology.data_centers
    assert first.rws.contact_centers == [] and second.rws.contact_centers == []
    assert first.rws.contact_centers is not second.rws.contact_centers
    first.rws.contact_centers.append("ab")
    assert second.rws.contact_centers == []


def test_reindex_kinds_follow_screen_recording() -> None:
    topology = parse_topology(_with(("data_centers", 0, "rws", "screen_recording"), True), "t.yaml")
    assert topology.data_centers[0].reindex_kinds == ("recordings", "screen-recordings")
    assert topology.data_centers[1].reindex_kinds == ("recordings",)


# --- what the YAML itself may do ----------------------------------------------------------------------


def test_a_duplicate_top_level_key_names_the_key_and_both_lines() -> None:
    """PyYAML keeps the last one silently: a second data_centers made the first list (and its DAGs) vanish."""
    text = (
        "primary_site: DC1\n"
        "data_centers:\n"
        "  - site: DC1\n"
        "  - site: DC2\n"
        "    reindex: {enabled: true}\n"
        "data_centers:\n"
        "  - site: DC1\n"
    )
    with pytest.raises(TopologyError) as caught:
        parse_topology(text, "dup.yaml")
    assert str(caught.value) == (
        "dup.yaml: duplicate key 'data_centers' in the top level: on line 2 and again on line 6; YAML would "
        "silently keep only the last one; fix: remove one of them or merge them"
    )


def test_a_duplicate_nested_key_names_its_path() -> None:
    text = _with(("primary_site",), "DC1").replace("site: DC2\n", "site: DC2\n  site: DC3\n", 1)
    with pytest.raises(
        TopologyError, match=r"^t\.yaml: duplicate key 'site' in data_centers\[1\]: on line \d+"
    ):
        parse_topology(text, "t.yaml")
    flow = "primary_site: DC1\ndata_centers: [{site: DC1, timezone: UTC, timezone: Asia/Kolkata}]\n"
    with pytest.raises(TopologyError) as caught:
        parse_topology(flow, "t.yaml")
    assert "duplicate key 'timezone' in data_centers[0]: on line 2 and again on line 2 (columns " in str(
        caught.value
    )


def _alias_bomb(levels: int, width: int = 10) -> str:
    lines = ["primary_site: DC1", "l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * width) + "]" for n in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    """An alias bomb of 434 bytes once took 10 s and 650 MiB. This one (a million strings once built) is
    refused before anything is constructed, memory bounded by the text, not by what it would expand to."""
    import tracemalloc

    bomb = _alias_bomb(6)
    assert len(bomb) < 434
    tracemalloc.start()
    try:
        with pytest.raises(TopologyError) as caught:
            parse_topology(bomb, "bomb.yaml")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(caught.value) == (
        "bomb.yaml: l1[0]: a YAML alias (*name) repeats the value anchored on line 2; aliases are not "
        "allowed in a topology (a few nested aliases make a file of a few hundred bytes expand to "
        "gigabytes); fix: write the value out"
    )
    assert peak < 2 * 1024 * 1024  # constructed, 10**6 strings would need far more than this


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "primary_site: DC1\ndata_centers:\n  - &dc {site: DC1}\n  - *dc\n",
            "data_centers[1]: a YAML alias (*name) repeats the value anchored on line 3",
        ),
        (
            "primary_site: &p DC1\ndata_centers:\n  - site: *p\n",
            "data_centers[0].site: a YAML alias (*name) repeats the value anchored on line 1",
        ),
        (
            "primary_site: DC1\ndata_centers:\n  - <<: {site: DC1}\n",
            "data_centers[0]: line 3: YAML merge keys (<<) are not allowed in a topology",
        ),
        (
            "primary_site: DC1\n? [a, b]\n: 1\n",
            "(top level): line 2: a key must be a plain name, not a list, a mapping or an alias",
        ),
    ],
)
def test_aliases_merge_keys_and_complex_keys_are_refused(text: str, expected: str) -> None:
    with pytest.raises(TopologyError) as caught:
        parse_topology(text, "t.yaml")
    assert str(caught.value).startswith(f"t.yaml: {expected}")


def test_an_anchor_nothing_refers_to_is_harmless() -> None:
    text = "primary_site: DC1\ndata_centers:\n  - &first {site: DC1}\n"
    assert parse_topology(text, "t.yaml").sites == ["DC1"]


# --- ${NAME}: GIR_* only, and the cache follows the variables -------------------------------------------


@pytest.mark.parametrize("name", ["AIRFLOW_CONN_GIR_RWS_DC2", "HOME", "gir_data_dir", "PATH"])
def test_only_gir_variables_are_expanded(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    secret = "http://ops:Secret-Ops-Password-93@rws:8090"
    monkeypatch.setenv(name, secret)
    text = _with(("data_centers", 0, "rws", "conn_id"), f"${{{name}}}")
    with pytest.raises(TopologyError) as caught:
        parse_topology(text, "t.yaml")
    assert str(caught.value) == (
        f"t.yaml: data_centers[0].rws.conn_id: ${{{name}}} is not allowed: only GIR_* environment variables "
        "are expanded in a topology, because others may hold secrets (AIRFLOW_CONN_* holds a connection with "
        "its password); fix: put the value in a GIR_* variable or write it out"
    )
    assert secret not in str(caught.value)
    with pytest.raises(TopologyError, match=re.escape(f"${{{name}}} is not allowed")):
        parse_topology(_with(("data_centers", 0, "rws", "conn_id"), f"${{{name}:-x}}"), "t.yaml")


def test_a_changed_gir_variable_is_never_served_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(_with(("shipping", "destination"), "file://${GIR_REPLICA_DIR}/r"), encoding="utf-8")
    monkeypatch.setenv("GIR_REPLICA_DIR", "/srv/one")
    assert load_topology(path).shipping.destination == "file:///srv/one/r"
    monkeypatch.setenv("GIR_REPLICA_DIR", "/srv/two")
    assert load_topology(path).shipping.destination == "file:///srv/two/r"
    monkeypatch.setenv("GIR_UNRELATED", "x")  # a variable the file does not use: still served from the cache
    assert load_topology(path) is load_topology(path)


def test_an_edit_that_keeps_size_and_mtime_is_picked_up(tmp_path: Path) -> None:
    import os

    path = tmp_path / "t.yaml"
    path.write_text(_with(("primary_site",), "DC1"), encoding="utf-8")
    stat = path.stat()
    assert load_topology(path).primary_site == "DC1"
    path.write_text(_with(("primary_site",), "DC2"), encoding="utf-8")  # same length
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert load_topology(path).primary_site == "DC2"


# --- credentials never in a storage URL -----------------------------------------------------------------

PASSWORD = "Pa55-Not-In-Topology"

URL_KEYS = [
    ("data_centers", 0, "speechminer", "index_backup"),
    ("shipping", "destination"),
    ("failover", "audit_log"),
    ("data_centers", 1, "rcs"),
]


def _url_at(path: tuple[str | int, ...], url: str) -> tuple[str, str]:
    """(YAML text with ``url`` at the key, the key path an error names)."""
    if path[-1] == "rcs":
        return _with(path, [{"name": "rcs-x", "keystore": url}]), r"data_centers\[1\]\.rcs\[0\]\.keystore"
    return _with(path, url), re.escape(".".join(str(p) for p in path)).replace(r"\.0\.", r"\[0\]\.")


@pytest.mark.parametrize("path", URL_KEYS)
@pytest.mark.parametrize(
    ("url", "masked", "problem"),
    [
        (f"sftp://gir:{PASSWORD}@backup.example/replica", "sftp://***@backup.example/replica", "password"),
        (f"sftp://gir:{PASSWORD}/x@backup.example/replica", "sftp://***@backup.example/replica", "password"),
        (f"sftp://gir%3A{PASSWORD}@backup.example/r", "sftp://***@backup.example/r", "password"),
        (f"smb://CORP;gir:{PASSWORD}@nas/share", "smb://***@nas/share", "password"),
        (f"sftp://gir:{PASSWORD}@b@host/r", "sftp://***@host/r", "password"),
        (
            f"abfs://c@acct.dfs.core.windows.net/r?sv=1&sig={PASSWORD}",
            "abfs://c@acct.dfs.core.windows.net/r?sv=1&sig=***",
            "query",
        ),
    ],
)
def test_credentials_in_a_storage_url_are_refused_naming_the_key_and_never_shown(
    path: tuple[str | int, ...], url: str, masked: str, problem: str
) -> None:
    text, key = _url_at(path, url)
    with pytest.raises(TopologyError) as caught:
        parse_topology(text, "t.yaml")
    message = str(caught.value)
    assert re.search(rf"^  {key}: '{re.escape(masked)}': it ", message, re.MULTILINE), message
    assert (
        "a password in it ('user:password@')" if problem == "password" else "a secret in its query"
    ) in message
    assert "credentials never go in the topology, they belong in an Airflow connection" in message
    assert "scheme://<conn_id>@<path>" in message
    assert PASSWORD not in message


def test_credentials_from_a_gir_variable_are_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIR_REPLICA", f"sftp://gir:{PASSWORD}@backup.example/replica")
    with pytest.raises(TopologyError, match=r"shipping\.destination: 'sftp://\*\*\*@backup") as caught:
        parse_topology(_with(("shipping", "destination"), "${GIR_REPLICA}"), "t.yaml")
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "sftp://gir_sftp_backup@backup.example/replica",  # ObjectStoragePath's scheme://<conn_id>@<path>
        "s3://aws_rcs_dc2@bucket/rcs-a/keystore.p12",
        "abfs://container@account.dfs.core.windows.net/replica",
        "sftp://backup.example:22/replica@2026",  # a port, then an '@' in the path
        "file:///var/lib/gir/a:b@c",
    ],
)
def test_urls_without_credentials_stay_accepted(url: str) -> None:
    assert parse_topology(_with(("shipping", "destination"), url), "t.yaml").shipping.destination == url


def test_failover_site_field_is_optional_and_dotted() -> None:
    from include.gir_ops.topology import FailoverSettings

    base = {"approvers": [{"id": "approver"}], "audit_log": "file:///tmp/audit"}
    assert FailoverSettings.model_validate(base).site_field is None
    assert FailoverSettings.model_validate(base).confirm_timeout_minutes == 30
    settings = FailoverSettings.model_validate({**base, "site_field": "genesysEnvironment.eServicesSite"})
    assert settings.site_field == "genesysEnvironment.eServicesSite"


def test_the_shipping_bandwidth_limit_is_optional_and_read_in_megabits() -> None:
    assert parse_topology(_with(("primary_site",), "DC1"), "t.yaml").shipping.bandwidth_limit_mbps is None
    topology = parse_topology(_with(("shipping", "bandwidth_limit_mbps"), 200), "t.yaml")
    assert topology.shipping is not None and topology.shipping.bandwidth_limit_mbps == 200.0


@pytest.mark.parametrize("value", [0, -5, 0.5, 200_000, float("nan"), "fast"])
def test_a_bad_shipping_bandwidth_limit_names_the_field_and_the_fix(value: object) -> None:
    with pytest.raises(TopologyError, match=r"shipping\.bandwidth_limit_mbps") as error:
        parse_topology(_with(("shipping", "bandwidth_limit_mbps"), value), "t.yaml")
    if not isinstance(value, str):
        assert "between 1 and 100000 megabits per second" in str(error.value)
        assert "or leave the key out for no cap" in str(error.value)


# --- shipping.mode and the ready marker ----------------------------------------------------------------


def test_the_ready_marker_is_off_and_copy_is_the_mode_by_default() -> None:
    """SpeechMiner writes no completion marker: the example topology and the model both leave it off."""
    assert load_topology(DEFAULT_TOPOLOGY_PATH).shipping.ready_marker is None
    shipping = parse_topology(_with(("primary_site",), "DC1"), "t.yaml").shipping
    assert (shipping.ready_marker, shipping.mode) == (None, "copy")


def _in_place(**shipping: object) -> str:
    document = yaml.safe_load(_with(("shipping", "mode"), "verify-in-place"))
    del document["data_centers"][0]["speechminer"]  # SpeechMiner writes to the backup DC directly
    document["shipping"].update(shipping)
    return yaml.safe_dump(document)


def test_verify_in_place_needs_no_source_folder_and_keeps_manifests_beside_the_backups() -> None:
    shipping = parse_topology(_in_place(), "t.yaml").shipping
    assert shipping.mode == "verify-in-place"
    assert shipping.manifest_root == "file:///tmp/replica.gir-manifests"
    explicit = parse_topology(_in_place(manifest_store="file:///srv/gir/manifests"), "t.yaml").shipping
    assert explicit.manifest_root == "file:///srv/gir/manifests"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            _with(("shipping", "mode"), "rsync"),
            r"shipping\.mode: Input should be 'copy' or 'verify-in-place'; fix: use one of the values named",
        ),
        (
            _in_place(manifest_store="file:///tmp/replica/manifests"),
            r"shipping\.manifest_store: 'file:///tmp/replica/manifests' is inside shipping\.destination, the "
            r"folder SpeechMiner writes its backups to",
        ),
        (
            _with(("shipping", "manifest_store"), "file:///srv/m"),
            r"shipping\.manifest_store: is only used with shipping\.mode 'verify-in-place'",
        ),
        (
            _with(("shipping", "mode"), "verify-in-place"),  # DC1 still names another index_backup
            r"data_centers\[0\]\.speechminer\.index_backup: 'file:///tmp/backup' differs from "
            r"shipping\.destination 'file:///tmp/replica': in verify-in-place mode SpeechMiner writes",
        ),
    ],
)
def test_bad_shipping_mode_settings_name_the_key_and_the_fix(text: str, expected: str) -> None:
    with pytest.raises(TopologyError) as caught:
        parse_topology(text, "bad.yaml")
    assert re.search(expected, str(caught.value)), str(caught.value)


def test_copy_mode_still_needs_the_primarys_backup_folder() -> None:
    document = yaml.safe_load(_with(("primary_site",), "DC1"))
    del document["data_centers"][0]["speechminer"]
    with pytest.raises(TopologyError, match=r"or set shipping\.mode: verify-in-place"):
        parse_topology(yaml.safe_dump(document), "bad.yaml")
