"""`deltaport manifest images|render FILE`: what deltaport reads from a manifest.

The same reading as ``deploy`` (:func:`read_manifest`), without a database: users and
tests can check which images a device needs and what it would run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deltaport.cli.fleet import print_table, read_input
from deltaport.errors import DeltaportError, FormatError
from deltaport.limits import MANIFEST_MAX_BYTES

if TYPE_CHECKING:  # the readers import yaml and the OCI client: loaded inside the commands
    from deltaport.manifests import Manifest

app = typer.Typer(
    name="manifest",
    help="Show what deltaport reads from an IoT Edge deployment or Compose file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

FileArg = Annotated[
    Path, typer.Argument(help="IoT Edge deployment(.template).json or Compose file ('-': stdin).")
]
VarOpt = Annotated[
    list[str] | None, typer.Option("--var", help="NAME=VALUE for $NAME / ${NAME}; repeatable.")
]
EnvFileOpt = Annotated[
    Path | None,
    typer.Option("--env-file", help="Variables file (default: .env beside FILE, if any)."),
]
ProfileOpt = Annotated[
    list[str] | None, typer.Option("--profile", help="Active Compose profile; repeatable.")
]
OverrideOpt = Annotated[
    list[Path] | None,
    typer.Option("--file", "-f", help="Compose file merged over FILE, in order; repeatable."),
]
FromEnvOpt = Annotated[
    bool,
    typer.Option("--from-env", help="Also take variables from this process's environment."),
]


@dataclass(frozen=True)
class ReadManifest:
    """A manifest as read from the command line, with the text and values it used."""

    manifest: Manifest
    data: bytes
    variables: dict[str, str]


def read_manifest(
    path: Path,
    var: list[str] | None,
    env_file: Path | None,
    profile: list[str] | None,
    from_env: bool,
    overrides: list[Path] | None = None,
) -> ReadManifest:
    """Read PATH with variables from --var, then the env file, then (--from-env) the
    environment; the one reading ``deploy`` and ``manifest`` share.

    Raises:
        UsageError: a malformed --var. FormatError: the manifest or env file is bad.
        StorageError: PATH unreadable.
    """
    from deltaport.manifests import parse_manifest
    from deltaport.manifests.interpolation import parse_assignments, resolve_variables

    data = read_input(path, MANIFEST_MAX_BYTES)
    variables = resolve_variables(
        parse_assignments(var or []),
        manifest_path=None if str(path) == "-" else path,
        env_file=env_file,
        from_env=from_env,
    )
    base = Path(".") if str(path) == "-" else path.parent
    manifest = parse_manifest(
        data,
        variables,
        str(path),
        profiles=tuple(profile or ()),
        load_file=lambda other: _load_compose(base / other),
        overrides=[(str(p), read_input(p, MANIFEST_MAX_BYTES)) for p in overrides or []],
    )
    return ReadManifest(manifest, data, variables)


def _load_compose(path: Path) -> dict[str, Any]:
    """Another Compose file named by ``extends: {file: ...}``, bounded like the first."""
    from deltaport.manifests.yamlload import decode, load_document

    doc = load_document(decode(read_input(path, MANIFEST_MAX_BYTES), str(path)), str(path))
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: top level must be an object")
    return doc


@contextmanager
def _reported() -> Iterator[None]:
    """A DeltaportError as one line on stderr and its exit code."""
    try:
        yield
    except DeltaportError as exc:
        typer.echo("error: " + " ".join(str(exc).split()), err=True)  # one line
        raise typer.Exit(exc.exit_code) from None


def images_doc(manifest: Manifest) -> dict[str, Any]:
    """What ``manifest images --json`` prints."""
    return {
        "kind": str(manifest.kind),
        "images": [{"module": m.module, "reference": m.reference} for m in manifest.modules],
        "warnings": list(manifest.warnings),
    }


@app.command("images")
def images_command(
    file: FileArg,
    var: VarOpt = None,
    env_file: EnvFileOpt = None,
    profile: ProfileOpt = None,
    from_env: FromEnvOpt = False,
    file_over: OverrideOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The images a device needs for FILE, per module or service."""
    with _reported():
        manifest = read_manifest(file, var, env_file, profile, from_env, file_over).manifest
    if as_json:
        typer.echo(json.dumps(images_doc(manifest), indent=2))
        return
    for warning in manifest.warnings:
        typer.echo(f"warning: {warning}", err=True)
    print_table(
        f"{file} ({manifest.kind})",
        ["module", "image"],
        [[m.module, m.reference] for m in manifest.modules],
    )


@app.command("render")
def render_command(
    file: FileArg,
    local_registry: Annotated[
        str, typer.Option("--local-registry", help="The device's registry, HOST:PORT.")
    ],
    var: VarOpt = None,
    env_file: EnvFileOpt = None,
    profile: ProfileOpt = None,
    from_env: FromEnvOpt = False,
    file_over: OverrideOpt = None,
) -> None:
    """The manifest a device with LOCAL_REGISTRY runs after activation, as JSON."""
    from deltaport.manifests import rewrite_for_device

    with _reported():
        manifest = read_manifest(file, var, env_file, profile, from_env, file_over).manifest
        doc = rewrite_for_device(manifest, local_registry)
    for warning in manifest.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(json.dumps(doc, indent=2))
