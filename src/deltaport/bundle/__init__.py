"""The bundle file: a signed, versioned, self-describing container that carries patches.

Format: docs/bundle-format.md. Layout of this package, one concept per module:

- ``format``    constants and limits shared by writer and reader (no I/O)
- ``index``     the index model, canonical JSON and strict parsing (pure)
- ``signing``   the signature document and Ed25519 checks (pure)
- ``head``      head assembly/parsing and per-chunk checks for downloaders (pure)
- ``payload``   chunk hashing and one-pass payload verification (pure)
- ``keys``      Ed25519 key files
- ``writer``    :class:`BundleWriter` (file I/O)
- ``reader``    :class:`BundleReader` (file I/O)
"""

from deltaport.bundle.format import (
    DEFAULT_CHUNK_SIZE,
    FORMAT_VERSION,
    BundleLimits,
)
from deltaport.bundle.head import read_head, required_head_bytes, verify_chunk
from deltaport.bundle.index import BundleIndex, MemberInfo, Release
from deltaport.bundle.keys import (
    KeyPair,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
)
from deltaport.bundle.payload import PayloadVerifier
from deltaport.bundle.reader import BundleReader
from deltaport.bundle.signing import Keyring, ResolvedKeys, Signer, TrustedKeys
from deltaport.bundle.writer import BundleInfo, BundleWriter

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FORMAT_VERSION",
    "BundleIndex",
    "BundleInfo",
    "BundleLimits",
    "BundleReader",
    "BundleWriter",
    "KeyPair",
    "Keyring",
    "MemberInfo",
    "PayloadVerifier",
    "Release",
    "ResolvedKeys",
    "Signer",
    "TrustedKeys",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "read_head",
    "required_head_bytes",
    "verify_chunk",
]
