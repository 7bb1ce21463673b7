# Snakemake glue only: the workflow's logic lives in the package (qkdissect.workflow, typed and unit-tested); this
# file reads Snakemake's `config` and `workflow`, builds it, and hands its functions to the rules. No rules here.
import copy
import json  # json, os and re: for the other rule files too (one namespace)
import os
import re
import sys
from functools import partial
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.sourcecache import LocalSourceFile
from snakemake.utils import validate

from qkdissect import requests  # the passes' requests: each rule's options and recorded keys (pass_options)
from qkdissect.config_check import source_problems, unknown_keys
from qkdissect.locations import DATA_ENV, data_dir
from qkdissect.models.spec import PATHS_FROM_CONFIG
from qkdissect.options import FOLDINGS
from qkdissect.provenance.fetch import is_fetched
from qkdissect.workflow import paths
from qkdissect.workflow.commands import Options, config_keys, papermill_command as _papermill, pythonpath_prefix
from qkdissect.workflow.commands import qkdissect_command, stores_of
from qkdissect.workflow.config import check_config, export_environment, fill_in_defaults, unused_keys, unused_warning
from qkdissect.workflow.plan import ConfigError, Plan, wildcard_values
from qkdissect.workflow.sources import data_sources
from qkdissect.workflow.targets import ATLAS_CATEGORY, CLAIMS_CATEGORY, FigureTable

# The user's config as given (before the schema fills in its defaults): the keys it sets are the ones a warning
# names when they lead to no job, and some defaults follow from them (qkdissect.workflow.config).
_GIVEN = copy.deepcopy(dict(config))
# The schema fills in every default before any rule runs; a config that fails it stops here. A key it does not
# know (a typo) is named first, with the closest known ones, instead of the whole schema.
_typos = unknown_keys(
    config, yaml.safe_load((Path(workflow.current_basedir).parent / "schemas/config.schema.yaml").read_text())
)
if _typos:
    raise WorkflowError("; ".join(_typos))
validate(config, "../schemas/config.schema.yaml")
if fill_in_defaults(config, _GIVEN):
    validate(config, "../schemas/config.schema.yaml")  # the defaults of what was filled in

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


def notebook(name):
    """A figure's notebook, relative to the working directory when inside it (paths.relative_if_inside)."""
    return paths.relative_if_inside(own_file(f"../../notebooks/{name}"), Path.cwd())


#: the config file(s) in force and this checkout reach the rules' commands through the environment (here and in
#: every cluster job, which reads this file again); imported as a module with `config:`, the config is the
#: importing workflow's mapping, not a file of ours: none is recorded
export_environment([] if workflow.modifier.skip_configfile else workflow.configfiles, REPO)
#: how rules call the package: this checkout's code; from a remote source, the installed qkdissect
PYTHONPATH = pythonpath_prefix(REPO)
#: the data folder (qkdissect.locations.data_dir: $QKDISSECT_DATA, else a checkout's data/, else the user cache),
#: chosen once here and handed to every job (and cluster job) through the environment: the weights this file lists
#: as inputs are the ones the jobs read, whatever folder a job runs in
os.environ[DATA_ENV] = str(data_dir())
#: the specs the jobs read come from a config: a relative path in one never climbs above the run's folder ('..'),
#: where one a user types (on the command line, in Python) is taken as given
os.environ[PATHS_FROM_CONFIG] = "1"

try:
    PLAN = Plan(config)
    check_config(PLAN)
    TABLE = FigureTable(PLAN, yaml.safe_load(Path(own_file("../figures.yaml")).read_text()))
except ConfigError as e:
    raise WorkflowError(str(e)) from None
OPTIONS = Options(PLAN)
if workflow.is_main_process and (_unused := unused_warning(unused_keys(TABLE, _GIVEN))):
    print(_unused, file=sys.stderr)
#: the image folders, mask datasets and corpora the jobs read that cannot be read (a folder that is not there),
#: found here without resolving or loading a model: named now, one line each (a dry run plans anyway), and a run
#: stops on them before its first job (the Snakefile's onstart); the jobs a cluster runs read this file again and
#: check nothing
DATA_PROBLEMS = source_problems(data_sources(PLAN)) if workflow.is_main_process else []
for _problem in DATA_PROBLEMS:
    print(f"config: {_problem}", file=sys.stderr)

# ----------------------------------------------------------------------------------------- what the config asks for
MODELS, IMAGE_MODELS, TEXT_MODELS = PLAN.models, PLAN.image_models, PLAN.text_models
ROTARY_MODELS, ROTARY_CAPABLE = PLAN.rotary_models, PLAN.rotary_capable
PROJECTION_MODELS, ATLAS_MODELS = PLAN.projection_models, PLAN.atlas_models
IMAGES = config["projections"]["images"]
figure_models, mask_figure_models, spec_of = PLAN.figure_models, PLAN.mask_figure_models, PLAN.spec_of
uses_gpu = PLAN.uses_gpu

