"""One vocabulary, one default: the workflow's config schema, the command line and the Python API take every
choice and default from qkdissect.options, and every number a user gives is range-checked where it is read."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from qkdissect import api
from qkdissect.cli import build_parser, main
from qkdissect.options import (
    DEDUPE_DISTANCE,
    DEVICE_PATTERN,
    DTYPES,
    FOLDINGS,
    IMAGE_SCORES,
    OPTIONS,
    TOKEN_SOURCES,
    Option,
)
from qkdissect.requests import REQUESTS
from tests.helpers import REPO

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())

#: config key path -> the option it is: every option's own key (but the two with a oneOf entry, checked below), and
#: the keys of an option whose value a rule works out per job
SCHEMA_OPTIONS = {
    tuple(opt.config.split(".")): name
    for name, opt in OPTIONS.items()
    if opt.config and name not in ("same_object_top", "ablation_select")
} | {("ablation", "limit"): "limit"}


def schema_entry(*path: str) -> dict:
    node = SCHEMA
    for key in path:
        node = node["properties"][key]
    return node


@pytest.mark.parametrize("path", sorted(SCHEMA_OPTIONS), ids=lambda p: ".".join(p))
def test_schema_takes_its_enums_defaults_and_ranges_from_the_options(path: tuple[str, str]) -> None:
    entry, opt = schema_entry(*path), OPTIONS[SCHEMA_OPTIONS[path]]
    assert entry["default"] == opt.default
    if opt.choices is not None:
        assert tuple(entry["enum"]) == opt.choices
    if opt.pattern is not None:
        assert entry["pattern"] == opt.pattern
    if opt.minimum is not None:
        assert entry.get("exclusiveMinimum" if opt.above else "minimum") == opt.minimum
    if opt.maximum is not None:
        assert entry.get("exclusiveMaximum" if opt.below else "maximum") == opt.maximum


def test_same_object_top_and_the_vocabularies() -> None:
    assert (
        schema_entry("figures", "fig6")["oneOf"][1]["properties"]["top"]["default"]
        == OPTIONS["same_object_top"].default
    )
    assert OPTIONS["tokens"].choices == TOKEN_SOURCES and OPTIONS["folding"].choices == FOLDINGS
    assert OPTIONS["dtype"].choices == DTYPES and OPTIONS["device"].pattern == DEVICE_PATTERN
    assert OPTIONS["score"].choices == IMAGE_SCORES


def test_the_ablation_select_takes_its_default_and_pattern_from_the_option() -> None:
    entry, opt = schema_entry("ablation", "select"), OPTIONS["ablation_select"]
    one, many = entry["oneOf"]
    assert entry["default"] == opt.default and one["pattern"] == many["items"]["pattern"] == opt.pattern
    for good in ("auto", "all", "top:4", "3,1,0"):
        assert opt.check(good) == good
    for bad in ("top:0", "1,2", "first"):
        with pytest.raises(ValueError, match="is not valid"):
            opt.check(bad, "select")


def test_an_image_sets_dedupe_takes_its_range_from_the_option() -> None:
    entry = SCHEMA["properties"]["images"]["additionalProperties"]["properties"]["dedupe"]
    bits = next(alt for alt in entry["oneOf"] if alt.get("type") == "integer")
    assert (bits["minimum"], bits["maximum"]) == (OPTIONS["dedupe"].minimum, OPTIONS["dedupe"].maximum)
    assert entry["default"] is False and OPTIONS["dedupe"].default is None  # off, in both
    assert f"{DEDUPE_DISTANCE} bits" in entry["description"]


#: command -> {flag dest: option name}: every option field of every pass's request, and --device where it loads a model
CLI = {
    r.COMMAND: {f.name: f.metadata["option"] for f in fields(r) if "option" in f.metadata}
    | ({"device": "device"} if any(f.metadata.get("device") for f in fields(r)) else {})
    for r in REQUESTS
}


def test_the_tables_cover_the_options_the_passes_take() -> None:
    modes = {"device": "device", "dtype": "dtype", "block_rtol": "block_rtol", "folding": "folding", "offset": "offset"}
    assert CLI["modes"] == modes and CLI["scores"] == {"level": "null_level", "null_rtol": "null_rtol"}
    assert CLI["ablate"]["select"] == "ablation_select" and "device" not in CLI["spectrum"]
    assert SCHEMA_OPTIONS[("projections", "tokens")] == "tokens"
    assert SCHEMA_OPTIONS[("ablation", "batch_size")] == "ablation_batch_size"


def _subparser(command: str):  # type: ignore[no-untyped-def]
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[command]  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", sorted(CLI))
def test_cli_choices_and_defaults_are_the_options(command: str) -> None:
    actions = {a.dest: a for a in _subparser(command)._actions}
    for dest, name in CLI[command].items():
        opt: Option = OPTIONS[name]
        assert actions[dest].default == opt.default, (command, dest)
        if opt.choices is not None:
            assert tuple(actions[dest].choices) == opt.choices


def test_api_defaults_are_the_options() -> None:
    for fn, names in ((api.modes, ("device", "dtype", "block_rtol", "folding")),
                      (api.project, ("tokens", "batch_size", "top_k", "device", "score", "dedupe")),
                      (api.scores, ("null_rtol",)),
                      (api.ablate, ("device", "dedupe"))):  # fmt: skip
        params = inspect.signature(fn).parameters
        assert all(params[n].default == OPTIONS[n].default for n in names), fn.__name__
    assert inspect.signature(api.scores).parameters["level"].default == OPTIONS["null_level"].default


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be >= 1, not '0'"),
        (["--limit", "-3"], "--limit must be >= 1, not '-3'"),
        (["--limit", "0"], "--limit must be >= 1, not '0'"),
        (["--top-k", "0"], "--top-k must be >= 1, not '0'"),
        (["--workers", "-1"], "--workers must be >= 0"),
        (["--batch-size", "two"], "--batch-size must be an integer, not 'two'"),
        (["--device", "gpu"], "--device 'gpu' is not valid"),
        (["--tokens", "prenorm"], "invalid choice: 'prenorm'"),
        (["--score", "clip"], "invalid choice: 'clip'"),
        (["--dedupe", "65"], "--dedupe must be <= 64, not '65'"),
        (["--dedupe", "few"], "--dedupe must be an integer, not 'few'"),
    ],
)
def test_numbers_and_choices_are_checked_where_they_are_read(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = ["project", "timm:vit_tiny_patch16_224", "--modes", "m.zarr", "--images", "skimage", "-o", "p.zarr"]
    with pytest.raises(SystemExit) as e:
        main([*base, *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err
    assert len(err.strip().splitlines()) == 1  # one line: no usage block before it
    assert not list(tmp_path.iterdir())


def test_modes_rejects_a_block_rtol_outside_its_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["modes", "x", "-o", "m.zarr", "--block-rtol", "1.5"])
    assert "--block-rtol must be <= 1, not '1.5'" in capsys.readouterr().err


def test_a_text_models_own_max_tokens_takes_its_range_from_the_option() -> None:
    entry = SCHEMA["properties"]["models"]["additionalProperties"]["properties"]["text"]["properties"]["max_tokens"]
    opt = OPTIONS["max_tokens"]
    assert (entry["minimum"], entry["maximum"], entry["default"]) == (opt.minimum, opt.maximum, None)
