"""A pass's options reach its rule from its request: every field the config sets becomes a flag of the rule's one
``params.options`` (Options.pass_options), and the provenance records the keys of those that change a number. The
flags are parsed back with the command line's own parser: the request a job runs holds the config's values."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import MISSING, fields
from typing import Any

import pytest
import yaml

from qkdissect.cli import build_parser, request_of
from qkdissect.provenance.records import config_value
from qkdissect.requests import REQUESTS, AblationRequest, ProjectRequest, Request, ScoresRequest, TextRequest
from qkdissect.workflow.commands import Options, config_keys, option_flags, recorded_keys
from qkdissect.workflow.plan import Plan
from tests.helpers import REPO
from tests.helpers.workflow import prepared

DEFAULT = yaml.safe_load((REPO / "config/config.yaml").read_text())
#: a value for every key the passes' options are read from, none of them the default, every switch on
TURNED: dict[str, Any] = {
    "projections": {"tokens": "pre-norm", "score": "clipped", "top_k": 5, "batch_size": 3, "workers": 2},
    "analysis": {"dtype": "float32", "block_rtol": 0.25, "null_level": 0.9, "null_rtol": 0.0, "released_code": True},
    "ablation": {"select": ["top:2", "3,1,0"], "batch_size": 5, "mean": True, "attention_only": True},
    "rotary": {"distance_bin": 2.5},
}
TURNED["projections"] |= {"logits_batch_size": 2, "text_batch_size": 7, "max_tokens": 64}
TURNED["figures"] = {
    "fig2": {"datasets": ["synthetic"], "models": "all", "example": 3},
    "fig6": {"datasets": ["synthetic"], "models": "all", "top": 2},
}
CONFIGURED = [r for r in REQUESTS if r.configured()]


def config_with(changes: dict[str, Any]) -> dict[str, Any]:
    given = copy.deepcopy(DEFAULT)
    for section, values in changes.items():
        given[section] = {**(given.get(section) or {}), **values}
    return prepared(given)[0]


def required_args(request: type[Request]) -> list[str]:
    """The model, inputs and output a pass command needs (placeholders), so that its options can be parsed."""
    args = [request.COMMAND]
    for f in fields(request):
        meta = f.metadata
        if meta.get("model") or ("flags" in meta and not meta["flags"] and f.default is MISSING):
            args.append("x")
        elif "flags" in meta and meta["cli"].get("required"):
            args += [meta["flags"][-1], "x.zarr"]
    return args


def parsed(request: type[Request], flags: str) -> Request:
    """The request the command line makes of a pass command with these option flags."""
    ns = build_parser().parse_args([*required_args(request), *flags.split()])
    return request_of(request, ns, model="x") if request.COMMAND == "modes" else request_of(request, ns)


def expected(request: type[Request], config: dict[str, Any]) -> dict[str, Any]:
    """What each configured field of the request holds when the config's value reaches it (brute force: a switch's
    field differs from its default exactly when the config turns it on)."""
    defaults = {f.name: f.default for f in fields(request)}
    out = {}
    for c in request.configured():
        value = config_value(config, c.key)
        if c.switch:
            out[c.name] = (not defaults[c.name]) if value else defaults[c.name]
        elif value is None:
            out[c.name] = defaults[c.name]
        else:
            out[c.name] = ([value] if isinstance(value, str) else list(value)) if c.many else value
    return out


@pytest.mark.parametrize("turned", [False, True], ids=["offline-default", "every-key-turned"])
@pytest.mark.parametrize("request_type", CONFIGURED, ids=lambda r: r.COMMAND)
def test_the_flags_of_a_rule_parse_to_the_configs_values(request_type: type[Request], turned: bool) -> None:
    config = config_with(TURNED if turned else {})
    flags = Options(Plan(config)).pass_options(request_type)({"model": "dinov2-vits14-imgfocus"})
    request = parsed(request_type, flags)
    assert {c.name: getattr(request, c.name) for c in request_type.configured()} == expected(request_type, config)
    if turned:  # every key set and turned: every configured field is a flag
        assert all(c.flag in flags.split() for c in request_type.configured())


def test_every_key_the_options_read_is_turned_here() -> None:
    keys = {c.key for r in REQUESTS for c in r.configured()}
    figures = {("figures", "fig2", "example"), ("figures", "fig6", "top")}
    assert keys == {(s, k) for s, v in TURNED.items() if s != "figures" for k in v} | figures


def test_a_switch_is_given_alone_and_a_value_is_quoted() -> None:
    fields_ = AblationRequest.configured()
    flags = option_flags(fields_, {"select": ["top:2", "3,1,0"], "mean": True, "outputs": False, "workers": None})
    assert flags == "--select top:2 3,1,0 --mean"
    assert option_flags(ProjectRequest.configured(), {"tokens": "a b; rm -rf x", "top_k": 3}) == (
        "--tokens 'a b; rm -rf x' --top-k 3"
    )
    assert option_flags(ScoresRequest.configured(), {}) == ""


def test_a_rule_gives_an_option_it_works_out_per_job_instead_of_the_configs() -> None:
    options = Options(Plan(prepared(DEFAULT)[0]))
    flags = options.pass_options(TextRequest, max_tokens=options.text_max_tokens)
    assert f"--max-tokens {DEFAULT['projections']['max_tokens']}" in flags({"model": "minilm-l6"})
    assert "--max-tokens 32" in options.pass_options(TextRequest, max_tokens=lambda w: 32)({"model": "minilm-l6"})
    with pytest.raises(ValueError, match="project takes no option folding"):
        options.pass_options(ProjectRequest, folding="raw")


def test_the_provenance_records_the_keys_of_the_options_that_change_numbers() -> None:
    project = recorded_keys(ProjectRequest)
    assert {"tokens", "top_k", "score"} <= {k[-1] for k in project}
    assert ["projections", "batch_size"] not in project and ["projections", "workers"] not in project
    keys = config_keys(["models", "{model}"], ["ablation"], AblationRequest, ProjectRequest)({"model": "m"})
    assert json.loads(keys) == [["models", "m"], ["ablation"], *project]  # the section holds the ablation's own


def test_the_rules_give_every_pass_its_options_and_name_none() -> None:
    """Every pass a rule runs (but maps, whose request the figure table writes) is given pass_options, its shell
    command takes {params.options}, and no rule names a flag of an option the config sets."""
    flags = {c.flag for r in REQUESTS for c in r.configured()}
    given = set()
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        text = smk.read_text()
        named = {f for f in flags if re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)}
        assert not named, f"{smk.name} names {sorted(named)}: give them through pass_options"
        passes = re.findall(r"options=pass_options\(requests\.(\w+)", text)
        assert text.count("{params.options}") == len(passes), smk.name
        given |= set(passes)
    assert given == {r.__name__ for r in REQUESTS} - {"MapsRequest"}
