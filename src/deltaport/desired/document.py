"""The desired-manifest envelope: canonical payload, Ed25519 signatures, strict parsing.

Pure: values and keys in, bytes out; bytes and keys in, a checked :class:`DesiredState`
out. The envelope (docs/desired-manifest.md)::

    {"format": "deltaport.desired/1",
     "payload": "<base64 of the canonical payload JSON>",
     "signatures": [{"key_id": "ed25519:…", "signature": "<base64>"}]}

A signature covers ``SIGNING_CONTEXT + payload bytes`` (the decoded base64), so the
payload is verified exactly as signed, never re-serialised first. The key is the
hub's *manifest* key, not the bundle key: who may say what runs and who may say what
content is can be different parties. An envelope may also carry ``key_list``, the
root-signed key list that certifies the manifest key (docs/trust.md); a device with
root keys learns the key from it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from deltaport.bundle.envelope import b64_field, verify_signatures
from deltaport.bundle.format import DIGEST_RE
from deltaport.bundle.index import loads_strict
from deltaport.bundle.keys import key_id
from deltaport.bundle.signing import Keyring, Signer, TrustedKeys, resolve_keys
from deltaport.errors import FormatError, IntegrityError, SignatureError

FORMAT = "deltaport.desired/1"
SIGNING_CONTEXT = b"deltaport-desired-manifest\x00"
"""Prefixed to the payload bytes to form the signing input (never a valid bundle index)."""

DESIRED_MAX_BYTES = 4 * 1024 * 1024  # a whole envelope, as served by the hub
MAX_SIGNATURES = 8
MAX_MODULES = 200
MAX_NAME_CHARS = 200  # device, deployment and module names
MAX_REFERENCE_CHARS = 500
ED25519_SIGNATURE_SIZE = 64

ENVELOPE_FIELDS = frozenset({"format", "payload", "signatures"})
KEY_LIST_FIELD = "key_list"  # optional: the key list envelope (docs/trust.md)
PAYLOAD_FIELDS = frozenset(
    {"format", "device", "version", "deployment", "issued_at", "kind", "modules", "manifest"}
)
MODULE_FIELDS = frozenset({"module", "reference", "image_id"})


class ManifestKind(StrEnum):
    """The tool a deployment manifest was written for."""

    IOTEDGE = "iotedge"
    COMPOSE = "compose"


@dataclass(frozen=True)
class DesiredModule:
    """One module and the exact image it must run."""

    module: str  # IoT Edge module name or Compose service name
    reference: str  # device-local reference, "127.0.0.1:5000/demo/app:v2"
    image_id: str  # the config digest the image must have


@dataclass(frozen=True)
class DesiredState:
    """A verified desired manifest: what DEVICE should run from VERSION on."""

    device: str
    version: int  # per device; only ever goes up
    deployment: str  # the deployment set id
    issued_at: str  # ISO 8601 UTC, informational
    kind: ManifestKind
    modules: tuple[DesiredModule, ...]
    manifest: dict[str, Any] = field(hash=False, compare=False)  # the device-local document
    signer: str | None = None  # key id that signed it (set by decode_envelope)

    def image_of(self, module: str) -> DesiredModule:
        """The module entry named MODULE. Raises KeyError if there is none."""
        for entry in self.modules:
            if entry.module == module:
                return entry
        raise KeyError(module)


def payload_bytes(state: DesiredState) -> bytes:
    """The canonical payload JSON of STATE (sorted keys, no spaces, UTF-8)."""
    doc = {
        "format": FORMAT,
        "device": state.device,
        "version": state.version,
        "deployment": state.deployment,
        "issued_at": state.issued_at,
        "kind": state.kind.value,
        "modules": [
            {"module": m.module, "reference": m.reference, "image_id": m.image_id}
            for m in state.modules
        ],
        "manifest": state.manifest,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode_envelope(state: DesiredState, keys: Sequence[Ed25519PrivateKey | Signer]) -> bytes:
    """The signed envelope bytes of STATE, one signature per key (none: unsigned).

    The key list of the first :class:`Signer` that has one is embedded.
    """
    payload = payload_bytes(state)
    key_list = next((k.key_list for k in keys if isinstance(k, Signer) and k.key_list), None)
    private_keys = [k.private_key if isinstance(k, Signer) else k for k in keys]
    signatures = [
        {
            "key_id": key_id(k.public_key()),
            "signature": base64.b64encode(k.sign(SIGNING_CONTEXT + payload)).decode("ascii"),
        }
        for k in private_keys
    ]
    envelope: dict[str, object] = {
        "format": FORMAT,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": signatures,
    }
    if key_list is not None:
        envelope[KEY_LIST_FIELD] = dict(key_list)
    return json.dumps(envelope, sort_keys=True, indent=1).encode("ascii")


def decode_envelope(data: bytes, trusted_keys: TrustedKeys, *, device: str) -> DesiredState:
    """Check DATA: format, a signature by a trusted key, a well-formed payload for DEVICE.

    TRUSTED_KEYS are pinned manifest keys, or a keyring that picks them from the key
    list the envelope carries (docs/trust.md).

    Raises:
        FormatError: too large, not the envelope, or a malformed payload.
        SignatureError: unsigned, signed only by untrusted keys, or a signature that
            does not verify (the payload was altered).
        IntegrityError: a valid manifest for another device.
    """
    if len(data) > DESIRED_MAX_BYTES:
        raise FormatError(f"desired manifest is larger than {DESIRED_MAX_BYTES} bytes")
    document = loads_strict(data, "desired manifest")
    key_list = _key_list(document)
    envelope = _exact(document, ENVELOPE_FIELDS, "envelope")
    if envelope["format"] != FORMAT:
        raise FormatError(
            f"desired manifest format {str(envelope['format'])[:40]!r} is not {FORMAT!r} "
            "(an unsigned manifest from an older hub, or a newer format)"
        )
    payload = _b64(envelope["payload"], "payload")
    resolved = resolve_keys(trusted_keys, key_list)
    explain = resolved.explain if isinstance(trusted_keys, Keyring) else None
    signer = _check_signatures(payload, envelope["signatures"], resolved.keys, explain)
    state = _parse_payload(payload)
    if state.device != device:
        raise IntegrityError(
            f"desired manifest v{state.version} is for device {state.device!r}, not {device!r}"
        )
    return DesiredState(
        device=state.device, version=state.version, deployment=state.deployment,
        issued_at=state.issued_at, kind=state.kind, modules=state.modules,
        manifest=state.manifest, signer=signer,
    )


def _key_list(document: Any) -> Mapping[str, Any] | None:
    """Take the optional key list out of DOCUMENT (what is left must be the envelope)."""
    if not isinstance(document, dict) or KEY_LIST_FIELD not in document:
        return None
    key_list = document.pop(KEY_LIST_FIELD)
    if not isinstance(key_list, dict):
        raise FormatError(f"desired manifest {KEY_LIST_FIELD} must be an object")
    return key_list


def _exact(obj: Any, fields: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.keys() != fields:
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise FormatError(f"desired manifest {what} must have exactly {sorted(fields)}, got {got}")
    return obj


def _b64(value: Any, what: str) -> bytes:
    return b64_field(value, f"desired manifest {what}")


def _check_signatures(
    payload: bytes, entries: Any, trusted_keys: Sequence[Ed25519PublicKey],
    explain: Callable[[str], str] | None = None,
) -> str:
    found = verify_signatures(payload, entries, trusted_keys, context=SIGNING_CONTEXT,
                              what="desired manifest", max_signatures=MAX_SIGNATURES)
    if found.signer is not None:
        return found.signer
    if not found.signers:
        raise SignatureError(
            "desired manifest is unsigned; a signature by a trusted key is required")
    signers = ", ".join(found.signers)
    if explain is not None:
        raise SignatureError(f"desired manifest is signed by {signers}, none of "
                             f"which is trusted: {'; '.join(explain(s) for s in found.signers)}")
    trusted = ", ".join(key_id(k) for k in trusted_keys) or "none"
    raise SignatureError(
        f"desired manifest is signed by {signers}, none of which is trusted (trusted: {trusted})"
    )


def _text(doc: dict[str, Any], key: str, limit: int, where: str) -> str:
    value = doc[key]
    if not isinstance(value, str) or not value or len(value) > limit:
        raise FormatError(f"desired manifest {where}.{key} must be a string of 1-{limit} chars")
    return value


def _parse_module(obj: Any, i: int) -> DesiredModule:
    where = f"modules[{i}]"
    entry = _exact(obj, MODULE_FIELDS, where)
    image_id = entry["image_id"]
    if not isinstance(image_id, str) or not DIGEST_RE.fullmatch(image_id):
        raise FormatError(f"desired manifest {where}.image_id must be a sha256 digest")
    return DesiredModule(
        module=_text(entry, "module", MAX_NAME_CHARS, where),
        reference=_text(entry, "reference", MAX_REFERENCE_CHARS, where),
        image_id=image_id,
    )


def _parse_payload(payload: bytes) -> DesiredState:
    doc = _exact(loads_strict(payload, "desired manifest payload"), PAYLOAD_FIELDS, "payload")
    if doc["format"] != FORMAT:
        raise FormatError(f"desired manifest payload format is not {FORMAT!r}")
    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**53:
        raise FormatError("desired manifest version must be a positive integer")
    try:
        kind = ManifestKind(doc["kind"])
    except ValueError as exc:
        raise FormatError(f"desired manifest kind {str(doc['kind'])[:40]!r} is unknown") from exc
    modules = doc["modules"]
    if not isinstance(modules, list) or not 1 <= len(modules) <= MAX_MODULES:
        raise FormatError(f"desired manifest must name 1-{MAX_MODULES} modules")
    parsed = tuple(_parse_module(m, i) for i, m in enumerate(modules))
    if len({m.module for m in parsed}) != len(parsed):
        raise FormatError("desired manifest names a module twice")
    if not isinstance(doc["manifest"], dict):
        raise FormatError("desired manifest payload.manifest must be an object")
    return DesiredState(
        device=_text(doc, "device", MAX_NAME_CHARS, "payload"),
        version=version,
        deployment=_text(doc, "deployment", MAX_NAME_CHARS, "payload"),
        issued_at=_text(doc, "issued_at", 40, "payload"),
        kind=kind,
        modules=parsed,
        manifest=doc["manifest"],
    )
