"""What the failed check tells the operator to do: never advice that could destroy a key."""

from __future__ import annotations

from typing import Any

from include.gir_ops.keystore.report import failure_message, held_only_here, what_to_do


def _cert(alias: str, key: bool = True) -> dict[str, Any]:
    return {"alias": alias, "has_private_key": key}


def _item(
    name: str, state: str, certs: list[dict[str, Any]], *, opened: bool = True, detail: str = ""
) -> dict:
    return {
        "instance": name,
        "site": "DC2",
        "state": state,
        "detail": detail or state,
        "opened": opened,
        "certificates": certs,
    }


REFERENCE = _item("rcs-dc1-a", "match", [_cert("gir-2025"), _cert("gir-2026")])


def _report(*items: dict[str, Any]) -> dict[str, Any]:
    return {"ok": False, "reference": "rcs-dc1-a", "instances": [REFERENCE, *items]}


def test_an_instance_with_a_key_the_reference_lacks_must_not_be_overwritten() -> None:
    extra = _item("rcs-dc2-a", "drift", [_cert("gir-2025"), _cert("gir-2026"), _cert("gir-2027")])
    assert held_only_here(extra, REFERENCE) == ["gir-2027"]
    message = failure_message(_report(extra)) or ""
    assert (
        "what to do: do not overwrite: this instance holds a key the reference does not (gir-2027)" in message
    )
    assert "import the entries gir-2027 from rcs-dc2-a into rcs-dc1-a's keystore" in message
    assert "copy rcs-dc1-a's keystore over it" not in message


def test_a_private_key_held_only_here_counts_too() -> None:
    key_here = _item("rcs-dc2-a", "drift", [_cert("gir-2025"), _cert("gir-2026")])
    reference = _item("rcs-dc1-a", "match", [_cert("gir-2025"), _cert("gir-2026", key=False)])
    assert held_only_here(key_here, reference) == ["gir-2026"]


def test_a_stale_replica_gets_the_replication_steps_in_order() -> None:
    stale = _item("rcs-dc2-a", "drift", [_cert("gir-2025")])
    advice = what_to_do(stale, REFERENCE, "rcs-dc1-a")
    assert advice == (
        "back up rcs-dc2-a's keystore (file and password), copy rcs-dc1-a's keystore over it, restart RCS on "
        "rcs-dc2-a, then trigger this check again"
    )


def test_unopened_keystores_are_listed_before_anything_is_overwritten() -> None:
    unopened = _item("rcs-dc2-a", "drift", [], opened=False)
    advice = what_to_do(unopened, REFERENCE, "rcs-dc1-a")
    assert advice.startswith("the aliases were not compared, so first list both keystores (keytool -list)")
    assert "if it does: do not overwrite, merge instead" in advice


def test_a_missing_keystore_on_an_unmounted_share_says_mount_it_first() -> None:
    unmounted = _item(
        "rcs-dc2-a", "missing", [], opened=False, detail="the share is not mounted on this worker"
    )
    assert what_to_do(unmounted, REFERENCE, "rcs-dc1-a").startswith("mount the share on this worker")
