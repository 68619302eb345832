"""The device's local registry, as the agent sees it: which images it holds.

Lists repositories (``/v2/_catalog``) and tags (``/v2/<name>/tags/list``), following
``Link`` pagination with a bound on the total, and names each tag's image by its
config digest (the image ID) through ``deltaport.oci``. Everything it lists can be a
source for the next delta: every layer of every image on the device.

For the image GC (``agent.runtime.gc``) it also resolves a tag to its manifest digest
and deletes manifests by digest (the registry refuses deletes by tag, and needs
``storage.delete.enabled``); blobs are only freed by the registry's garbage-collect.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

from deltaport.agent.messages import LocalImage
from deltaport.errors import (
    DeltaportError,
    FormatError,
    IntegrityError,
    NotFoundError,
    RegistryError,
)
from deltaport.limits import INVENTORY_MAX_IMAGES
from deltaport.oci import TransportOptions, copy_image, open_source
from deltaport.oci.digest import is_digest, sha256_digest
from deltaport.oci.registry import RegistryClient
from deltaport.oci.registry.image import fetch_manifest

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # names per _catalog / tags/list request
MAX_NAMES = INVENTORY_MAX_IMAGES  # repositories and tags listed at most (each)
_NEXT_RE = re.compile(r'<([^>]{1,2000})>\s*;\s*rel="?next"?')


def split_name(name: str) -> tuple[str, str]:
    """("repo", "tag") of ``name`` = "repo:tag" (pure).

    Raises:
        FormatError: not "repo:tag".
    """
    repo, sep, tag = name.rpartition(":")
    if not sep or not repo or not tag or "/" in tag:
        raise FormatError(f"local image name {name!r} is not 'repository:tag'")
    return repo, tag


def next_page(link_header: str | None) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header, if any (pure)."""
    if not link_header:
        return None
    match = _NEXT_RE.search(link_header)
    return match.group(1) if match else None


class LocalRegistry:
    """Read access to the local registry at ``host`` ("127.0.0.1:5000")."""

    def __init__(self, host: str, options: TransportOptions | None = None) -> None:
        self.host = host
        self.options = options or TransportOptions(insecure=True)

    def ref(self, name: str) -> str:
        """``docker://host/name`` for ``name`` = "repo:tag"."""
        return f"docker://{self.host}/{name}"

    def _paged(self, client: RegistryClient, path: str, key: str) -> Iterator[str]:
        url: str | None = f"{path}?n={PAGE_SIZE}"
        seen = 0
        while url is not None:
            response = client.request("GET", url, scope=(), what=path)
            try:
                doc: Any = response.json()
            except ValueError as exc:
                raise FormatError(f"registry {self.host} {path}: not JSON") from exc
            finally:
                response.close()
            names = doc.get(key) if isinstance(doc, dict) else None
            for name in names or []:
                seen += 1
                if seen > MAX_NAMES:
                    raise FormatError(f"registry {self.host} lists more than {MAX_NAMES} {key}")
                if isinstance(name, str):
                    yield name
            url = next_page(response.headers.get("link"))

    def tags(self) -> list[str]:
        """Every ``repo:tag`` in the registry, sorted.

        Raises:
            TransferError/RegistryError: the registry cannot be listed.
        """
        client = RegistryClient(self.host, self.options)
        try:
            found = []
            for repo in list(self._paged(client, "/v2/_catalog", "repositories")):
                try:
                    found += [f"{repo}:{t}" for t in self._paged(
                        client, f"/v2/{repo}/tags/list", "tags")]
                except NotFoundError:
                    continue  # a repository whose tags were all deleted
            return sorted(found)
        finally:
            client.close()

    def image_id(self, name: str) -> str | None:
        """The image ID that ``repo:tag`` names now, or None if it is not there."""
        try:
            with open_source(self.ref(name), self.options) as source:
                return source.image_id()
        except NotFoundError:
            return None

    def images(self) -> list[LocalImage]:
        """Every tag and its image ID; a tag that cannot be read is skipped with a warning."""
        images = []
        for name in self.tags():
            try:
                image_id = self.image_id(name)
            except DeltaportError as exc:
                log.warning("local registry: skipping %s: %s", name, exc)
                continue
            if image_id is not None:
                images.append(LocalImage(name, image_id))
        return images

    def name_image(self, image_id: str, name: str) -> bool:
        """Make ``repo:tag`` NAME name the image IMAGE_ID the registry holds under another name.

        A device can hold the image a manifest needs under another name (it was
        there before, or the manifest pins it by digest): copied within the registry,
        its blobs mounted, not sent again. Returns False when no tag names IMAGE_ID.

        Raises:
            DeltaportError subclasses: the registry failed, or the copy has another ID.
        """
        holder = next((i.name for i in self.images()
                       if i.image_id == image_id and i.name != name), None)
        if holder is None:
            return False
        log.info("local registry: naming %s as %s (%s)", holder, name, image_id)
        copy_image(self.ref(holder), self.ref(name), self.options)
        if self.image_id(name) != image_id:
            raise IntegrityError(f"local registry: {name} copied from {holder} is not {image_id}")
        return True

    def source_refs(self, images: list[LocalImage]) -> list[str]:
        """One ``docker://`` reference per distinct image: the sources of a delta."""
        by_id: dict[str, str] = {}
        for image in images:
            by_id.setdefault(image.image_id, self.ref(image.name))
        return sorted(by_id.values())

    def manifest_digest(self, name: str) -> str | None:
        """The digest of the manifest (or index) that ``repo:tag`` names, None if absent.

        Asked with every manifest type in ``Accept``: without it the registry answers
        404 for an OCI manifest and converts a Docker v2 one to schema 1, whose digest
        is another one. The digest is computed from the bytes, not taken from a header.

        Raises:
            TransferError/RegistryError: the registry failed. FormatError: bad name.
        """
        repo, tag = split_name(name)
        client = RegistryClient(self.host, self.options)
        try:
            body, _ = fetch_manifest(client, repo, tag, self.options.max_manifest_bytes)
        except NotFoundError:
            return None
        finally:
            client.close()
        return sha256_digest(body)

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """``DELETE /v2/<repo>/manifests/<digest>``: every tag of REPO naming it goes too.

        Returns False when the registry does not have it (already deleted).

        Raises:
            RegistryError: refused (405: deletes are not enabled in its configuration).
            TransferError: the registry cannot be reached. FormatError: not a digest.
        """
        if not is_digest(digest):
            raise FormatError(f"cannot delete {repo}@{digest!r}: not a digest")
        client = RegistryClient(self.host, self.options)
        what = f"delete manifest {repo}@{digest}"
        try:
            client.request("DELETE", f"/v2/{repo}/manifests/{digest}",
                           scope=(f"repository:{repo}:delete",), what=what,
                           ok=(200, 202)).close()
            return True
        except NotFoundError:
            return False
        except RegistryError as exc:
            if exc.status == 405:
                raise RegistryError(f"{exc} - deletes are disabled in the registry: set "
                                    "storage.delete.enabled: true in its config", 405) from exc
            raise
        finally:
            client.close()

    def delete(self, name: str) -> str | None:
        """Delete the manifest ``repo:tag`` names, by its digest (every tag of the
        repository naming that manifest goes with it). Returns the digest deleted, or
        None when the tag was not there (already gone).

        Raises:
            see manifest_digest and delete_manifest.
        """
        repo, _ = split_name(name)
        digest = self.manifest_digest(name)
        if digest is None or not self.delete_manifest(repo, digest):
            return None
        return digest
