"""Fixtures of the keystore check's unit tests (helpers: ``keystore_support``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from include.gir_ops.topology import Topology
from tests.include.keystore.keystore_support import HungKeystore, hung_keystores, topology_for


@pytest.fixture
def topology(tmp_path: Path) -> Topology:
    return topology_for(tmp_path)


@pytest.fixture
def hang() -> Iterator[Callable[[Path], HungKeystore]]:
    with hung_keystores() as make:
        yield make
