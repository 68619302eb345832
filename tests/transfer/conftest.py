"""Fixtures for transfer tests: a real Range-serving HTTP server with one test file."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deltaport.transfer import ChunkPlan, DownloadConfig, make_plan
from tests.fixtures.rangeserver import RangeServer

FILE_SIZE = 1024 * 1024 + 1234  # 1 MiB and a ragged last chunk
CHUNK = 64 * 1024
NAME = "bundle.bin"


@dataclass(frozen=True)
class Served:
    """A file being served: its content, plan, URL and the server to misbehave with."""

    server: RangeServer
    content: bytes
    plan: ChunkPlan
    url: str
    source: Path


def fast_config(**overrides: object) -> DownloadConfig:
    """Short timeouts and tiny deterministic backoff, so fault tests take milliseconds."""
    settings: dict[str, object] = {
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
        "backoff_initial": 0.01,
        "backoff_max": 0.1,
        "jitter": False,
        "max_duration": 60.0,
    }
    settings.update(overrides)
    return DownloadConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "srv"
    root.mkdir()
    content = random.Random(5).randbytes(FILE_SIZE)
    (root / NAME).write_bytes(content)
    plan = make_plan(root / NAME, CHUNK)
    with RangeServer(root) as server:
        yield Served(server, content, plan, server.url_for(NAME), root / NAME)
