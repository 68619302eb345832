"""The pipeline parts the operator endpoints plug in: registry reader, signer, ranker, builder.

:func:`real_toolkit` builds the same real implementations the CLI uses
(``deltaport.pipelines.adapters``), signing bundles with the data directory's key
when there is one. Tests may hand :func:`deltaport.hub.app.create_app` a toolkit of
fakes (``tests/fleet/fakes.py``) to exercise the HTTP layer without a registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from deltaport.hub.settings import HubServerSettings
from deltaport.pipelines.interfaces import (
    BundleBuilder,
    ImageIdentityReader,
    SignatureMaker,
    SourceRanker,
)


@dataclass(frozen=True)
class Toolkit:
    """The Protocol implementations the pipelines are called with."""

    reader: ImageIdentityReader
    signer: SignatureMaker
    ranker: SourceRanker
    builder: BundleBuilder


def real_toolkit(settings: HubServerSettings) -> Toolkit:
    """The real parts, over ``deltaport.oci`` / ``delta`` / ``bundle``.

    Raises:
        FormatError / StorageError: the data dir's signing key exists but is unreadable.
    """
    from deltaport.bundle.keys import PRIVATE_KEY_NAME
    from deltaport.oci import TransportOptions
    from deltaport.pipelines.adapters import (
        DeltaBundleBuilder,
        DeltaSignatureMaker,
        OciIdentityReader,
        SignatureRanker,
    )
    from deltaport.trust.files import load_signer

    options = TransportOptions(insecure=settings.registry_insecure)
    key_path = settings.fleet.keys_dir / PRIVATE_KEY_NAME
    key = load_signer(key_path) if key_path.exists() else None  # with keys/keylist.json
    return Toolkit(
        reader=OciIdentityReader(options),
        signer=DeltaSignatureMaker(options),
        ranker=SignatureRanker(),
        builder=DeltaBundleBuilder(options, key, settings.fleet.patch_cache_dir),
    )
