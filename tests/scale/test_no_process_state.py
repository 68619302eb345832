"""Nothing one hub process needs to share lives in its memory (issue 15, several hubs).

Audited by hand (2026-12-03): the hub keeps sessions (``ui_sessions``), audit entries,
the outbox of webhooks and emails (claimed with SKIP LOCKED), device state and desired
manifests in the database and bundles in the store; downloads resume by Range with
the progress on the device (the ``.part`` file), and the hub rate-limits nothing itself.
This test keeps it so: the hub's packages hold no module-level mutable state (a cache,
a counter, a registry filled at run time), which would differ from hub to hub.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "deltaport"
PACKAGES = ("hub", "fleet", "notify", "storage")
SKIP = ("hub/ui",)  # the dashboard: its own tests (sessions are in the database)
CACHES = {"cache", "lru_cache", "cached_property"}
MUTABLE_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "Counter", "deque"}


def modules() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((SRC / package).rglob("*.py")):
            if not any(path.relative_to(SRC).as_posix().startswith(s) for s in SKIP):
                yield path


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def process_state(tree: ast.Module) -> Iterator[str]:
    """Module-level mutable values under non-constant names, ``global``, memo caches."""
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        mutable = isinstance(value, ast.Dict | ast.List | ast.Set) or (
            isinstance(value, ast.Call) and _name(value) in MUTABLE_CALLS) if targets else False
        for target in targets:
            name = target.id if isinstance(target, ast.Name) else ""
            if mutable and not (name.isupper() or name.lstrip("_").isupper() or name == "__all__"):
                yield f"line {node.lineno}: module-level mutable {name!r}"
    for item in ast.walk(tree):
        if isinstance(item, ast.Global):
            yield f"line {item.lineno}: global {', '.join(item.names)}"
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            for deco in item.decorator_list:
                if _name(deco) in CACHES:
                    yield f"line {item.lineno}: {item.name} is memoised in the process"


def test_the_hub_keeps_no_state_in_its_process() -> None:
    found = [
        f"{path.relative_to(SRC)} {what}"
        for path in modules()
        for what in process_state(ast.parse(path.read_text(), str(path)))
    ]
    assert found == []


def test_the_checker_sees_process_state() -> None:
    sample = ast.parse(
        "_seen = {}\nRATES: dict[str, int] = {}\nhits = list()\n"
        "def f():\n    global hits\n"
        "@functools.lru_cache\ndef g(): ...\n"
    )
    assert set(process_state(sample)) == {
        "line 1: module-level mutable '_seen'",
        "line 3: module-level mutable 'hits'",
        "line 5: global hits",
        "line 7: g is memoised in the process",
    }
