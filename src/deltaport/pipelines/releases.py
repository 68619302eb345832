"""Releases: the signed version and expiry of each bundle, per target name (issue 11).

Every bundle the hub builds carries a release (docs/bundle-format.md §9): a version
taken from a counter per device target name that only goes up, and an expiry. A
device refuses a bundle older than the newest it holds for that name, so a stored
bundle is offered again only while no newer release of its name is for another image.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from deltaport.fleet.db import session_scope
from deltaport.fleet.models import BundleRelease, BundleVersion
from deltaport.pipelines.interfaces import BuiltBundle, ImageInfo
from deltaport.pipelines.planner import Plan

DEFAULT_RELEASE_TTL_SECONDS = 90 * 86_400
"""How long a bundle the hub signs stays valid (``expires_at``): generous, because
store-and-forward delivery (a satellite link, a courier) can take weeks."""


def device_target_name(info: ImageInfo) -> str:
    """The name a device stores the target as (``demo/app:stable``): the counter's key."""
    from deltaport.pipelines.adapters import delivered_name

    return delivered_name(info.name)


def release_is_current(release: BundleRelease | None, image_id: str,
                       last: BundleVersion | None, now: float, ttl: float) -> bool:
    """Pure: may a stored bundle of ``image_id`` with ``release`` be offered again?

    Only while no newer release of its name is for another image (a device that took
    that one would refuse this bundle as a replay: redeploying the old image builds
    a new bundle, with a higher version), and while at least half its validity is
    left (it may spend weeks in transit). A bundle without a release (built before
    releases existed) is not reused.
    """
    if release is None:
        return False
    if last is not None and release.version < last.last_version and (
            last.last_image_id != image_id):
        return False
    return release.expires_at - now >= ttl / 2


def assign_releases(engine: Engine, plan: Plan, *,
                    release_ttl: float = DEFAULT_RELEASE_TTL_SECONDS) -> dict[str, BundleRelease]:
    """Take the next version of each to-be-built bundle's target name, in one transaction.

    Bundles of the same image and name built by one deployment (for devices with
    different sources) share one version: they are one release.

    The counters are raised before anything is built: a failed build leaves a gap,
    never a version signed twice. Returns bundle key → release (not yet stored).
    """
    expires = int(datetime.now(UTC).timestamp() + release_ttl)
    out: dict[str, BundleRelease] = {}
    versions: dict[tuple[str, str], int] = {}  # one version per name and image per deploy
    with session_scope(engine) as session:
        for planned in plan.to_build:
            name = device_target_name(planned.target)
            image_id = planned.target.image_id
            version = versions.get((name, image_id))
            if version is None:
                counter = session.get(BundleVersion, name, with_for_update=True)
                if counter is None:
                    counter = BundleVersion(target_name=name, last_version=0)
                    session.add(counter)
                counter.last_version += 1
                counter.last_image_id = image_id
                session.flush()
                version = versions[(name, image_id)] = counter.last_version
            out[planned.key] = BundleRelease(bundle_key=planned.key, target_name=name,
                                             version=version, expires_at=expires)
    return out


def save_releases(session: Session, releases: Mapping[str, BundleRelease],
                   built: Mapping[str, tuple[BuiltBundle, str]]) -> None:
    for key in built:
        release = releases[key]
        session.merge(BundleRelease(bundle_key=key, target_name=release.target_name,
                                    version=release.version, expires_at=release.expires_at))
