"""shipping.bandwidth_limit_mbps: the copy between the DCs is paced to the cap, the read-back is not.

Time is a fake clock that only moves when the throttle sleeps, so the cap is checked exactly, without a
wall-clock assertion: the copy of N bytes must take N / cap seconds of that clock, in steps of at most a
tenth of a second's worth of bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from include.gir_ops.backup import tasks as tasks_module
from include.gir_ops.backup.tasks import copy_task, manifest_task, verify_and_publish_task
from include.gir_ops.backup.transfer import THROTTLE_SLICES_PER_SECOND, Throttle, copy_backup
from include.gir_ops.backup.tree import scan_backup
from tests.include.backup.backup_support import CHUNK, KIB, NAME, make_tree, osp, route_for, sha256


class FakeTime:
    """A clock that moves only when something sleeps on it; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_throttle_keeps_the_average_rate_at_the_cap_and_sleeps_in_small_steps() -> None:
    fake = FakeTime()
    throttle = Throttle(1_000_000, clock=fake.clock, sleep=fake.sleep)
    for _ in range(50):
        throttle.passed(100_000)
    assert throttle.sent == 5_000_000
    assert fake.now - 1000.0 == pytest.approx(5.0)  # 5 MB at 1 MB/s
    assert throttle.slept == pytest.approx(5.0)
    assert max(fake.sleeps) == pytest.approx(0.1)


def test_after_a_stall_the_throttle_catches_up_by_at_most_one_second_of_bytes() -> None:
    fake = FakeTime()
    throttle = Throttle(1_000_000, clock=fake.clock, sleep=fake.sleep)
    throttle.passed(1)
    fake.now += 30.0  # the source stalled for 30 s
    sent_before = fake.now
    for _ in range(40):
        throttle.passed(100_000)  # 4 MB after the stall
    # One second's worth may go at once; the other 3 MB take 3 s at the cap.
    assert fake.now - sent_before == pytest.approx(3.0, abs=1e-6)


def test_the_cap_is_megabits_per_second_and_none_means_no_cap() -> None:
    throttle = Throttle.from_mbps(200)
    assert throttle is not None and throttle.bytes_per_second == 25_000_000
    assert throttle.piece(8 * 1024 * 1024) == 25_000_000 // THROTTLE_SLICES_PER_SECOND
    assert Throttle.from_mbps(None) is None
    with pytest.raises(ValueError, match="more than 0"):
        Throttle(0)


def test_a_capped_copy_takes_bytes_over_the_cap_on_the_clock_and_copies_every_byte(tmp_path: Path) -> None:
    files = {f"seg-{i}.dat": os.urandom(300 * KIB + i) for i in range(4)} | {"empty.log": b""}
    source = make_tree(tmp_path / "src" / "index-1", files)
    staging = tmp_path / "dst" / "index-1.partial"
    fake = FakeTime()
    rate = 400 * KIB  # bytes per second: a tenth is 40 KiB, smaller than the chunk
    throttle = Throttle(rate, clock=fake.clock, sleep=fake.sleep)
    result = copy_backup(
        osp(source), scan_backup(osp(source)), osp(staging), chunk_size=CHUNK, throttle=throttle
    )
    total = sum(len(data) for data in files.values())
    assert throttle.sent == total
    assert fake.now - 1000.0 == pytest.approx(total / rate)
    assert result.throttled_seconds == pytest.approx(total / rate, rel=0.02)
    assert max(fake.sleeps) <= 64 * KIB / rate + 1e-9, "paced in pieces, not whole chunks or files"
    for path, data in files.items():
        assert (staging / path).read_bytes() == data
    assert {e.path: e.sha256 for e in result.entries} == {p: sha256(d) for p, d in files.items()}


def test_the_route_cap_paces_the_copy_task_but_never_the_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"seg-0.dat": os.urandom(700 * KIB), "seg-1.dat": os.urandom(200 * KIB)}
    make_tree(tmp_path / "src" / NAME, files)
    route = route_for(tmp_path, bandwidth_limit_mbps=8.0)  # 1 MB/s
    fake = FakeTime()
    made: list[Throttle] = []

    class FakeClockThrottle(Throttle):
        def __init__(self, bytes_per_second: float, **_: Any) -> None:
            super().__init__(bytes_per_second, clock=fake.clock, sleep=fake.sleep)
            made.append(self)

    monkeypatch.setattr(tasks_module, "Throttle", FakeClockThrottle)
    plan = manifest_task(route, NAME, chunk_size=CHUNK)
    copied = copy_task(route, plan, chunk_size=CHUNK)
    (throttle,) = made
    total = sum(len(data) for data in files.values())
    assert throttle.bytes_per_second == 1_000_000
    assert fake.now - 1000.0 == pytest.approx(total / 1_000_000)
    sleeps_after_copy, sent_after_copy = len(fake.sleeps), throttle.sent

    published = verify_and_publish_task(route, plan, copied, chunk_size=CHUNK)
    assert published["bytes"] == total
    assert (len(fake.sleeps), throttle.sent) == (sleeps_after_copy, sent_after_copy), "read-back not capped"


def test_without_a_cap_the_copy_never_sleeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path / "src" / NAME, {"seg.dat": os.urandom(300 * KIB)})
    route = route_for(tmp_path)
    made: list[float | None] = []
    real = Throttle.from_mbps

    def spy(mbps: float | None, **kwargs: Any) -> Throttle | None:
        made.append(mbps)
        return real(mbps, **kwargs)

    monkeypatch.setattr(tasks_module.Throttle, "from_mbps", spy)
    copied = copy_task(route, manifest_task(route, NAME, chunk_size=CHUNK), chunk_size=CHUNK)
    assert made == [None]
    assert copied["throttled_seconds"] == 0.0
