"""A device installs only the device side: ``deltaport[agent]`` in a fresh venv.

The wheel of this checkout is installed with its [agent] extra alone (from the package
index, binary wheels); none of the hub's packages may come with it, and the agent
installed that way takes a bundle from its inbox into a real device registry. The
hub-only commands answer one line naming the extras instead of a traceback.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest
from bench.agent_footprint import (
    HUB_ONLY_MODULES,
    Venv,
    build_wheel,
    importable,
    make_venv,
    write_agent_config,
)

from tests.agent.conftest import World, image_id_in
from tests.fixtures.services import Registry

SRC = Path(__file__).resolve().parents[2] / "src"
HUB_SIDE = ("deltaport.fleet", "deltaport.pipelines", "deltaport.hub")
HUB_EXTRAS_LINE = "error: this command needs the hub extras: pip install 'deltaport[hub]'"


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path) -> set[str]:
    """The deltaport modules PATH imports anywhere (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("deltaport"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deltaport"):
            module = str(node.module)
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names
                         if _module_file(f"{module}.{a.name}"))
    return found


def imported_closure(package: str) -> set[str]:
    """Every deltaport module that importing any module of PACKAGE may import."""
    start = {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
             for p in SRC.joinpath(*package.split(".")).rglob("*.py")}
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        todo.extend(_imports(path))
    return seen


@pytest.mark.parametrize(("package", "forbidden"), [
    ("deltaport.agent", HUB_SIDE),
    ("deltaport.oci", (*HUB_SIDE, "deltaport.agent")),
    ("deltaport.delta", (*HUB_SIDE, "deltaport.agent")),
    ("deltaport.bundle", (*HUB_SIDE, "deltaport.agent")),
    # the pipelines import fleet, never the reverse (issue 15: no fleet <-> pipelines cycle)
    ("deltaport.fleet", ("deltaport.pipelines", "deltaport.hub", "deltaport.rollout",
                         "deltaport.agent")),
])
def test_walls_hold_through_every_import(package: str, forbidden: tuple[str, ...]) -> None:
    crossing = sorted(m for m in imported_closure(package)
                      if any(m == f or m.startswith(f + ".") for f in forbidden))
    assert crossing == []


@pytest.fixture(scope="module")
def agent_venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("device-install")
    return make_venv(root / "venv", build_wheel(root / "wheel"), "agent")


def _deltaport(venv: Venv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv.deltaport), *args], capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.slow
def test_agent_install_has_no_hub_packages(agent_venv: Venv) -> None:
    assert importable(agent_venv, (*HUB_ONLY_MODULES, "deltaport.agent")) == ["deltaport.agent"]


@pytest.mark.slow
def test_agent_from_device_install_takes_a_bundle_into_the_registry(
        agent_venv: Venv, tmp_path: Path, world: World, device_registry: Registry) -> None:
    config = write_agent_config(tmp_path, device_registry.host, world.trusted_pub, 0.2)
    shutil.copyfile(world.small.path, tmp_path / "inbox" / "v2.bundle")

    done = _deltaport(agent_venv, "agent", "run", "--once", "--config", str(config))

    assert done.returncode == 0, done.stderr
    assert image_id_in(device_registry, world.small.target) == world.small.image_id
    assert sorted(p.name for p in (tmp_path / "inbox" / "done").iterdir()) == ["v2.bundle"]


@pytest.mark.slow
def test_device_cli_reads_and_applies_bundles(
        agent_venv: Venv, world: World, device_registry: Registry) -> None:
    assert _deltaport(agent_venv, "--help").returncode == 0
    inspected = _deltaport(agent_venv, "bundle", "inspect", str(world.small.path),
                           "--trust-key", str(world.trusted_pub))
    assert inspected.returncode == 0, inspected.stderr
    assert world.small.image_id in inspected.stdout

    applied = _deltaport(agent_venv, "delta", "apply", str(world.small.path), "--insecure",
                         "--from", device_registry.ref("demo/app:v1"),
                         "--trust-key", str(world.trusted_pub),
                         "--to", device_registry.ref("demo/app:applied"))
    assert applied.returncode == 0, applied.stderr
    assert image_id_in(device_registry, "demo/app:applied") == world.small.image_id


@pytest.mark.slow
@pytest.mark.parametrize("command", [
    ("hub", "serve", "--help"),
    ("hub", "init", "somewhere"),
    ("device", "list"),
])
def test_hub_commands_name_the_missing_extras(agent_venv: Venv, command: tuple[str, ...]) -> None:
    done = _deltaport(agent_venv, *command)

    assert done.returncode == 2
    assert done.stderr.strip() == HUB_EXTRAS_LINE
    assert "Traceback" not in done.stdout + done.stderr
