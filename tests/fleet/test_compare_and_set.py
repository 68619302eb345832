"""Every status write is a compare-and-set against the status it was decided from.

A device that reports an image while a deployment is being planned and built must not
have that report overwritten when the deployment is recorded (issue 15), on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select

from deltaport.errors import StateError
from deltaport.fleet import status
from deltaport.fleet.db import session_scope
from deltaport.fleet.models import DeploymentSet, Event
from deltaport.pipelines.interfaces import BuiltBundle, BundleSpec
from tests.fleet.fakes import FakeBuilder
from tests.fleet.test_pipelines import Fleet, fleet  # noqa: F401


@dataclass
class RacingBuilder(FakeBuilder):
    """Runs BEFORE_FIRST_BUILD (the world moving) between planning and recording."""

    before_first_build: list[Callable[[], None]] = field(default_factory=list)

    def build(self, spec: BundleSpec, work_dir: Path) -> BuiltBundle:
        while self.before_first_build:
            self.before_first_build.pop(0)()
        return super().build(spec, work_dir)


def statuses(world: Fleet, device: str) -> dict[str, str]:
    with session_scope(world.engine) as s:
        return {i["image"]: i["status"] for i in status.device_status(s, device)["images"]}


def test_present_reported_during_a_deploy_is_not_overwritten(fleet: Fleet) -> None:  # noqa: F811
    # a had web:2 once and lost it: 'removed' is what the deploy plans from
    fleet.report("a", "reg.io/app:1", "reg.io/web:1", "reg.io/web:2")
    fleet.report("a", "reg.io/app:1", "reg.io/web:1")
    assert statuses(fleet, "a")["reg.io/web:2"] == "removed"
    builder = RacingBuilder()
    builder.before_first_build.append(
        lambda: fleet.report("a", "reg.io/app:1", "reg.io/web:1", "reg.io/web:2")
    )
    fleet.builder = builder
    with pytest.raises(StateError, match="changed while the deployment was planned"):
        fleet.deploy(("a",))
    assert statuses(fleet, "a")["reg.io/web:2"] == "present"
    with session_scope(fleet.engine) as s:
        assert s.scalar(select(func.count()).select_from(DeploymentSet)) == 0
        assert s.scalar(select(func.count()).where(Event.to_status == "in_transit")) == 0


def test_an_image_that_appears_during_a_deploy_is_not_overwritten(fleet: Fleet) -> None:  # noqa: F811
    # c has only base: app:2 has no row when planned, and one when recorded
    builder = RacingBuilder()
    builder.before_first_build.append(lambda: fleet.report("c", "reg.io/base:1", "reg.io/app:2"))
    fleet.builder = builder
    with pytest.raises(StateError, match="changed while the deployment was planned"):
        fleet.deploy(("c",))
    assert statuses(fleet, "c")["reg.io/app:2"] == "present"
    # planned again from the new state, it goes through and sends only web:2
    fleet.builder = FakeBuilder()
    result = fleet.deploy(("c",))
    assert statuses(fleet, "c") == {
        "reg.io/base:1": "present", "reg.io/app:2": "present", "reg.io/web:2": "in_transit"
    }
    assert result.state == "pending"
