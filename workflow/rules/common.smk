# Helpers only: config validation, model lookup, output lists, papermill command lines. No rules here.
import difflib
import re
import shlex
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from qkdissect.registry import KNOWN_MODELS

# The schema fills in every default before any rule runs; a config that fails it stops here.
validate(config, "../schemas/config.schema.yaml")

#: the repository (notebooks are read from here, whatever the working directory is)
REPO = Path(workflow.current_basedir).resolve().parents[1]
MODELS = list(config["models"])
#: how rules call the package: this checkout's code, also inside a conda environment made by
#: `--software-deployment-method conda` from workflow/envs/qkdissect.yaml (which holds the dependencies only)
#: (shell-command templates: the doubled braces are the shell's own, after Snakemake formats the command)
PYTHONPATH = f"PYTHONPATH={shlex.quote(str(REPO / 'src'))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}"


def qkdissect(args, threads=False):
    """A shell-command template that runs `python -m qkdissect ARGS` (with OMP_NUM_THREADS={threads} if asked)."""
    return ("OMP_NUM_THREADS={threads} " if threads else "") + f"{PYTHONPATH} python -m qkdissect {args}"


def _model_entry(name):
    return config["models"][name] or {}


def _check_config():
    for name in MODELS:
        if not _model_entry(name).get("spec") and name not in KNOWN_MODELS:
            close = difflib.get_close_matches(name, list(KNOWN_MODELS), n=3)
            raise WorkflowError(
                f"config: model {name!r} is not a known model and has no spec. "
                + (f"Did you mean {', '.join(close)}? " if close else "")
                + "Known models: `qkdissect models`; otherwise give it one, e.g. "
                f"{name}: {{spec: 'timm:vit_base_patch16_224@/path/to/weights.safetensors'}}"
            )
    for key in ("fig3", "s1", "s2"):
        wanted = config["figures"][key]
        if isinstance(wanted, list):
            unknown = [m for m in wanted if m not in MODELS]
            if unknown:
                raise WorkflowError(f"config: figures.{key} names {unknown}, which are not under models: {MODELS}")
    s3 = config["figures"]["s3"]
    if s3:
        unknown = [s3[k] for k in ("encoder", "predictor") if s3[k] not in MODELS]
        if unknown:
            raise WorkflowError(f"config: figures.s3 names {unknown}, which are not under models: {MODELS}")


_check_config()


def model_pattern():
    """The model wildcard matches configured names only (names may contain '-', '.' and '_')."""
    return "|".join(re.escape(m) for m in MODELS)


def model_spec(wildcards):
    return _model_entry(wildcards.model).get("spec") or KNOWN_MODELS[wildcards.model].spec


def model_styles(names):
    """Per-model style overrides from the config, for the Fig. 3 notebook."""
    keys = ("label", "color", "linestyle", "marker")
    return {n: {k: _model_entry(n)[k] for k in keys if k in _model_entry(n)} for n in names}


def figure_models(key):
    wanted = config["figures"][key]
    if wanted is False:
        return []
    return MODELS if wanted == "all" else list(wanted)


def modes_resources(key):
    return config["resources"]["modes"][key]


def modes_mem_mb(wildcards):
    return _model_entry(wildcards.model).get("mem_mb") or modes_resources("mem_mb")


def uses_gpu():
    return str(config["analysis"]["device"]).startswith("cuda")


def fig3_scores(wildcards):
    return expand("results/scores/{model}.zarr", model=figure_models("fig3"))


def s3_scores(wildcards):
    s3 = config["figures"]["s3"]
    return {part: f"results/scores/{s3[part]}.zarr" for part in ("encoder", "predictor")}


def notebook(name):
    return str(REPO / "notebooks" / name)


def yaml_param(name, value):
    """A papermill -y argument: one parameter as a YAML mapping (lists, dicts and None survive)."""
    return yaml.safe_dump({name: value}, default_flow_style=True, width=1 << 16).strip()


def papermill(input_nb, output_nb, log, *params):
    """The papermill command line of a figure: kernel python3, a timeout, the executed notebook kept."""
    timeout = int(config["figures"]["notebook_timeout_s"])
    return (
        f"{PYTHONPATH} papermill {input_nb} {output_nb} -k python3 --execution-timeout {timeout} --log-output "
        f"--no-progress-bar {' '.join(params)} > {log} 2>&1"
    )


def figure_outputs(stem):
    """The files drawn for one figure (PNG, PDF, provenance JSON, executed notebook)."""
    return [
        f"results/figures/{stem}.png",
        f"results/figures/{stem}.pdf",
        f"results/figures/{stem}.provenance.json",
        f"results/notebooks/{stem}.ipynb",
    ]


def all_figures():
    out = []
    if figure_models("fig3"):
        for variant in ("weighted", "unweighted"):
            out += figure_outputs(f"fig3_{variant}_cosine")
    for m in figure_models("s1"):
        out += figure_outputs(f"s1_cosine_histograms_{m}")
    for m in figure_models("s2"):
        out += figure_outputs(f"s2_spectrum_grid_{m}")
    if config["figures"]["s3"]:
        out += figure_outputs("s3_ijepa_encoder_predictor")
    return out
