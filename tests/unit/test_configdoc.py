"""config/README.md is generated from the config schema (python -m qkdissect.configdoc) and kept in step with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from qkdissect.configdoc import load, main, render
from tests.helpers import REPO

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
#: the JSON Schema keywords the schema may use; any other key in a schema node is a typo (e.g. an unquoted comma in
#: a flow mapping, which turns the end of a description into a key of its own and drops it from the README)
KEYWORDS = {
    "$schema", "title", "description", "type", "required", "additionalProperties", "$defs", "properties", "pattern",
    "maxLength", "minLength", "oneOf", "const", "enum", "default", "minItems", "maxItems", "items", "prefixItems",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "propertyNames", "minProperties", "$ref",
}  # fmt: skip


def test_committed_readme_is_the_generated_one() -> None:
    assert (REPO / "config/README.md").read_text() == render(load(SCHEMA)), "run: python -m qkdissect.configdoc"


def _stray_keys(node: Any, path: str = "") -> list[str]:
    """Keys of schema nodes that are not keywords (below `properties` and `$defs` every key is a name)."""
    if isinstance(node, list):
        return [s for i, v in enumerate(node) for s in _stray_keys(v, f"{path}[{i}]")]
    if not isinstance(node, dict):
        return []
    out = []
    for key, value in node.items():
        if key in ("properties", "$defs"):
            out += [s for name, child in value.items() for s in _stray_keys(child, f"{path}.{name}")]
        elif key != "default":
            out += [f"{path}: {key}"] * (key not in KEYWORDS) + _stray_keys(value, path)
    return out


def test_schema_uses_only_keywords() -> None:
    assert _stray_keys(yaml.safe_load(SCHEMA.read_text())) == []


def test_every_key_reaches_the_readme() -> None:
    """Properties, named entries, list items, object alternatives and $refs each give a row with their default."""
    schema = {
        "description": "Top.",
        "$defs": {"row": {"type": "object", "properties": {"k": {"type": "integer", "minimum": 1, "default": 3}}}},
        "properties": {
            "sets": {"type": "object", "additionalProperties": {"properties": {"source": {"description": "a | b"}}}},
            "fig": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"top": {"enum": ["x", "y"]}}}]},
            "rows": {"type": "array", "items": {"$ref": "#/$defs/row"}, "default": []},
        },
        "required": ["sets"],
    }
    text = render(schema)
    assert "## `sets` (required)" in text and "## `fig`\n" in text
    assert '| `fig.top` | "x" \\| "y" |  |  |' in text
    assert "| `sets.<name>.source` | any |  | a \\| b |" in text
    assert "| `rows[].k` | integer (≥ 1) | `3` |  |" in text
    assert "Takes array; default `[]`." in text


def test_check_flags_a_stale_readme_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "README.md"
    assert main(["--schema", str(SCHEMA), "-o", str(out), "--check"]) == 1
    assert not out.exists() and "out of date" in capsys.readouterr().err
    assert main(["--schema", str(SCHEMA), "-o", str(out)]) == 0
    assert main(["--schema", str(SCHEMA), "-o", str(out), "--check"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]
    assert main(["--schema", str(tmp_path / "none.yaml"), "-o", str(out)]) == 2
    assert "cannot read the config schema" in capsys.readouterr().err
