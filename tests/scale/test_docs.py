"""docs/scale-out.md shows the nginx configuration the tests run, word for word."""

from __future__ import annotations

from pathlib import Path

from tests.scale.nginx import http_block

DOC = Path(__file__).resolve().parents[2] / "docs" / "scale-out.md"


def test_the_documented_nginx_config_is_the_tested_one() -> None:
    hubs = ["127.0.0.1:8441", "127.0.0.1:8442", "127.0.0.1:8443"]
    block = http_block(hubs, "127.0.0.1:8080")
    assert f"```nginx\n{block}```" in DOC.read_text()
