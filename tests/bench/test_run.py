"""The whole harness on a tiny corpus, with stand-in deltaport executables.

The stand-ins follow the real command lines: a working one (its "bundle" is the target
archive itself, so apply is trivially byte-exact), a broken one (exits 1 like an
unfinished CLI) and a corrupting one (apply writes the wrong image).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import run

FAKE = '''#!{python}
import shutil, sys
args = sys.argv[1:]
mode = {mode!r}
if mode == "broken":
    sys.stderr.write("Traceback ...\\nModuleNotFoundError: No module named 'deltaport.x'\\n")
    sys.exit(1)
if args[:2] == ["delta", "create"]:
    new = args[args.index("--to") + 1].split(":", 1)[1]
    shutil.copy(new, args[args.index("-o") + 1])
    print('{{"layers": [{{"encoding": "full"}}]}}')
elif args[:2] == ["delta", "apply"]:
    dest = args[args.index("--to") + 1].split(":", 1)[1]
    src = args[2] if mode == "works" else {other!r}
    shutil.copy(src, dest)
'''


def fake_deltaport(tmp_path: Path, mode: str, other: Path) -> Path:
    exe = tmp_path / f"deltaport-{mode}"
    exe.write_text(FAKE.format(python=sys.executable, mode=mode, other=str(other)))
    exe.chmod(0o755)
    return exe


def run_harness(tiny_corpus: Path, tmp_path: Path, mode: str, *extra: str) -> dict[str, object]:
    exe = fake_deltaport(tmp_path, mode, tiny_corpus / "images" / "app-v1.docker.tar")
    out = tmp_path / f"out-{mode}"
    code = run.main(["--data", str(tiny_corpus), "--out", str(out), "--deltaport", str(exe),
                     *extra])
    assert code == 0
    assert (out / "RESULTS.md").is_file()
    doc: dict[str, object] = json.loads((out / "results.json").read_text())
    doc["markdown"] = (out / "RESULTS.md").read_text()
    return doc


def results(doc: dict[str, object], sid: str, method: str) -> dict[str, object]:
    scens = doc["scenarios"]
    assert isinstance(scens, dict)
    return scens[sid]["results"][method]  # type: ignore[no-any-return]


def test_working_deltaport_is_measured_and_verified(tiny_corpus: Path, tmp_path: Path) -> None:
    doc = run_harness(tiny_corpus, tmp_path, "works")
    dp = results(doc, "S2", "deltaport")
    assert dp["status"] == "ok" and dp["exact"] is True
    assert dp["bytes"] == (tiny_corpus / "images" / "app-v2.docker.tar").stat().st_size
    assert dp["extra"]["summary"] == {"layers": [{"encoding": "full"}]}  # type: ignore[index]
    assert dp["extra"]["skopeo_check"] == "ok"  # type: ignore[index]
    for method in ("zstd", "xdelta3", "bsdiff"):
        tool = results(doc, "S2", method)
        assert tool["status"] == "ok" and tool["exact"] is True, tool
    assert results(doc, "S0", "xdelta3")["status"] == "skipped"
    assert results(doc, "S0", "bsdiff")["status"] == "skipped"
    gz = results(doc, "S2", "gzip-layers")
    assert gz["bytes"] == json.loads((tiny_corpus / "images.json").read_text())[
        "app-v2"]["layers"][1]["gz_size"]
    md = str(doc["markdown"])
    # a whole-archive "bundle" is far bigger than any real delta: the targets say so
    assert "| S2 | ≤ 0.5 × best tool |" in md and "**NOT met**" in md
    assert {"date", "machine", "git", "tools"} <= set(doc)
    assert doc["machine"]["nproc"]  # type: ignore[index]
    assert not list((tmp_path / "out-works" / "out").rglob("rebuilt*")), "rebuilt image left"


def test_broken_deltaport_reports_error_and_keeps_going(tiny_corpus: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_harness(tiny_corpus, tmp_path, "broken", "--scenarios", "S2",
                      "--skip-tools", "bsdiff,xdelta3")
    dp = results(doc, "S2", "deltaport")
    assert dp["status"] == "error"
    assert "No module named 'deltaport.x'" in str(dp["note"])
    assert results(doc, "S2", "zstd")["status"] == "ok"
    assert results(doc, "S2", "xdelta3")["note"] == "--skip-tools"
    assert "S0" not in doc["scenarios"]  # type: ignore[operator]
    assert "**not measured**" in str(doc["markdown"])
    assert "error" in capsys.readouterr().out


def test_wrong_rebuilt_image_is_flagged(tiny_corpus: Path, tmp_path: Path) -> None:
    doc = run_harness(tiny_corpus, tmp_path, "corrupts", "--scenarios", "S2",
                      "--skip-tools", "zstd,xdelta3,bsdiff")
    dp = results(doc, "S2", "deltaport")
    assert dp["status"] == "ok" and dp["exact"] is False
    assert "layer 1 diff_id" in str(dp["note"])
    assert "skopeo lists other diff_ids" in str(dp["note"])
    assert "| NO |" in str(doc["markdown"])


def test_unknown_tool_name_is_a_usage_error(tiny_corpus: Path) -> None:
    with pytest.raises(SystemExit):
        run.parse_args(["--data", str(tiny_corpus), "--skip-tools", "bzip"])


def test_rerender_writes_the_same_run_again_with_the_reports_code(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    doc = run_harness(tiny_corpus, tmp_path, "works")
    out = tmp_path / "out-works"
    (out / "RESULTS.md").write_text("stale")
    assert run.main(["--data", str(tiny_corpus), "--out", str(out), "--rerender"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["command"] == doc["command"] and again["scenarios"] == doc["scenarios"]
    assert (out / "RESULTS.md").read_text() == doc["markdown"]
