# Helpers only: config validation, model lookup, output lists, papermill command lines. No rules here.
import difflib
import json
import re
import shlex
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from qkdissect.provenance.records import export_config_files
from qkdissect.catalogue import KNOWN_MODELS

# The schema fills in every default before any rule runs; a config that fails it stops here.
validate(config, "../schemas/config.schema.yaml")

#: the repository (notebooks are read from here, whatever the working directory is)
REPO = Path(workflow.current_basedir).resolve().parents[1]
MODELS = list(config["models"])
#: how rules call the package: this checkout's code, also inside a conda environment made by
#: `--software-deployment-method conda` from workflow/envs/qkdissect.yaml (which holds the dependencies only)
#: (shell-command templates: the doubled braces are the shell's own, after Snakemake formats the command)
PYTHONPATH = f"PYTHONPATH={shlex.quote(str(REPO / 'src'))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}"


#: the config file(s) in force, recorded (with the sections each output depends on) in every output's provenance.
#: They reach the rules' commands through the environment (here and in every cluster job, which reads this file
#: again), never through the command text: the same config at another path is the same job.
export_config_files(workflow.configfiles)


def config_keys(*keys):
    """A `params:` value: the config sections the rule's output depends on (key paths as lists, e.g.
    ["figures", "fig3"]; "{model}" parts filled in from the job's wildcards), as JSON. The shell command passes it
    quoted (QKDISSECT_CONFIG_KEYS={params.config_keys:q}); the output's provenance records those sections and
    `qkdissect audit` compares them with the config as it is now."""

    def value(wildcards):
        return json.dumps([[part.format(**dict(wildcards.items())) for part in k] for k in keys], separators=(",", ":"))

    return value


#: the shell prefix that hands the rule's config sections (its params.config_keys) to the package
PROVENANCE_ENV = "QKDISSECT_CONFIG_KEYS={params.config_keys:q} "


def qkdissect(args, threads=False):
    """A shell-command template that runs `python -m qkdissect ARGS` (with OMP_NUM_THREADS={threads} if asked),
    recording the config sections of the rule's params.config_keys."""
    env = ("OMP_NUM_THREADS={threads} " if threads else "") + PROVENANCE_ENV
    return f"{env}{PYTHONPATH} python -m qkdissect {args}"


def _model_entry(name):
    return config["models"][name] or {}


def model_modality(name):
    """image or text: the config's `modality`, else the known model's, else image."""
    given = _model_entry(name).get("modality")
    if given:
        return given
    return KNOWN_MODELS[name].modality if name in KNOWN_MODELS else "image"


#: image figures ('all' means these) and text models (modes and scores like any model, projected on text)
IMAGE_MODELS = [m for m in MODELS if model_modality(m) == "image"]
TEXT_MODELS = [m for m in MODELS if model_modality(m) == "text"]


