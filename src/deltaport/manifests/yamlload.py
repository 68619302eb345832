"""Bounded loading of YAML and JSON manifests.

PyYAML shares the nodes an alias names, so a 437-byte "billion laughs" document loads
fast but expands exponentially the moment anything walks it. The loader counts alias
uses and nesting while composing, then counts the nodes the document has once every
alias is expanded (each shared node counted once per use, memoised), and refuses past
the named limits in :mod:`deltaport.limits` before anything walks the document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from deltaport.errors import FormatError
from deltaport.limits import (
    MANIFEST_MAX_ALIASES,
    MANIFEST_MAX_BYTES,
    MANIFEST_MAX_DEPTH,
    MANIFEST_MAX_NODES,
)


class _LimitExceeded(Exception):
    """Raised inside the composer; turned into a FormatError naming the document."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts alias uses and nesting depth while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):  # type: ignore[no-untyped-call]
            self.aliases += 1
            if self.aliases > MANIFEST_MAX_ALIASES:
                raise _LimitExceeded(f"more than {MANIFEST_MAX_ALIASES} YAML aliases")
        self.depth += 1
        if self.depth > MANIFEST_MAX_DEPTH:
            raise _LimitExceeded(f"nested deeper than {MANIFEST_MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class Reset:
    """A value tagged ``!reset``: removes what a base or earlier file gave the key
    (compose-spec "Merge and override", reset value)."""

    _instance: Reset | None = None

    def __new__(cls) -> Reset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "!reset"


RESET = Reset()


@dataclass(frozen=True)
class Override:
    """A value tagged ``!override``: replaces the base's value whole, not merged into it
    (compose-spec "Merge and override", replace value)."""

    value: Any


def _construct_reset(loader: yaml.SafeLoader, node: Node) -> Reset:
    return RESET


def _construct_override(loader: yaml.SafeLoader, node: Node) -> Override:
    if isinstance(node, MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))  # type: ignore[arg-type]


_BoundedLoader.add_constructor("!reset", _construct_reset)
_BoundedLoader.add_constructor("!override", _construct_override)


def expanded_size(root: Node) -> int:
    """Nodes ROOT has with every alias expanded; stops counting past the limit.

    Raises:
        _LimitExceeded: past MANIFEST_MAX_NODES, or an alias that contains itself.
    """
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in visiting:
            raise _LimitExceeded("a YAML anchor contains itself (recursive alias)")
        visiting.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            for child in node.value:
                total += size(child)
                if total > MANIFEST_MAX_NODES:
                    break
        elif isinstance(node, MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > MANIFEST_MAX_NODES:
                    break
        visiting.discard(key)
        if total > MANIFEST_MAX_NODES:
            raise _LimitExceeded(
                f"more than {MANIFEST_MAX_NODES} nodes once YAML aliases are expanded"
            )
        sizes[key] = total
        return total

    size(root)
    return sizes[id(root)]


def decode(data: bytes, name: str) -> str:
    """DATA as text, refusing anything too large or not UTF-8."""
    if len(data) > MANIFEST_MAX_BYTES:
        raise FormatError(f"{name}: larger than {MANIFEST_MAX_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{name}: not UTF-8 text") from exc


def load_yaml(text: str, name: str) -> Any:
    """One YAML document (YAML 1.1, safe types), within the limits.

    Raises:
        FormatError: invalid YAML, or past a limit (the message names which).
    """
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        expanded_size(root)
        return loader.construct_document(root)  # type: ignore[no-untyped-call]
    except _LimitExceeded as exc:
        raise FormatError(f"{name}: {exc}") from None
    except yaml.YAMLError as exc:
        raise FormatError(f"{name}: invalid YAML: {exc}") from exc
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def load_json(text: str, name: str) -> Any:
    """A JSON document within the nesting limit.

    Raises:
        FormatError: invalid JSON or nested too deeply.
    """
    try:
        doc = json.loads(text)
    except RecursionError:
        raise FormatError(f"{name}: nested deeper than {MANIFEST_MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{name}: invalid JSON: {exc}") from exc
    check_depth(doc, name)
    return doc


def check_depth(doc: Any, name: str) -> None:
    """Refuse DOC if its mappings and lists nest deeper than MANIFEST_MAX_DEPTH."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > MANIFEST_MAX_DEPTH:
                raise FormatError(f"{name}: nested deeper than {MANIFEST_MAX_DEPTH} levels")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children)


def load_document(text: str, name: str) -> Any:
    """JSON if the text starts with '{', else YAML; both bounded."""
    if text.lstrip().startswith("{"):
        return load_json(text, name)
    return load_yaml(text, name)
