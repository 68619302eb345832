"""`deltaport image ...`: inspect and copy container images between transports."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from deltaport.cli.common import out_console, plural

if TYPE_CHECKING:  # deltaport.oci is imported inside the commands (CLI start-up time)
    from deltaport.oci import CopyProgress, TransportOptions

app = typer.Typer(help="Inspect and copy container images (docker-archive:, oci:, "
                  "oci-archive:, docker://).", no_args_is_help=True)

InsecureOpt = Annotated[bool, typer.Option(
    "--insecure", help="Allow plain http / unverified https for the registry.")]
CaFileOpt = Annotated[Path | None, typer.Option(
    "--ca-file", help="PEM bundle of extra CAs to trust for the registry (self-signed).")]
PlatformOpt = Annotated[str | None, typer.Option(
    "--platform", help="os/arch[/variant] to pick from a multi-platform image.")]
CredsOpt = Annotated[str | None, typer.Option(
    "--creds", help="USER:PASSWORD for the registry (default: $DELTAPORT_REGISTRY_CREDS).")]


def _options(insecure: bool, platform: str | None, creds: str | None,
             ca_file: Path | None = None) -> TransportOptions:
    """Build TransportOptions from flags and the environment (read only here)."""
    from deltaport.oci import TransportOptions
    from deltaport.oci.model import Platform

    creds = creds or os.environ.get("DELTAPORT_REGISTRY_CREDS")
    username = password = None
    if creds:
        username, _, password = creds.partition(":")
    chosen = Platform.parse(platform) if platform else Platform.host()
    return TransportOptions(insecure=insecure, ca_file=ca_file, username=username,
                            password=password, platform=chosen)


@app.command()
def inspect(
    ref: Annotated[str, typer.Argument(help="Image reference, e.g. docker://host/app:v1")],
    insecure: InsecureOpt = False,
    ca_file: CaFileOpt = None,
    platform: PlatformOpt = None,
    creds: CredsOpt = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Do not read layers (no verification, no uncompressed sizes).")] = False,
) -> None:
    """Print an image's IDs, platform and layers as JSON (layers verified unless --quick).

    Example: deltaport image inspect docker://localhost:5000/app:v1 --insecure
    """
    from deltaport.oci import inspect_image

    info = inspect_image(ref, _options(insecure, platform, creds, ca_file),
                         verify=not quick)
    typer.echo(json.dumps(info, indent=2))


@app.command()
def copy(
    src: Annotated[str, typer.Argument(help="Source image reference")],
    dst: Annotated[str, typer.Argument(help="Destination image reference")],
    insecure: InsecureOpt = False,
    ca_file: CaFileOpt = None,
    platform: PlatformOpt = None,
    creds: CredsOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Copy an image between any two transports, verifying every byte.

    Transports: docker-archive:FILE, oci:DIR[:TAG], oci-archive:FILE, docker://HOST/NAME:TAG.

    Example: deltaport image copy docker-archive:app.tar docker://localhost:5000/app:v1 --insecure
    """
    from deltaport.oci import copy_image

    options = _options(insecure, platform, creds, ca_file)
    console = out_console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=console, disable=quiet) as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(event: CopyProgress) -> None:
            task = tasks.get(event.digest)
            if task is None:
                label = f"layer {event.index + 1}/{event.count} {event.digest[7:19]}"
                task = tasks[event.digest] = bar.add_task(label, total=event.total)
            if event.stage == "skip":
                bar.update(task, completed=event.total, description=f"{event.digest[7:19]} exists")
            else:
                bar.update(task, completed=min(event.done, event.total))

        result = copy_image(src, dst, options, progress=on_progress)
    console.print(
        f"copied {result.source} -> {result.destination}: "
        f"{plural(result.copied, 'layer')} copied, "
        f"{result.skipped} already there; manifest {result.manifest_digest}, "
        f"image ID {result.image_id}", highlight=False, soft_wrap=True,
    )


def _mount_register() -> None:
    """`deltaport image register` lives with the fleet commands (it writes the database)."""
    from deltaport.cli.fleet import image_register_command

    app.command("register")(image_register_command)


_mount_register()
