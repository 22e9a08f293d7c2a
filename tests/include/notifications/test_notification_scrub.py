"""No notification text ever carries a password, a connection URI or keystore bytes."""

from __future__ import annotations

import secrets

from include.gir_ops.notifications import messages
from include.gir_ops.notifications.scrub import known_secrets, one_line, scrub


def test_a_known_password_and_every_connection_uri_are_removed() -> None:
    password = secrets.token_urlsafe(18)
    text = (
        f"auth failed for ops:{password}@rws-dc2:8080 (http://ops:{password}@rws-dc2:8080/api/v2/ops) "
        f"conn postgresql://airflow@db.internal/airflow and smtp://alerts:{password}@mail:587"
    )
    cleaned = scrub(text, [password])
    assert password not in cleaned
    assert "postgresql://" not in cleaned and "smtp://" not in cleaned and "http://ops" not in cleaned
    assert "<URI with credentials removed>" in cleaned


def test_secret_pairs_are_masked_without_knowing_the_secret() -> None:
    password = secrets.token_urlsafe(12)
    for text in (
        f"password={password}",
        f'{{"password": "{password}", "login": "ops"}}',
        f"api_key: {password}",
        f"https://host/x?sig={password}&a=1",
        f"token='{password}'",
    ):
        cleaned = scrub(text)
        assert password not in cleaned, cleaned
    assert scrub("keystore check passed: all match") == "keystore check passed: all match"


def test_keystore_bytes_never_pass() -> None:
    raw = bytes(range(0x30, 0x30 + 40)) + b"\x82\x04\xa1\x02\x01\x03"
    for text in (
        f"unexpected content {raw!r}",
        "prefix \\x30\\x82\\x04\\xa1 suffix",
        "blob "
        + "MIIKpAIBAzCCCl4GCSqGSIb3DQEHAaCCCk8EggpLMIIKRzCCBY8GCSqGSIb3DQEHBqCCBYAwggV8AgEAMIIFdQYJKo",
        "control \x00\x01\x02 chars",
    ):
        cleaned = scrub(text)
        assert "\\x82" not in cleaned and "MIIKpAIBAz" not in cleaned and "\x00" not in cleaned, cleaned
    digest = "a" * 64  # a SHA-256 fingerprint is shown, it is not keystore content
    link = "http://localhost:8080/dags/gir_speechminer_backup_ship/runs/scheduled__2026-11-29T03%3A30%3A00%2B00%3A00"
    assert scrub(f"Open the run: {link}") == f"Open the run: {link}"
    assert digest in scrub(f"fingerprint {digest}")


def test_one_line_is_bounded_and_says_what_was_cut() -> None:
    assert one_line("first\n\n  second\nthird") == "first / second / third"
    cut = one_line("word " * 1000)
    assert len(cut) == 400 and cut.endswith("…")
    assert one_line(None) == ""


def test_known_secrets_reads_the_named_connections(monkeypatch) -> None:
    password = secrets.token_urlsafe(16)
    webhook = "slack://T0/B0/" + secrets.token_hex(12)
    monkeypatch.setenv("AIRFLOW_CONN_GIR_TEST_SECRET", f'{{"conn_type": "http", "password": "{password}"}}')
    monkeypatch.setenv(
        "AIRFLOW_CONN_GIR_TEST_APPRISE",
        f'{{"conn_type": "apprise", "extra": {{"config": {{"path": "{webhook}"}}}}}}',
    )
    found = known_secrets(["gir_test_secret", "gir_test_apprise", "gir_missing_connection"])
    assert password in found and webhook in found


def test_every_message_is_scrubbed_whatever_its_source_did() -> None:
    password = secrets.token_urlsafe(16)
    message = messages.run_failed(
        dag_id="gir_x",
        run_id="manual__1",
        run_link="http://localhost:8080/dags/gir_x/runs/manual__1",
        failed=[
            {"task_id": "t", "map_index": -1, "error": f"RuntimeError: ops:{password}@h rejected {password}"}
        ],
        secrets=[password],
    )
    assert password not in message.title + message.body
    assert "http://localhost:8080/dags/gir_x/runs/manual__1" in message.body