#: the variable by which the SLURM profile (workflow/profiles/slurm) sends the rules that ask for a GPU to a partition
GPU_PARTITION = "QKDISSECT_GPU_PARTITION"


def _route_gpu_jobs():
    """With the SLURM profile (its set-resources give slurm_partition "$QKDISSECT_GPU_PARTITION"): under device
    cuda the variable must name the GPU partition, else the run stops here, in one line; on CPUs the rules ask for
    no GPU and go to the default partition like every other job (the variable is set to it for this run)."""
    routed = sorted(
        name
        for name, res in workflow.resource_settings.overwrite_resources.items()
        if f"${GPU_PARTITION}" in str(getattr(res.get("slurm_partition"), "raw", res.get("slurm_partition")))
    )
    if not routed or not workflow.is_main_process:
        return
    if not uses_gpu():  # the profile's default partition, if it names one (else the cluster's: "")
        default = workflow.resource_settings.default_resources
        given = default.get("slurm_partition") if default is not None else None
        os.environ[GPU_PARTITION] = str(getattr(given, "raw", given) or "")
    elif not os.environ.get(GPU_PARTITION, "").strip():
        raise WorkflowError(
            f"analysis.device is {config['analysis']['device']!r} and the SLURM profile sends the rules that ask "
            f"for a GPU ({len(routed)}: {', '.join(routed[:3])}, ...) to ${GPU_PARTITION}, which is not set: export "
            f"{GPU_PARTITION}=<your GPU partition> (sinfo -s lists them), or set device: cpu"
        )


_route_gpu_jobs()

# ----------------------------------------------------------------------------------------- paths
names_pattern, folding_store = paths.names_pattern, paths.folding_store
projections_store = partial(paths.projections_store, images=IMAGES)
atlas_maps_store = partial(paths.atlas_maps_store, images=IMAGES)
text_store = partial(paths.text_store, corpus=config["projections"]["texts"])
#: the models whose modes are ablated (figures.ablation, checked by the plan), their stores (rules/ablation.smk)
ABLATION_MODELS = PLAN.ablation_models
ablation_store = partial(paths.ablation_store, images=IMAGES)
#: claim A1's role: the ablation stores (each made with its model's projections, which `all` makes too)
ABLATION_CLAIMS = {"ablation": [ablation_store(m) for m in ABLATION_MODELS]} if ABLATION_MODELS else {}
#: what `all` and the crate take from the atlas (rules/atlas.smk): its page, data and provenance
ATLAS_OUTPUTS = paths.ATLAS_OUTPUTS if ATLAS_MODELS else []


def model_pattern():
    """The model wildcard matches configured names only (names may contain '-', '.' and '_')."""
    return names_pattern(MODELS)


# ----------------------------------------------------------------------------------------- commands and options
def qkdissect(args, threads=False):
    """A shell-command template that runs `python -m qkdissect ARGS` (qkdissect.workflow.commands)."""
    return qkdissect_command(args, PYTHONPATH, threads)


def papermill_command():
    return _papermill(config["figures"]["notebook_timeout_s"], PYTHONPATH)


lock_options, modes_resources = OPTIONS.lock_options, OPTIONS.modes_resources
project_resources, modes_mem_mb = OPTIONS.project_resources, OPTIONS.modes_mem_mb
limit_option, logits_limit, text_limit_option = OPTIONS.limit_option, OPTIONS.logits_limit, OPTIONS.text_limit_option
dedupe_option, pass_options = OPTIONS.dedupe_option, OPTIONS.pass_options
offsets_option, content_core_option = OPTIONS.offsets_option, OPTIONS.content_core_option
atlas_labels, model_spec = OPTIONS.atlas_labels, OPTIONS.model_spec
weights_inputs, _conversions = PLAN.weights_inputs, PLAN.conversions


# ----------------------------------------------------------------------------------------- the figure table
#: workflow/figures.yaml: one row per kind of figure (figures.smk makes a rule of each)
FIGURES, STEMS, MAPS, REPORT_CATEGORIES = TABLE.table, TABLE.stems, TABLE.maps, TABLE.report_categories
all_figures, claims_stores = TABLE.all_figures, TABLE.claims_stores
#: results fetched from a published bundle (`qkdissect fetch`) need no weights
intermediates = partial(TABLE.intermediates, fetched=is_fetched("results"))
rotary_targets = TABLE.rotary_targets


def figure_inputs(key):
    """The `input:` function of a figure rule: its notebook and every store it reads."""

    def inputs(wildcards):
        return {"notebook": notebook(FIGURES[key]["notebook"]), **TABLE.figure_stores(key, wildcard_values(wildcards))}

    return inputs


figure_parameters, figure_options = TABLE.figure_parameters, TABLE.figure_options
figure_config_keys, figure_wildcards = TABLE.figure_config_keys, TABLE.figure_wildcards
maps_request, maps_source, maps_config_keys = TABLE.maps_request, TABLE.maps_source, TABLE.maps_config_keys
