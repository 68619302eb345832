"""Variables in manifests: Compose interpolation, ``.env`` files, where values come from.

Compose interpolation follows the compose-spec, section "Interpolation"
(https://github.com/compose-spec/compose-spec/blob/main/spec.md#interpolation):

- ``$VARIABLE`` and ``${VARIABLE}`` are replaced by the variable's value;
- ``${VARIABLE:-default}`` is *default* if VARIABLE is unset or empty,
  ``${VARIABLE-default}`` only if it is unset;
- ``${VARIABLE:?err}`` fails with *err* if VARIABLE is unset or empty,
  ``${VARIABLE?err}`` only if it is unset;
- ``${VARIABLE:+replacement}`` is *replacement* if VARIABLE is set and not empty,
  ``${VARIABLE+replacement}`` if it is set; otherwise empty;
- defaults, errors and replacements may themselves hold interpolations
  (``${A:-${B:-x}}``), evaluated only when used;
- ``$$`` is a literal ``$`` and is never interpolated; a ``$`` followed by anything
  but ``$``, ``{`` or a name is kept as it is (compose-go's template pattern matches only
  those three, so ``$(cat f)`` reaches the container unchanged);
- an unset variable without a default is an empty string, with a warning.

Values come, in this order, from ``--var NAME=VALUE``, then the ``.env`` file beside
the Compose file (or ``--env-file``), then the process environment only if asked for
(``--from-env``): the operator's own environment never leaks into what devices get.
``.env`` lines follow the compose-spec "env_file format" (services section, env_file).
"""

from __future__ import annotations

import os
import re
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deltaport.errors import FormatError, UsageError
from deltaport.limits import MANIFEST_MAX_BYTES

ENV_FILE_NAME = ".env"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")  # two-character ones first
_REFERENCED = re.compile(r"\$\$|\$\{?([A-Za-z_][A-Za-z0-9_.\-]*)")


