"""The manifest corpus: real-world shaped files, read as their own tools read them.

Every case in ``corpus/expected.json`` is read with ``deltaport manifest images --json``
and compared with the images its tool resolves; for Compose cases whose oracle is
``podman-compose`` the tool itself (``podman-compose -f FILE config``, pinned in the dev
dependencies) is run too and must agree with the same expectation. Where podman-compose
1.6.0 cannot answer faithfully (extends, include of a list of paths, ``!reset``) and for
IoT Edge (iotedgedev's rules), the expectation is written by hand; ORIGINS.md says why
and where each file was modelled from.

References are compared by the distribution grammar: ``nginx`` and
``docker.io/library/nginx:latest`` are the same image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from deltaport.cli.manifest import app
from deltaport.manifests.reference import canonical_reference

CORPUS = Path(__file__).parent / "corpus"
EXPECTED: dict[str, dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text())
ORACLE_PODMAN_COMPOSE = "podman-compose"
MIN_CORPUS_FILES = 30
PODMAN_COMPOSE_TIMEOUT_S = 30

# Cases that show a reader gap not fixed yet: strict, so a fix must remove them here.
KNOWN_GAPS: dict[str, str] = {}

runner = CliRunner()


def case_id(name: str) -> str:
    return f"{name}/{EXPECTED[name]['file']}"


def cases(oracle: str | None = None) -> list[Any]:
    """pytest params over the corpus, ids are the files, known gaps marked xfail."""
    out = []
    for name in sorted(EXPECTED):
        if oracle is not None and EXPECTED[name]["oracle"] != oracle:
            continue
        marks = []
        if oracle is None and name in KNOWN_GAPS:  # the gap is deltaport's, not the tool's
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[name]))
        out.append(pytest.param(name, id=case_id(name), marks=marks))
    return out


def canonical(images: dict[str, str]) -> dict[str, str]:
    return {service: canonical_reference(ref) for service, ref in images.items()}


def deltaport_args(name: str) -> list[str]:
    """FILE and the options of a case, as ``deltaport manifest images|render`` take them."""
    case, folder = EXPECTED[name], CORPUS / name
    args = case.get("args", {})
    argv = [str(folder / case["file"])]
    for key, value in args.get("var", {}).items():
        argv += ["--var", f"{key}={value}"]
    for profile in args.get("profile", []):
        argv += ["--profile", profile]
    for other in args.get("files", []):
        argv += ["-f", str(folder / other)]
    if "env_file" in args:
        argv += ["--env-file", str(folder / args["env_file"])]
    return argv


def test_corpus_is_large_and_every_file_has_an_origin() -> None:
    origins = (CORPUS / "ORIGINS.md").read_text()
    folders = {p.name for p in CORPUS.iterdir() if p.is_dir()}
    assert len(EXPECTED) >= MIN_CORPUS_FILES
    assert folders == set(EXPECTED), "every corpus folder has an expectation, and back"
    for name, case in EXPECTED.items():
        assert (CORPUS / name / case["file"]).is_file(), name
        assert f"`{case_id(name)}`" in origins, f"ORIGINS.md does not name {case_id(name)}"
        assert ("images" in case) != ("error" in case), name
    kinds = {name.split("-", 1)[0] for name in EXPECTED}
    assert kinds == {"compose", "iotedge"}


@pytest.mark.parametrize("name", cases())
def test_deltaport_reads_what_the_tool_resolves(name: str) -> None:
    case = EXPECTED[name]
    result = runner.invoke(app, ["images", *deltaport_args(name), "--json"])
    if "error" in case:
        assert result.exit_code == 3, result.output
        assert case["error"] in result.stderr
        assert result.stderr.count("\n") == 1, "one line that says what and where"
        return
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["kind"] == name.split("-", 1)[0]
    got = {image["module"]: image["reference"] for image in doc["images"]}
    assert canonical(got) == canonical(case["images"])


LOCAL_REGISTRY = "127.0.0.1:5000"
CREATE_OPTIONS_CHUNK = 512  # characters, as edgeAgent reads createOptions, createOptions01 …


def _modules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    holder = doc.get("content", doc)
    agent = holder["modulesContent"]["$edgeAgent"]
    desired = agent.get("properties.desired", {})
    found = [*desired.get("systemModules", {}).values(), *desired.get("modules", {}).values()]
    return found + [v for k, v in agent.items() if k.startswith("properties.desired.")]


@pytest.mark.parametrize("name", [c for c in cases() if "images" in EXPECTED[c.values[0]]])
def test_render_gives_the_device_a_deployment_on_its_registry(name: str) -> None:
    """What a device gets: every image on its registry, nothing to build, no template."""
    argv = ["render", *deltaport_args(name), "--local-registry", LOCAL_REGISTRY]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    if name.startswith("compose"):
        services = doc["services"].values()
        assert all(s["image"].startswith(LOCAL_REGISTRY + "/") for s in services)
        assert not any("build" in s for s in services)
        return
    assert "$schema-template" not in result.stdout
    for module in _modules(doc):
        settings = module["settings"]
        assert settings["image"].startswith(LOCAL_REGISTRY + "/")
        chunks = [v for k, v in settings.items() if k.startswith("createOptions")]
        assert all(isinstance(c, str) and len(c) <= CREATE_OPTIONS_CHUNK for c in chunks)
        if "".join(chunks):  # empty is "no options" to edgeAgent
            json.loads("".join(chunks))  # the chunks join to the JSON edgeAgent reads


class _TaggedLoader(yaml.SafeLoader):
    """podman-compose prints ``!reset``/``!override`` tags back; their value is enough."""


def _tag_value(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    return loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None


_TaggedLoader.add_multi_constructor("!", _tag_value)  # type: ignore[no-untyped-call]


def podman_compose(name: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``podman-compose [--profile P] [--env-file F] -f FILE [-f ...] config`` in the case's
    folder, with only --var values in the environment (as deltaport reads it)."""
    case, folder = EXPECTED[name], CORPUS / name
    args = case.get("args", {})
    argv = [str(Path(sys.executable).parent / "podman-compose")]
    for profile in args.get("profile", []):
        argv += ["--profile", profile]
    if "env_file" in args:
        argv += ["--env-file", args["env_file"]]
    for compose_file in [case["file"], *args.get("files", [])]:
        argv += ["-f", compose_file]
    path = os.environ.get("PATH", "/usr/bin:/bin")
    env = {"PATH": path, "HOME": str(home), **args.get("var", {})}
    return subprocess.run(
        [*argv, "config"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=PODMAN_COMPOSE_TIMEOUT_S,
        check=False,
    )


def images_podman_compose_runs(config: dict[str, Any]) -> dict[str, str]:
    """Services the tool resolves with an image; build-only and provider services have
    none to pull (the tool builds them, or hands them to a provider)."""
    services = config.get("services") or {}
    return {
        name: spec["image"]
        for name, spec in services.items()
        if isinstance(spec, dict) and spec.get("image") and "provider" not in spec
    }


@pytest.mark.parametrize("name", cases(ORACLE_PODMAN_COMPOSE))
def test_podman_compose_resolves_the_expected_images(name: str, tmp_path: Path) -> None:
    case = EXPECTED[name]
    result = podman_compose(name, tmp_path)
    if "error" in case:
        assert result.returncode != 0
        assert case["error"] in result.stderr
        return
    assert result.returncode == 0, result.stderr
    config = yaml.load(result.stdout, Loader=_TaggedLoader)  # a SafeLoader
    assert canonical(images_podman_compose_runs(config)) == canonical(case["images"])
