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

from qkdissect.config_check import unknown_keys
from qkdissect.options import FOLDINGS
from qkdissect.workflow import paths
from qkdissect.workflow.commands import Options, config_keys, papermill_command as _papermill, pythonpath_prefix
from qkdissect.workflow.commands import qkdissect_command, stores_of
from qkdissect.workflow.config import check_config, export_environment, fill_in_defaults, unused_keys, unused_warning
from qkdissect.workflow.plan import ConfigError, Plan, wildcard_values
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
    return own_file(f"../../notebooks/{name}")


#: the config file(s) in force and this checkout reach the rules' commands through the environment (here and in
#: every cluster job, which reads this file again); imported as a module with `config:`, the config is the
#: importing workflow's mapping, not a file of ours: none is recorded
export_environment([] if workflow.modifier.skip_configfile else workflow.configfiles, REPO)
#: how rules call the package: this checkout's code; from a remote source, the installed qkdissect
PYTHONPATH = pythonpath_prefix(REPO)

try:
    PLAN = Plan(config)
    check_config(PLAN)
    TABLE = FigureTable(PLAN, yaml.safe_load(Path(own_file("../figures.yaml")).read_text()))
except ConfigError as e:
    raise WorkflowError(str(e)) from None
OPTIONS = Options(PLAN)
if workflow.is_main_process and (_unused := unused_warning(unused_keys(TABLE, _GIVEN))):
    print(_unused, file=sys.stderr)

# ----------------------------------------------------------------------------------------- what the config asks for
MODELS, IMAGE_MODELS, TEXT_MODELS = PLAN.models, PLAN.image_models, PLAN.text_models
ROTARY_MODELS, ROTARY_CAPABLE = PLAN.rotary_models, PLAN.rotary_capable
PROJECTION_MODELS, ATLAS_MODELS = PLAN.projection_models, PLAN.atlas_models
IMAGES = config["projections"]["images"]
figure_models, mask_figure_models, spec_of = PLAN.figure_models, PLAN.mask_figure_models, PLAN.spec_of
uses_gpu = PLAN.uses_gpu

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
limit_option, logits_limit = OPTIONS.limit_option, OPTIONS.logits_limit
text_limit_option, text_max_tokens = OPTIONS.text_limit_option, OPTIONS.text_max_tokens
dedupe_option, workers_option = OPTIONS.dedupe_option, OPTIONS.workers_option
offsets_option, content_core_option = OPTIONS.offsets_option, OPTIONS.content_core_option
atlas_labels, model_spec = OPTIONS.atlas_labels, OPTIONS.model_spec
weights_inputs, _conversions = PLAN.weights_inputs, PLAN.conversions


# ----------------------------------------------------------------------------------------- the figure table
#: workflow/figures.yaml: one row per kind of figure (figures.smk makes a rule of each)
FIGURES, STEMS, MAPS, REPORT_CATEGORIES = TABLE.table, TABLE.stems, TABLE.maps, TABLE.report_categories
all_figures, claims_stores, intermediates = TABLE.all_figures, TABLE.claims_stores, TABLE.intermediates
rotary_targets = TABLE.rotary_targets


def figure_inputs(key):
    """The `input:` function of a figure rule: its notebook and every store it reads."""

    def inputs(wildcards):
        return {"notebook": notebook(FIGURES[key]["notebook"]), **TABLE.figure_stores(key, wildcard_values(wildcards))}

    return inputs


figure_parameters, figure_options = TABLE.figure_parameters, TABLE.figure_options
figure_config_keys, figure_wildcards = TABLE.figure_config_keys, TABLE.figure_wildcards
maps_request, maps_source, maps_config_keys = TABLE.maps_request, TABLE.maps_source, TABLE.maps_config_keys
