"""`deltaport delta create | apply | rank` — build and apply image patch bundles."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from deltaport.cli.common import (
    CaFileOpt,
    human_bytes,
    out_console,
    plural,
    transport_options,
)

if TYPE_CHECKING:
    from deltaport.oci import TransportOptions

ProgressFn = Callable[[str, int, int], None]  # (step, steps done, steps in all; 0: unknown)

app = typer.Typer(help="Build, apply and rank patch bundles.", no_args_is_help=True)


def step_text(verb: str, step: str, done: int, total: int,
              sizes: Sequence[int]) -> tuple[str, str]:
    """(description, count) of a progress step: the layer's size when known, the count
    only when the total is (never '0/None')."""
    size = f" ({human_bytes(sizes[done])} compressed)" if (
        step.startswith("layer") and 0 <= done < len(sizes)) else ""
    return f"{verb}: {step}{size}", f"{done}/{total} done" if total else ""


@contextmanager
def _layer_progress(verb: str, sizes: Sequence[int] = ()) -> Iterator[ProgressFn]:
    """A transient progress bar on stderr and the callback that moves it.

    SIZES are the target's layer blob sizes, in order, when known: the step of layer i
    then says how big it is. Counts are shown once the engine says how many steps.
    """
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
        console=out_console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(f"{verb} bundle: reading the images", total=None, count="")

        def report(step: str, done: int, total: int) -> None:
            description, count = step_text(verb, step, done, total, sizes)
            bar.update(task, description=description, completed=done, total=total or None,
                       count=count)

        yield report


@app.command("create")
def create(
    to: Annotated[str, typer.Option("--to", help="The target image reference.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle file to write.")],
    sources: Annotated[
        list[str] | None,
        typer.Option("--from", help="A source image the device has (repeatable)."),
    ] = None,
    sign_key: Annotated[
        Path | None, typer.Option("--sign-key", help="Ed25519 private key (PEM).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help="Allow plain-http registries.")] = (
        False
    ),
    ca_file: CaFileOpt = None,
    patch_cache: Annotated[
        Path | None,
        typer.Option(
            "--patch-cache",
            help="Folder of layer patches built before: reuse them, and keep new ones there.",
        ),
    ] = None,
) -> None:
    """Build one bundle that turns the content of all --from images into --to."""
    from deltaport.bundle import load_private_key
    from deltaport.delta.image import create_image_delta
    from deltaport.delta.patchcache import PatchCache

    key = load_private_key(sign_key) if sign_key else None
    layers = _target_layers(to, transport_options(insecure, ca_file))
    with _layer_progress("building", [size for _, size in layers]) as report:
        summary = create_image_delta(
            to,
            sources or [],
            output,
            signing_key=key,
            options=transport_options(insecure, ca_file),
            progress=report,
            patch_cache=PatchCache(patch_cache) if patch_cache else None,
        )
    doc = summary.to_json()
    blobs = dict(layers)
    if as_json:
        missing = {la["diff_id"] for la in doc["layers"] if la["encoding"] != "source"}
        doc["image_blob_bytes"] = sum(blobs.values())
        doc["layer_pull_bytes"] = sum(n for d, n in blobs.items() if d in missing)
        out_console().print_json(json.dumps(doc))
        return
    _print_summary(doc, blobs)


def _target_layers(ref: str, options: TransportOptions) -> list[tuple[str, int]]:
    """(diff_id, compressed blob size) of each layer of REF, in order: what a pull moves."""
    from deltaport.oci import open_source

    with open_source(ref, options) as src:
        return [(layer.diff_id, layer.size) for layer in src.layers()]


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / max(whole, 1):.3g}%"


def cost_lines(summary: dict[str, Any], blobs: dict[str, int]) -> list[str]:
    """What the bundle costs against the whole image and against a layer pull.

    BLOBS are the target's compressed layer sizes by diff_id; a layer pull moves the
    blobs of the layers the --from images lack (those not reused).
    """
    bundle = int(summary["bundle_bytes"])
    reused = [la for la in summary["layers"] if la["encoding"] == "source"]
    missing = [la for la in summary["layers"] if la["encoding"] != "source"]
    image = sum(blobs.values())
    pull = sum(blobs.get(la["diff_id"], 0) for la in missing)
    lines = [
        f"bundle {summary['bundle']}: {human_bytes(bundle)}",
        f"  {_percent(bundle, image)} of the whole image: {human_bytes(image)} in "
        f"{plural(len(blobs), 'compressed layer')}, what a pull from scratch moves",
    ]
    if reused and missing:
        lines.append(
            f"  {_percent(bundle, pull)} of a layer pull: {human_bytes(pull)}, the "
            f"{plural(len(missing), 'layer')} the --from images lack "
            f"({plural(len(reused), 'layer')} reused from them, 0 B)"
        )
    elif reused:
        lines.append("  every layer is reused from the --from images: a layer pull moves 0 B")
    else:
        lines.append("  no layer is reused: a layer pull moves the whole image")
    return lines


def _print_summary(summary: dict[str, Any], blobs: dict[str, int]) -> None:
    table = Table(title=f"bundle for {summary['target']} ({summary['image_id']})")
    for col in ("layer", "diff_id", "encoding", "layer size", "bytes sent"):
        table.add_column(col, justify="right" if "size" in col or "bytes" in col else "left")
    for layer in summary["layers"]:
        cached = " (cached)" if (layer.get("stats") or {}).get("cached") else ""
        reused = layer["encoding"] == "source"
        blob = blobs.get(layer["diff_id"])
        table.add_row(
            str(layer["index"]),
            layer["diff_id"][:19],
            "reused (on the device)" if reused else layer["encoding"] + cached,
            # a reused layer is not read: its size is the blob's, as the registry lists it
            (f"blob {human_bytes(blob)}" if blob is not None else "?") if reused
            else human_bytes(layer["size"]),
            human_bytes(layer["patch_bytes"]),
        )
    out = out_console()
    out.print(table)
    for line in cost_lines(summary, blobs):
        out.print(line, highlight=False)


NO_VERIFY_WARNING = (
    "warning: --no-verify: the bundle's signature is NOT checked; apply only a bundle "
    "you got from a source you trust"
)


def trust_key_choice(trust_keys: list[Path], no_verify: bool) -> list[Path]:
    """The trust keys to check a bundle with; warns on stderr for ``--no-verify``.

    Raises:
        UsageError: neither, or both, of --trust-key and --no-verify.
    """
    from deltaport.errors import UsageError

    if trust_keys and no_verify:
        raise UsageError("give either --trust-key or --no-verify, not both")
    if not trust_keys and not no_verify:
        raise UsageError(
            "a bundle's signature must be checked: give --trust-key PUBLIC_KEY "
            "(the signer's deltaport.pub), or --no-verify to apply it unchecked"
        )
    if no_verify:
        out_console(stderr=True).print(f"[bold yellow]{NO_VERIFY_WARNING}[/]")
    return trust_keys


@app.command("apply")
def apply(
    bundle: Annotated[Path, typer.Argument(help="The bundle file.")],
    to: Annotated[str, typer.Option("--to", help="Where to write the rebuilt image.")],
    sources: Annotated[
        list[str] | None,
        typer.Option("--from", help="A source image on this device (repeatable)."),
    ] = None,
    trust_keys: Annotated[
        list[Path] | None,
        typer.Option("--trust-key", help="Trusted Ed25519 public key (repeatable); "
                     "the bundle must be signed by one of them."),
    ] = None,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Apply without checking the signature (warns).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help="Allow plain-http registries.")] = (
        False
    ),
    ca_file: CaFileOpt = None,
) -> None:
    """Rebuild the bundle's target image from the --from images and write it to --to.

    A signature by a --trust-key is required; --no-verify applies an unchecked bundle.
    """
    from deltaport.bundle import load_public_key
    from deltaport.delta.image import apply_image_delta

    chosen = trust_key_choice(list(trust_keys or []), no_verify)
    keys = [load_public_key(p) for p in chosen] or None
    with _layer_progress("applying") as report:
        result = apply_image_delta(
            bundle,
            sources or [],
            to,
            trusted_keys=keys,
            options=transport_options(insecure, ca_file),
            progress=report,
        )
    doc = {
        "destination": result.destination,
        "image_id": result.image_id,
        "manifest_digest": result.manifest_digest,
        "layers_patched": result.layers_patched,
        "layers_from_source": result.layers_from_source,
    }
    if as_json:
        out_console().print_json(json.dumps(doc))
    else:
        out_console().print(
            f"rebuilt {result.image_id} at {result.destination}: "
            f"{plural(result.layers_patched, 'layer')} patched, "
            f"{result.layers_from_source} from sources, verified", highlight=False
        )


@app.command("rank")
def rank(
    to: Annotated[str, typer.Option("--to", help="The target image reference.")],
    signatures: Annotated[list[Path], typer.Argument(help="Signature files of candidates.")],
    insecure: Annotated[bool, typer.Option("--insecure", help="Allow plain-http registries.")] = (
        False
    ),
    ca_file: CaFileOpt = None,
) -> None:
    """Rank candidate source images by the estimated bundle size; prints JSON."""
    from deltaport.delta import load_image_signature
    from deltaport.delta.ranking import create_image_signature, rank_sources
    from deltaport.errors import StorageError

    candidates = []
    for path in signatures:
        try:
            with open(path, "rb") as f:
                candidates.append(load_image_signature(f))
        except OSError as exc:
            raise StorageError(f"cannot read signature file {path}: {exc.strerror}") from exc
    with out_console(stderr=True).status(f"reading {to}"):
        target = create_image_signature(to, transport_options(insecure, ca_file))
    ranked = rank_sources(target, candidates)
    out_console().print_json(
        json.dumps({"target": to, "image_id": target.image_id,
                    "candidates": [r.to_json() for r in ranked]})
    )