def text_mode_rows():
    """figures.text_modes as [{model, modes}] ('all': every text model, modes auto)."""
    wanted = config["figures"]["text_modes"]
    if wanted == "all":
        return [{"model": m, "modes": "auto"} for m in TEXT_MODELS]
    return [{"model": w, "modes": "auto"} if isinstance(w, str) else {"modes": "auto", **w} for w in wanted or []]


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
    for key in ("fig3", "s1", "s2", "ln_folding", "logits"):
        wanted = config["figures"][key]
        if isinstance(wanted, list):
            unknown = [m for m in wanted if m not in MODELS]
            if unknown:
                raise WorkflowError(f"config: figures.{key} names {unknown}, which are not under models: {MODELS}")
    fig = config["figures"]
    named = [("fig1", r["model"]) for r in fig["fig1"]] + [("fig4", r["model"]) for r in fig["fig4"]]
    named += [(f"galleries.{g}", r["model"]) for g, rows in fig["galleries"].items() for r in rows]
    named += [(f"s17.{n}", e["model"]) for n, e in fig["s17"].items()]
    named += [("fig5", fig["fig5"]["model"])] if fig["fig5"] else []
    named += [("s4", m) for m in (fig["s4"] if isinstance(fig["s4"], list) else [])]
    named += [("logits", m) for m in (fig["logits"] if isinstance(fig["logits"], list) else [])]
    named += [(f"{k}.models", m) for k in ("fig2", "fig6") for m in mask_figure_models(k)]
    unknown = sorted({f"figures.{k}: {m}" for k, m in named if m not in MODELS})
    if unknown:
        raise WorkflowError(f"config names models that are not under models ({MODELS}): {unknown}")
    text = sorted({f"figures.{k}: {m}" for k, m in named if m in TEXT_MODELS})
    if text:
        raise WorkflowError(
            f"config: {text} name text models in image figures; text models have Fig. 3, S1, S2, ln_folding and "
            "text_modes (set `modality: image` under models if a model is an image model)"
        )
    rows = text_mode_rows()
    bad = sorted({r["model"] for r in rows if r["model"] not in TEXT_MODELS})
    if bad:
        raise WorkflowError(
            f"config: figures.text_modes names {bad}, which are not text models under models (text models: "
            f"{TEXT_MODELS}; give a custom one `modality: text`)"
        )
    if rows and config["projections"]["texts"] not in config["texts"]:
        raise WorkflowError(
            f"config: projections.texts is {config['projections']['texts']!r}, which is not one of the corpora "
            f"under texts: {list(config['texts'])}"
        )
    for key in ("fig2", "fig6"):
        if fig[key]:
            bad = [d for d in fig[key]["datasets"] if d not in config["mask_datasets"]]
            if bad:  # (their models were checked with the other figures' above)
                raise WorkflowError(
                    f"config: figures.{key} names mask datasets {bad} not under mask_datasets "
                    f"({list(config['mask_datasets'])})"
                )
    if PROJECTION_MODELS and config["projections"]["images"] not in config["images"]:
        raise WorkflowError(
            f"config: projections.images is {config['projections']['images']!r}, which is not one of the image "
            f"sets under images: {list(config['images'])}"
        )
    s3 = config["figures"]["s3"]
    if s3:
        unknown = [s3[k] for k in ("encoder", "predictor") if s3[k] not in MODELS]
        if unknown:
            raise WorkflowError(f"config: figures.s3 names {unknown}, which are not under models: {MODELS}")


def mask_figure_models(key):
    """Models of a mask-dataset figure (fig2, fig6)."""
    entry = config["figures"][key]
    if not entry:
        return []
    return IMAGE_MODELS if entry["models"] == "all" else list(entry["models"])


def fig2_models():
    return mask_figure_models("fig2")


def _projection_models():
    fig = config["figures"]
    names = [r["model"] for r in fig["fig1"] + fig["fig4"]]
    names += [r["model"] for rows in fig["galleries"].values() for r in rows]
    names += [e["model"] for e in fig["s17"].values()] + ([fig["fig5"]["model"]] if fig["fig5"] else [])
    names += IMAGE_MODELS if fig["s4"] == "all" else list(fig["s4"])
    return sorted(set(names))


#: the models whose tokens are projected on the image set (those of the projection figures)
PROJECTION_MODELS = _projection_models()
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


#: figures of real images: 'all' means every image model
IMAGE_FIGURES = ("logits", "s4")


def figure_models(key):
    wanted = config["figures"][key]
    if wanted is False:
        return []
    if wanted == "all":
        return IMAGE_MODELS if key in IMAGE_FIGURES else MODELS
    return list(wanted)


def modes_resources(key):
    return config["resources"]["modes"][key]


def modes_mem_mb(wildcards):
    return _model_entry(wildcards.model).get("mem_mb") or modes_resources("mem_mb")


def uses_gpu():
    return str(config["analysis"]["device"]).startswith("cuda")


def fig3_scores(wildcards):
    return expand("results/scores/{model}.zarr", model=figure_models("fig3"))


FOLDINGS = ("raw", "folded", "folded-centred")


def folding_store(model, folding):
    """The scores store of a model's raw (the paper's) or LayerNorm-folded modes."""
    return f"results/scores/{model}.zarr" if folding == "raw" else f"results/scores_ln/{folding}/{model}.zarr"


def logits_stores(wildcards):
    return [f"results/logits/{m}/{config['projections']['images']}.zarr" for m in figure_models("logits")]


def ln_folding_scores(wildcards):
    return [folding_store(m, f) for m in figure_models("ln_folding") for f in FOLDINGS]


def s3_scores(wildcards):
    s3 = config["figures"]["s3"]
    return {part: f"results/scores/{s3[part]}.zarr" for part in ("encoder", "predictor")}


def projections_store(model):
    return f"results/projections/{model}/{config['projections']['images']}.zarr"


