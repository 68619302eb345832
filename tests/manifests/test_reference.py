"""Image references by the distribution/reference grammar."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltaport.errors import FormatError
from deltaport.manifests import canonical_reference, local_reference, normalize_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "spelling",
    [
        "nginx",
        "nginx:latest",
        "library/nginx",
        "docker.io/library/nginx:latest",
        "docker://nginx",
        "index.docker.io/library/nginx",
    ],
)
def test_docker_hub_defaults_are_one_image(spelling: str) -> None:
    assert normalize_reference(spelling) == "nginx:latest"
    assert canonical_reference(spelling) == "docker.io/library/nginx:latest"


@pytest.mark.parametrize(
    ("reference", "normal"),
    [
        ("acme/app:1", "acme/app:1"),
        ("reg.io:5000/app", "reg.io:5000/app:latest"),
        ("[::1]:5000/app:2", "[::1]:5000/app:2"),
        ("localhost/app", "localhost/app:latest"),
        (f"app:1@{DIGEST}", f"app:1@{DIGEST}"),
        (f"ghcr.io/acme/app@{DIGEST}", f"ghcr.io/acme/app@{DIGEST}"),
    ],
)
def test_normal_forms(reference: str, normal: str) -> None:
    assert normalize_reference(reference) == normal


@pytest.mark.parametrize(
    ("reference", "match"),
    [
        ("nginx:", "empty tag"),
        ("Nginx", "lowercase"),
        ("acme/App:1", "lowercase"),
        ("app@sha256:abc", "invalid digest"),
        ("app@md5:" + "a" * 32, "invalid digest"),
        ("app:bad tag", "invalid tag"),
        ("$upstream:443/azureiotedge-agent:1.4", r"\$upstream"),
        ("", "empty"),
    ],
)
def test_rejected_with_a_clear_message(reference: str, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        normalize_reference(reference)


def test_local_reference_is_the_path_the_device_stores() -> None:
    assert local_reference("nginx", "l:5000") == "l:5000/library/nginx:latest"
    assert local_reference("ghcr.io/acme/app:1", "l:5000") == "l:5000/ghcr.io/acme/app:1"
    assert local_reference("acme/app:1", "l:5000") == "l:5000/acme/app:1"


COMPONENT = st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+)?", fullmatch=True)
HOST = st.sampled_from(["", "docker.io/", "reg.io/", "reg.io:5000/", "localhost/", "[::1]:5/"])
TAG = st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True))


@st.composite
def references(draw: st.DrawFn) -> str:
    path = "/".join(draw(st.lists(COMPONENT, min_size=1, max_size=3)))
    tag = draw(TAG)
    digest = draw(st.one_of(st.none(), st.just(DIGEST)))
    return draw(HOST) + path + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


@given(references())
def test_normalisation_is_idempotent(reference: str) -> None:
    once = normalize_reference(reference)
    assert normalize_reference(once) == once
    assert normalize_reference(canonical_reference(reference)) == once


@given(references())
def test_canonical_and_familiar_forms_are_equivalent(reference: str) -> None:
    assert canonical_reference(normalize_reference(reference)) == canonical_reference(reference)
    assert canonical_reference("docker://" + reference) == canonical_reference(reference)
