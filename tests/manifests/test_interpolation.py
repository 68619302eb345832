"""Compose interpolation by the compose-spec; where variable values come from."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltaport.errors import FormatError, UsageError
from deltaport.manifests import parse_manifest
from deltaport.manifests.interpolation import (
    Interpolator,
    parse_assignments,
    parse_env_file,
    referenced_names,
    resolve_variables,
)


def expand(text: str, **variables: str) -> str:
    return Interpolator(variables, "f.yaml").expand(text, "x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$A-${A}", "a-a"),
        ("$$A $${A} $$$$", "$A ${A} $$"),
        ("${U:-d} ${E:-d} ${E-d} ${U-d}", "d d  d"),
        ("${A:+r}|${E:+r}|${E+r}|${U+r}", "r||r|"),
        ("${U:-${V:-${A}}}", "a"),
        ("${A:-${U:?never evaluated}}", "a"),
        ("${U:-$$literal}", "$literal"),
        ("no dollar", "no dollar"),
    ],
)
def test_spec_forms(text: str, expected: str) -> None:
    assert expand(text, A="a", E="") == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("${U:?set U please}", "required variable U is missing a value: set U please"),
        ("${E:?}", "required variable E is missing a value"),
        ("${U?}", "required variable U"),
        ("${A x}", "invalid interpolation"),  # a lone "$ x" is literal, as compose-go keeps it
        ("${A", "invalid interpolation"),
        ("${A:-x", "unterminated"),
        ("${1}", "a variable name must follow"),
    ],
)
def test_errors_name_the_variable_and_file(text: str, match: str) -> None:
    with pytest.raises(FormatError, match=match) as info:
        expand(text, A="a", E="")
    assert str(info.value).startswith("f.yaml: x:")


def test_question_mark_without_colon_accepts_empty() -> None:
    assert expand("${E?err}", E="") == ""


def test_unset_is_empty_with_a_warning() -> None:
    m = parse_manifest(b"services:\n  a:\n    image: reg.io/a:1\n    hostname: x${NOPE}\n", {})
    assert m.document["services"]["a"]["hostname"] == "x"
    assert m.warnings == (
        "manifest: services.a.hostname: variable NOPE is not set; using an empty string",
    )


def test_operator_environment_does_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured on the old code: $${HOSTNAME} became the operator's host name."""
    monkeypatch.setenv("HOSTNAME", "operator-laptop")
    monkeypatch.setenv("TAG", "from-env")
    data = b"services:\n  a:\n    image: reg.io/a:${TAG:-1}\n    command: echo $${HOSTNAME}\n"
    m = parse_manifest(data, resolve_variables({}))
    assert m.document["services"]["a"] == {"image": "reg.io/a:1", "command": "echo ${HOSTNAME}"}
    m = parse_manifest(data, resolve_variables({}, from_env=True))
    assert m.references == ("reg.io/a:from-env",)
    assert m.document["services"]["a"]["command"] == "echo ${HOSTNAME}"


def test_variable_precedence(tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    (tmp_path / ".env").write_text("A=dotenv\nB=dotenv\n")
    environ = {"A": "env", "B": "env", "C": "env"}
    got = resolve_variables({"A": "var"}, manifest_path=compose, from_env=True, environ=environ)
    assert got == {"A": "var", "B": "dotenv", "C": "env"}
    other = tmp_path / "other.env"
    other.write_text("B=other\n")
    assert resolve_variables({}, manifest_path=compose, env_file=other) == {"B": "other"}
    with pytest.raises(FormatError, match="cannot read env file"):
        resolve_variables({}, env_file=tmp_path / "missing.env")


def test_env_file_syntax() -> None:
    text = (
        "# comment\n\nA=plain # comment\nB=val#not comment\nC='single $X \\n'\n"
        'D="dq\\nline" # c\nexport E=exported\nF=\nG\n H = spaced \n'
    )
    assert parse_env_file(text, ".env") == {
        "A": "plain",
        "B": "val#not comment",
        "C": "single $X \\n",
        "D": "dq\nline",
        "E": "exported",
        "F": "",
        "H": "spaced",
    }
    with pytest.raises(FormatError, match=r"\.env:1: unterminated"):
        parse_env_file('A="open\n', ".env")
    with pytest.raises(FormatError, match=r"\.env:1: '1A' is not a variable name"):
        parse_env_file("1A=x\n", ".env")


def test_assignments() -> None:
    assert parse_assignments(["A=1", "B=x=y", "A=2"]) == {"A": "2", "B": "x=y"}
    with pytest.raises(UsageError, match="NAME=VALUE"):
        parse_assignments(["novalue"])


def test_referenced_names() -> None:
    assert referenced_names("$A ${B:-$C} $$D ${MODULES.x}") == {"A", "B", "C", "MODULES.x"}


# --- properties -------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True)
LITERAL = st.text(st.characters(blacklist_characters="${}", codec="utf-8"), max_size=20)


@given(LITERAL)
def test_text_without_dollar_is_unchanged(text: str) -> None:
    assert expand(text) == text


@given(st.text(max_size=30))
def test_doubled_dollars_are_literal(text: str) -> None:
    """Escaping every '$' as '$$' gives back the text, whatever it holds."""
    assert expand(text.replace("$", "$$"), A="never") == text


@given(NAMES, LITERAL, st.one_of(st.none(), LITERAL))
def test_defaults(name: str, default: str, value: str | None) -> None:
    variables = {} if value is None else {name: value}
    expect_colon = value if value else default
    expect_plain = default if value is None else value
    assert Interpolator(variables, "f").expand(f"${{{name}:-{default}}}", "x") == expect_colon
    assert Interpolator(variables, "f").expand(f"${{{name}-{default}}}", "x") == expect_plain


@given(st.lists(NAMES, min_size=1, max_size=6), LITERAL)
def test_nested_defaults_take_the_first_set(names: list[str], default: str) -> None:
    text = default
    for name in reversed(names):
        text = f"${{{name}:-{text}}}"
    assert expand(text) == default
    assert Interpolator({names[-1]: "v"}, "f").expand(text, "x") == "v"
