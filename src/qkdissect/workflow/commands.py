"""The rules' command lines and the option values they pass: ``python -m qkdissect ...`` and papermill, each with
the config sections its output records, and the options a config entry turns into (quoted for the shell).

The commands are Snakemake shell-command templates: ``{params.x:q}`` is filled in by Snakemake, and a brace the
shell needs is doubled. A ``wildcards`` argument is a job's wildcards or a plain mapping of them.

A pass's options come from its request (:mod:`qkdissect.requests`): every field the config sets
(:meth:`~qkdissect.requests.Request.configured`) is a flag of the rule's one ``params.options``
(:meth:`Options.pass_options`), and :func:`config_keys` records the keys of those that change its numbers. A rule
names the rest: its inputs and output, the model (spec, name, manifest, device) and what it works out per job
(limits, dedupe, shards, offsets).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..provenance.records import config_value
from ..requests import Configured, Request
from .plan import Plan, wildcard_values

#: the shell prefix that hands the rule's config sections (its params.config_keys) to the package
PROVENANCE_ENV = "QKDISSECT_CONFIG_KEYS={params.config_keys:q} "


def pythonpath_prefix(repo: Path | None) -> str:
    """How rules run the package: this checkout's code (also inside a conda environment made from
    workflow/envs/qkdissect.yaml, which holds the dependencies only); from a remote source ('' here), the installed
    qkdissect."""
    return f"PYTHONPATH={shlex.quote(str(repo / 'src'))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}" if repo else ""


def config_keys(*keys: Sequence[str] | type[Request]) -> Callable[[Any], str]:
    """A `params:` value: the config sections the rule's output depends on (key paths as lists, e.g.
    ["figures", "fig3"]; "{model}" parts filled in from the job's wildcards; a pass's request: the keys of its
    options that the provenance records, :func:`recorded_keys`), as JSON. A key inside one listed before it is left
    out. The shell command passes it quoted (QKDISSECT_CONFIG_KEYS={params.config_keys:q}); the output's provenance
    records those sections and `qkdissect audit` compares them with the config as it is now."""

    def value(wildcards: Any) -> str:
        w = wildcard_values(wildcards)
        paths: list[list[str]] = []
        for k in keys:
            for path in recorded_keys(k) if isinstance(k, type) else [[part.format(**w) for part in k]]:
                if not any(path[: len(p)] == p for p in paths):
                    paths.append(path)
        return json.dumps(paths, separators=(",", ":"))

    return value


def recorded_keys(request: type[Request]) -> list[list[str]]:
    """The config keys of a pass's options that its output's provenance records (those that can change a number)."""
    return [list(c.key) for c in request.configured() if c.recorded]


def option_flags(fields: Sequence[Configured], values: Mapping[str, Any]) -> str:
    """The flags of a pass's options for the shell, in the order of ``fields``: ``--flag VALUE`` (a field that takes
    several: each value after the flag), a switch's flag alone when its value is true; a value quoted, and None
    (and a switch's false) left out, so that the pass takes its default."""
    words: list[str] = []
    for f in fields:
        value = values.get(f.name)
        if value is None or (f.switch and not value):
            continue
        words.append(f.flag)
        if not f.switch:
            many = value if f.many and isinstance(value, list | tuple) else [value]
            words += [shlex.quote(str(v)) for v in many]
    return " ".join(words)


def qkdissect_command(args: str, pythonpath: str, threads: bool = False) -> str:
    """A shell-command template that runs `python -m qkdissect ARGS` (with OMP_NUM_THREADS={threads} if asked),
    recording the config sections of the rule's params.config_keys."""
    env = ("OMP_NUM_THREADS={threads} " if threads else "") + PROVENANCE_ENV
    return f"{env}{pythonpath} python -m qkdissect {args}"


def papermill_command(timeout_s: int, pythonpath: str) -> str:
    """The shell command of every figure rule: papermill runs the figure's notebook (kernel python3, a timeout,
    the executed notebook kept) with its `stores` and `options` (-y) and its `output` and `notebook`; the config
    sections of params.config_keys are recorded in the figure's provenance."""
    return (
        f"{PROVENANCE_ENV}{pythonpath} papermill {{input.notebook:q}} {{output.notebook:q}} -k python3 "
        f"--execution-timeout {int(timeout_s)} --log-output --no-progress-bar -y {{params.notebook:q}} "
        "-p output {output.png:q} -p notebook {input.notebook:q} > {log:q} 2>&1"
    )


def limit_flag(*limits: int | None) -> str:
    """`--limit N`: the smallest of the limits that are set; nothing when none is."""
    given = [n for n in limits if n]
    return f"--limit {min(given)}" if given else ""


def stores_of(roles: Mapping[str, Any], input: Any) -> dict[str, Any]:
    """role -> the paths of the job's `input:` under that role (a list, or one path where `roles` has one): the
    stores a command or notebook reads, as Snakemake resolved them (under a module's prefix, too)."""
    return {
        role: str(getattr(input, role)) if isinstance(paths, str) else [str(p) for p in getattr(input, role)]
        for role, paths in roles.items()
    }


class Options:
    """The option values the rules take from the config (each a string for the shell, '' when not set)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.config = plan.config

    def lock_options(self) -> str:
        """The resolve options of the weights lock (config `lock`), quoted for the shell: none without a lock."""
        lock = self.config["lock"]
        if not lock["path"]:
            return ""
        return f"--lock {shlex.quote(lock['path'])}" + (" --update-lock" if lock["update"] else "")

    def modes_resources(self, key: str) -> Any:
        return self.config["resources"]["modes"][key]

    def project_resources(self, key: str) -> Any:
        return self.config["resources"]["project"][key]

    def modes_mem_mb(self, wildcards: Any) -> Any:
        model = wildcard_values(wildcards)["model"]
        return self.plan.entry(model).get("mem_mb") or self.modes_resources("mem_mb")

    def limit_option(self, section: str, name: str) -> str:
        """`--limit N` for an image set (section "images") or a mask dataset ("mask_datasets") that has a limit."""
        return limit_flag(self.config[section][name]["limit"])

    def logits_limit(self, images: str) -> str:
        """`--limit N` of the logits pass: the smaller of the image set's limit and projections.logits_limit."""
        return limit_flag(self.config["images"][images]["limit"], self.config["projections"]["logits_limit"])

    def text_limit_option(self, model: str, corpus: str) -> str:
        """`--limit N` of a text model's pass: the smaller of the corpus's limit and the model's text.passages."""
        return limit_flag(self.config["texts"][corpus]["limit"], self.plan.text_entry(model).get("passages"))

    def text_max_tokens(self, wildcards: Any) -> Any:
        """The tokens a text model's passages are truncated to: its text.max_tokens, else projections.max_tokens."""
        model = wildcard_values(wildcards)["model"]
        return self.plan.text_entry(model).get("max_tokens") or self.config["projections"]["max_tokens"]

    def dedupe_option(self, images: str) -> str:
        """`--dedupe T` for an image set whose dedupe is on (true: the default distance), else nothing."""
        dedupe = self.config["images"][images].get("dedupe", False)
        if dedupe is False or dedupe is None:
            return ""
        return "--dedupe" if dedupe is True else f"--dedupe {int(dedupe)}"

    def ablation_limit(self, images: str) -> str:
        """`--limit N` of the ablation pass: the smaller of the image set's limit and ablation.limit."""
        return limit_flag(self.config["images"][images]["limit"], self.config["ablation"]["limit"])

    def pass_options(self, request: type[Request], **given: Any) -> Callable[[Any], str]:
        """A `params:` value: the flags of every option of the pass ``request`` that the config sets
        (:meth:`~qkdissect.requests.Request.configured`: its value at the option's key), quoted for the shell;
        ``given``: an option whose value a rule works out per job instead (a value, or a function of the job's
        wildcards), e.g. a model's own max_tokens."""

        def options(wildcards: Any) -> str:
            fields = request.configured()
            values = {f.name: config_value(self.config, f.key) for f in fields}
            values |= {name: v(wildcards) if callable(v) else v for name, v in given.items()}
            return option_flags(fields, values)

        unknown = set(given) - {f.name for f in request.configured()}
        if unknown:
            raise ValueError(f"{request.COMMAND} takes no option {', '.join(sorted(unknown))} from the config")
        return options

    def offsets_option(self, wildcards: Any) -> str:
        """--offsets of a rotary model: every offset of an image model's grid, offsets 0..context-1 of a text
        model."""
        model = wildcard_values(wildcards)["model"]
        return "all" if self.plan.modality(model) == "image" else str(self.config["rotary"]["context"])

    def content_core_option(self, wildcards: Any) -> str:
        """--offset of a rotary model's content core: rotary.content_core (mean when not set); a language model's
        plain mean is over the causal pairs of rotary.context tokens (mean:context)."""
        given = self.config["rotary"]["content_core"] or "mean"
        text = self.plan.modality(wildcard_values(wildcards)["model"]) == "text"
        return f"mean:{self.config['rotary']['context']}" if given == "mean" and text else str(given)

    def atlas_labels(self, wildcards: Any = None) -> str:
        """`--label MODEL=LABEL` (quoted) for every atlas model with a `label` in the config: the name the page
        shows."""
        labelled = [(m, self.plan.entry(m)["label"]) for m in self.plan.atlas_models if "label" in self.plan.entry(m)]
        return " ".join(f"--label {shlex.quote(f'{m}={label}')}" for m, label in labelled)

    def model_spec(self, wildcards: Any) -> str:
        return self.plan.spec_of(wildcard_values(wildcards)["model"])