def project_resources(key):
    return config["resources"]["project"][key]


def preference_stores(wildcards):
    return [f"results/preference/{m}/{wildcards.dataset}.zarr" for m in fig2_models()]


def same_object_stores(wildcards):
    return [f"results/same_object/{m}/{wildcards.dataset}.zarr" for m in mask_figure_models("fig6")]


def logits_limit(images):
    """`--limit N` of the logits pass: the smaller of the image set's limit and projections.logits_limit."""
    limits = [n for n in (config["images"][images]["limit"], config["projections"]["logits_limit"]) if n]
    return f"--limit {min(limits)}" if limits else ""


def limit_option(section, name):
    """`--limit N` for an image set (section "images") or a mask dataset ("mask_datasets") that has a limit."""
    limit = config[section][name]["limit"]
    return f"--limit {limit}" if limit else ""


def figure_model_stores(model):
    """The stores a projection figure of one model reads."""
    return {
        "modes": f"results/modes/{model}.zarr",
        "scores": f"results/scores/{model}.zarr",
        "projections": projections_store(model),
    }


def gallery_rows(rows):
    """The `rows` parameter of notebooks/mode_gallery.ipynb: each model's stores and its modes."""
    return [
        {
            "model": r["model"],
            **{f"{kind}_store": path for kind, path in figure_model_stores(r["model"]).items()},
            "modes": r["modes"],
        }
        for r in rows
    ]


def gallery_inputs(rows):
    models = sorted({r["model"] for r in rows})
    return [figure_model_stores(m)[kind] for kind in ("modes", "scores", "projections") for m in models]


def s4_models():
    return figure_models("s4")


def text_store(model):
    return f"results/text_projections/{model}/{config['projections']['texts']}.zarr"


def text_modes_inputs(model):
    return {
        "modes": f"results/modes/{model}.zarr",
        "scores": f"results/scores/{model}.zarr",
        "texts": text_store(model),
    }


def text_modes_modes(model):
    """The `modes` parameter of notebooks/text_modes.ipynb for one model."""
    return yaml_param("modes", next(r["modes"] for r in text_mode_rows() if r["model"] == model))


def notebook(name):
    return str(REPO / "notebooks" / name)


def yaml_param(name, value):
    """A papermill -y argument: one parameter as a YAML mapping (lists, dicts and None survive)."""
    return yaml.safe_dump({name: value}, default_flow_style=True, width=1 << 16).strip()


def papermill(input_nb, output_nb, log, *params):
    """The papermill command line of a figure: kernel python3, a timeout, the executed notebook kept; the config
    sections of the rule's params.config_keys are recorded in the figure's provenance."""
    timeout = int(config["figures"]["notebook_timeout_s"])
    return (
        f"{PROVENANCE_ENV}{PYTHONPATH} papermill {input_nb} {output_nb} -k python3 "
        f"--execution-timeout {timeout} --log-output --no-progress-bar {' '.join(params)} > {log} 2>&1"
    )


def figure_outputs(stem):
    """The files drawn for one figure (PNG, PDF, provenance JSON and HTML, executed notebook)."""
    return [
        f"results/figures/{stem}.png",
        f"results/figures/{stem}.pdf",
        f"results/figures/{stem}.provenance.json",
        f"results/figures/{stem}.provenance.html",
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
    if figure_models("ln_folding"):
        out += figure_outputs("ln_folding_cosine")
    if figure_models("logits"):
        out += figure_outputs("logit_terms")
    for r in text_mode_rows():
        out += figure_outputs(f"text_modes_{r['model']}")
    fig = config["figures"]
    if fig["fig1"]:
        out += figure_outputs("fig1_example_modes")
    if fig["fig4"]:
        out += figure_outputs("fig4_top_images")
    if fig["fig5"]:
        out += figure_outputs("fig5_image_modes")
    for name in fig["galleries"]:
        out += figure_outputs(f"gallery_{name}")
    for name in fig["s17"]:
        out += figure_outputs(f"s17_{name}")
    if s4_models():
        out += figure_outputs("s4_anisotropy")
    if fig["fig2"]:
        for d in fig["fig2"]["datasets"]:
            out += figure_outputs(f"fig2_preference_{d}")
    if fig["fig6"]:
        for d in fig["fig6"]["datasets"]:
            out += figure_outputs(f"fig6_same_object_{d}")
    return out