@dataclass
class Interpolator:
    """Expands one document's strings against VARIABLES; collects WARNINGS."""

    variables: Mapping[str, str]
    name: str  # the file, for messages
    warnings: list[str] = field(default_factory=list)
    unset: dict[str, list[str]] = field(default_factory=dict)  # where → unset names

    def expand(self, text: str, where: str) -> str:
        """TEXT with every interpolation replaced (compose-spec rules above).

        Raises:
            FormatError: an invalid ``$`` or unterminated ``${``, or ``:?``/``?`` on a
                missing variable (the message names the variable, file and place).
        """
        if "$" not in text:
            return text
        value, pos = self._parse(text, 0, nested=False, live=True, where=where)
        assert pos == len(text)
        return value

    def walk(self, node: Any, where: str = "") -> Any:
        """NODE with every string value expanded (keys are kept as written)."""
        if isinstance(node, str):
            return self.expand(node, where or "top level")
        if isinstance(node, dict):
            return {k: self.walk(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [self.walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        return node

    def _parse(
        self, text: str, pos: int, *, nested: bool, live: bool, where: str
    ) -> tuple[str, int]:
        out: list[str] = []
        while pos < len(text):
            char = text[pos]
            if nested and char == "}":
                return "".join(out), pos
            if char != "$":
                out.append(char)
                pos += 1
                continue
            following = text[pos + 1 : pos + 2]
            if following == "$":
                out.append("$")
                pos += 2
            elif following == "{":
                value, pos = self._braced(text, pos + 2, live=live, where=where)
                out.append(value)
            elif match := _NAME.match(text, pos + 1):
                out.append(self._plain(match.group(), live, where))
                pos = match.end()
            else:  # "$(", "$5", "$ ", a final "$": not a template, kept as docker compose does
                out.append("$")
                pos += 1
        if nested:
            raise FormatError(f"{self.name}: {where}: unterminated '${{' in {text[:80]!r}")
        return "".join(out), pos

    def _braced(self, text: str, pos: int, *, live: bool, where: str) -> tuple[str, int]:
        match = _NAME.match(text, pos)
        if match is None:
            raise FormatError(
                f"{self.name}: {where}: invalid interpolation '${{{text[pos : pos + 20]}' "
                "(a variable name must follow '${')"
            )
        var, pos = match.group(), match.end()
        if text[pos : pos + 1] == "}":
            return self._plain(var, live, where), pos + 1
        operator = next((op for op in _OPERATORS if text.startswith(op, pos)), None)
        if operator is None:
            raise FormatError(
                f"{self.name}: {where}: invalid interpolation '${{{var}{text[pos : pos + 10]}' "
                "(expected }, :-, -, :?, ?, :+ or +)"
            )
        value = self.variables.get(var)
        present = value is not None and (value != "" or not operator.startswith(":"))
        use_word = {"-": not present, "?": not present, "+": present}[operator[-1]]
        word, pos = self._parse(
            text, pos + len(operator), nested=True, live=live and use_word, where=where
        )
        pos += 1  # the closing brace
        if not live:
            return "", pos
        kind = operator[-1]
        if kind == "?" and use_word:
            raise FormatError(
                f"{self.name}: {where}: required variable {var} is missing a value"
                + (f": {word}" if word else "")
            )
        if kind == "+":
            return (word if present else ""), pos
        return (word if use_word else (value or "")), pos

    def _plain(self, var: str, live: bool, where: str) -> str:
        if not live:
            return ""
        value = self.variables.get(var)
        if value is None:
            self.unset.setdefault(where, []).append(var)
            self.warnings.append(
                f"{self.name}: {where}: variable {var} is not set; using an empty string"
            )
            return ""
        return value


def referenced_names(text: str) -> set[str]:
    """Names TEXT may interpolate (``$$`` skipped): which variables to send the hub."""
    return {m.group(1) for m in _REFERENCED.finditer(text) if m.group(1)}


# --- where the values come from ----------------------------------------------------


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``NAME=VALUE`` options (``--var``) as a mapping; later ones win.

    Raises:
        UsageError: an item without '=' or without a name.
    """
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--var {item!r} must look like NAME=VALUE")
        values[key.strip()] = value
    return values


def parse_env_file(
    text: str, name: str, lookup: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A ``.env`` file by the compose-spec env_file format.

    ``VAR=VAL``; optional ``export``; ``#`` lines and blank lines ignored; unquoted
    values end at `` #`` (a ``#`` after a space), are stripped; ``'single'`` quoted
    values are literal; ``"double"`` quoted ones understand ``\\n \\r \\t \\\\ \\" \\$``;
    a comment may follow the closing quote. ``VAR`` alone (no ``=``) is ignored.

    Unquoted and double-quoted values are interpolated as Compose does (compose-go's
    dotenv): a name is looked up in LOOKUP first (``--var``, and the environment with
    ``--from-env``), then in the lines above it; ``$$`` is a literal ``$``.

    Raises:
        FormatError: a line with no variable name, an unterminated quote, an invalid
            interpolation or a ``:?`` variable without a value (naming the line).
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not _NAME.fullmatch(key):
            raise FormatError(f"{name}:{number}: {key[:40]!r} is not a variable name")
        if not sep:
            continue
        where = f"{name}:{number}"
        raw, interpolated = _env_value(value.strip(), where)
        if interpolated:
            scope = ChainMap(dict(lookup or {}), values)
            raw = Interpolator(scope, where).expand(raw, "value")
        values[key] = raw
    return values


# "\\$" stays a literal "$": written "$$" for the interpolation that follows
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$$"}


def _env_value(value: str, where: str) -> tuple[str, bool]:
    """The value of one line, and whether it is to be interpolated (not single-quoted)."""
    if value[:1] == "'":
        end = value.find("'", 1)
        if end < 0:
            raise FormatError(f"{where}: unterminated single quote")
        return value[1:end], False
    if value[:1] == '"':
        out: list[str] = []
        pos = 1
        while pos < len(value):
            char = value[pos]
            if char == "\\" and pos + 1 < len(value):
                nxt = value[pos + 1]
                out.append(_ESCAPES.get(nxt, "\\" + nxt))
                pos += 2
                continue
            if char == '"':
                return "".join(out), True
            out.append(char)
            pos += 1
        raise FormatError(f"{where}: unterminated double quote")
    cut = re.search(r"\s#", value)
    return (value[: cut.start()] if cut else value).strip(), True


def read_env_file(path: Path, lookup: Mapping[str, str] | None = None) -> dict[str, str]:
    """PATH parsed as a ``.env`` file, LOOKUP values first for its interpolations.

    Raises:
        FormatError: unreadable, too large, not UTF-8 or malformed.
    """
    try:
        with path.open("rb") as f:
            data = f.read(MANIFEST_MAX_BYTES + 1)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read env file: {exc.strerror}") from exc
    if len(data) > MANIFEST_MAX_BYTES:
        raise FormatError(f"{path}: larger than {MANIFEST_MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: not UTF-8 text") from exc
    return parse_env_file(text, str(path), lookup)


def resolve_variables(
    given: Mapping[str, str],
    *,
    manifest_path: Path | None = None,
    env_file: Path | None = None,
    from_env: bool = False,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables a manifest is read with: GIVEN over the env file over the environment.

    The env file is ENV_FILE if given (it must exist), else ``.env`` beside
    MANIFEST_PATH if there is one. The process environment (or ENVIRON) is used only
    with FROM_ENV.
    """
    values: dict[str, str] = dict(os.environ if environ is None else environ) if from_env else {}
    lookup = {**values, **given}  # what the env file's own interpolations see first
    if env_file is not None:
        values.update(read_env_file(env_file, lookup))
    elif manifest_path is not None and (manifest_path.parent / ENV_FILE_NAME).is_file():
        values.update(read_env_file(manifest_path.parent / ENV_FILE_NAME, lookup))
    values.update(given)
    return values
