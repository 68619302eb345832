"""Shared fixtures: real services started per test (or per module) and stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.fixtures.services import Registry, run_registry

# Property tests judge behaviour, never speed: on a loaded 2-core CI machine a single
# draw can take over a second, which hypothesis would otherwise fail as "too slow"
# (seen in tests/agent/runtime/test_gate.py). Tests' own @settings still apply on top.
settings.register_profile(
    "deltaport", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("deltaport")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A fresh Docker Distribution registry for one test."""
    with run_registry(tmp_path / "registry") as reg:
        yield reg


@pytest.fixture(scope="module")
def module_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A Docker Distribution registry shared by the tests of one module."""
    with run_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg
