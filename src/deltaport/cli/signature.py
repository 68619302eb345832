"""`deltaport signature create` — the per-image index used to rank sources."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from deltaport.cli.common import CaFileOpt, human_bytes, out_console, plural, transport_options

app = typer.Typer(help="Image signature files (for ranking sources).", no_args_is_help=True)


@app.command("create")
def create(
    ref: Annotated[str, typer.Argument(help="The image to describe.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Signature file to write.")],
    insecure: Annotated[bool, typer.Option("--insecure", help="Allow plain-http registries.")] = (
        False
    ),
    ca_file: CaFileOpt = None,
) -> None:
    """Write the signature file of REF (per layer and per file: sizes and content hashes).

    Bundles are built against what a device already has; its images' signature files
    tell which of them shares most with the new image.

    Example: deltaport signature create docker://localhost:5000/app:v1 -o app-v1.sig
    """
    from deltaport.delta import dump_image_signature
    from deltaport.delta.ranking import create_image_signature

    console = out_console(stderr=True)
    with console.status(f"reading {ref}") as status:

        def report(step: str, done: int, total: int) -> None:
            status.update(f"reading {ref}: {step}")

        sig = create_image_signature(ref, transport_options(insecure, ca_file), report)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sig-", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            dump_image_signature(sig, f)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    files = sum(len(la.files) for la in sig.layers)
    console.print(
        f"signature of {sig.image_id}: {plural(len(sig.layers), 'layer')}, "
        f"{plural(files, 'file')}, "
        f"{human_bytes(output.stat().st_size)} -> {output}"
    )
