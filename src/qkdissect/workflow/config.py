"""A workflow config before any job runs: the defaults laid under a user's config where they depend on what it
gives, every check that names a wrong entry at once, the keys that lead to no job, and the environment the rules'
commands read.

A user's config (``--configfile``) is laid over the schema's defaults (workflow/schemas/config.schema.yaml, listed
in config/README.md): it holds only what differs. Two defaults follow from what it gives:

- ``projections.images`` and ``projections.texts``: the first image set under ``images``, the first corpus under
  ``texts``;
- a config that gives image sets (``images`` or ``projections.images``) and none of the image figures' keys
  (:data:`IMAGE_FIGURE_KEYS`) gets them for every image model with modes picked automatically (Fig. 1, Fig. 4,
  S4, and Fig. 5 of the first image model on the first valid image); the atlas, 'all' by default, then shows every
  projected model.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..catalogue import KNOWN_MODELS
from ..config_check import config_problems, image_problems
from ..data.labels import is_class_ref, parse_class_ref
from ..errors import QKDissectError
from ..provenance.records import export_config_files, export_workflow_checkout
from .plan import ConfigError, Plan, modality
from .targets import FigureTable

#: the figures of real images: a config that gives image sets and none of these gets the image figures
IMAGE_FIGURE_KEYS = ("fig1", "fig4", "fig5", "galleries", "s17", "s4", "logits")


def fill_in_defaults(config: dict[str, Any], given: Mapping[str, Any]) -> list[str]:
    """Lay the defaults that depend on what the user's config ``given`` holds under ``config`` (the schema's
    defaults already filled in), in place; returns the keys filled in ('figures.fig1', ...)."""
    filled = []
    projections = given.get("projections") or {}
    for key in ("images", "texts"):  # the first image set, the first corpus
        if key not in projections and config[key]:
            config["projections"][key] = next(iter(config[key]))
            filled.append(f"projections.{key}")
    gives_images = "images" in given or "images" in projections
    config["projections"].setdefault("images", "")  # (no image set at all: a figure that needs one is refused)
    config["projections"].setdefault("texts", "")
    figures = given.get("figures") or {}
    image_models = [m for m in config["models"] if modality(config, m) == "image"]
    if gives_images and image_models and not any(k in figures for k in IMAGE_FIGURE_KEYS):
        config["figures"].update(
            fig1=[{"model": m, "modes": "auto"} for m in image_models],
            fig4=[{"model": m, "modes": "auto"} for m in image_models],
            fig5={"model": image_models[0], "image": "auto", "layer_heads": "auto"},
            s4="all",
        )
        filled += ["figures.fig1", "figures.fig4", "figures.fig5", "figures.s4"]
    return filled


def check_config(plan: Plan) -> None:
    """Every model a figure names under models and of the right modality, every dataset and corpus a figure or
    projection names configured, every mode, layer and image entry within its model and image set: raises
    :class:`ConfigError` naming them."""
    config, fig = plan.config, plan.figures
    _check_models(plan)
    named = [("fig1", r["model"]) for r in fig["fig1"]] + [("fig4", r["model"]) for r in fig["fig4"]]
    named += [(f"galleries.{g}", r["model"]) for g, rows in fig["galleries"].items() for r in rows]
    named += [(f"s17.{n}", e["model"]) for n, e in fig["s17"].items()]
    named += [("fig5", fig["fig5"]["model"])] if fig["fig5"] else []
    named += [("s4", m) for m in (fig["s4"] if isinstance(fig["s4"], list) else [])]
    named += [("logits", m) for m in (fig["logits"] if isinstance(fig["logits"], list) else [])]
    named += [(f"{k}.models", m) for k in ("fig2", "fig6") for m in plan.mask_figure_models(k)]
    unknown = sorted({f"figures.{k}: {m}" for k, m in named if m not in plan.models})
    if unknown:
        raise ConfigError(f"config names models that are not under models ({plan.models}): {unknown}")
    text = sorted({f"figures.{k}: {m}" for k, m in named if m in plan.text_models})
    if text:
        raise ConfigError(
            f"config: {text} name text models in image figures; text models have Fig. 3, S1, S2, ln_folding and "
            "text_modes (set `modality: image` under models if a model is an image model)"
        )
    _check_text(plan)
    for key in ("fig2", "fig6"):
        if fig[key]:
            bad = [d for d in fig[key]["datasets"] if d not in config["mask_datasets"]]
            if bad:  # (their models were checked with the other figures' above)
                raise ConfigError(
                    f"config: figures.{key} names mask datasets {bad} not under mask_datasets "
                    f"({list(config['mask_datasets'])})"
                )
    bad = [m for m in plan.atlas_models if m not in plan.image_models]
    if bad:
        raise ConfigError(f"config: atlas names {bad}, which are not image models under models: {plan.image_models}")
    if (plan.projection_models or plan.atlas_models) and config["projections"]["images"] not in config["images"]:
        raise ConfigError(
            f"config: projections.images is {config['projections']['images']!r}, which is not one of the image "
            f"sets under images: {list(config['images'])}"
        )
    problems = check_images(plan) + config_problems(dict(config), plan.known_shape)
    if problems:
        raise ConfigError(
            f"config: {len(problems)} entries do not fit their models or image set (0-based): " + "; ".join(problems)
        )


def _check_models(plan: Plan) -> None:
    """Every model known or given a spec; the models of the per-model figures under models."""
    for name in plan.models:
        if not plan.entry(name).get("spec") and name not in KNOWN_MODELS:
            close = difflib.get_close_matches(name, list(KNOWN_MODELS), n=3)
            raise ConfigError(
                f"config: model {name!r} is not a known model and has no spec. "
                + (f"Did you mean {', '.join(close)}? " if close else "")
                + "Known models: `qkdissect models`; otherwise give it one, e.g. "
                f"{name}: {{spec: 'timm:vit_base_patch16_224@/path/to/weights.safetensors'}}"
            )
    for key in ("fig3", "s1", "s2", "ln_folding", "logits", "ablation"):
        wanted = plan.figures[key]
        if isinstance(wanted, list):
            unknown = [m for m in wanted if m not in plan.models]
            if unknown:
                raise ConfigError(f"config: figures.{key} names {unknown}, which are not under models: {plan.models}")


def _check_text(plan: Plan) -> None:
    """A `text` entry only for text models; text_modes of text models on a configured corpus."""
    config = plan.config
    bad = [m for m in plan.models if plan.entry(m).get("text") and m not in plan.text_models]
    if bad:
        raise ConfigError(
            f"config: models {bad} have a `text` entry (passages, max_tokens of the text pass) but are image models; "
            "leave it out, or set `modality: text` if they are text models"
        )
    rows = plan.text_mode_rows()
    bad = sorted({r["model"] for r in rows if r["model"] not in plan.text_models})
    if bad:
        raise ConfigError(
            f"config: figures.text_modes names {bad}, which are not text models under models (text models: "
            f"{plan.text_models}; give a custom one `modality: text`)"
        )
    if rows and config["projections"]["texts"] not in config["texts"]:
        raise ConfigError(
            f"config: projections.texts is {config['projections']['texts']!r}, which is not one of the corpora "
            f"under texts: {list(config['texts'])}"
        )


def check_images(plan: Plan) -> list[str]:
    """The one image of fig5 and each s17 entry: `auto`, an image id, or a class reference (`class:n02085620`,
    `class:207`, `class:golden retriever`, optionally `#k`). A class is checked here against the 1000 ImageNet
    classes and against an image set that can have labels (raises); the pass picks the image among the projected
    ones. Returns the ids that are not images of the projected set, one line each."""
    config, fig = plan.config, plan.figures
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
            raise ConfigError(f"config: figures.{key}.image: {e}") from None
        if source == "skimage":
            raise ConfigError(
                f"config: figures.{key}.image is {image!r}, but the projected image set {set_name!r} (skimage) has "
                "no class labels: project an ImageNet set (imagenet-hf, imagenet-val:/path) or give the image's id"
            )
    s3 = fig["s3"]
    if s3:
        unknown = [s3[k] for k in ("encoder", "predictor") if s3[k] not in plan.models]
        if unknown:
            raise ConfigError(f"config: figures.s3 names {unknown}, which are not under models: {plan.models}")
    # an image given by its id: one of the projected set (listed, never decoded: no torch, no model)
    refs = [(f"figures.{key}", image) for key, image in images]
    return image_problems(refs, set_name, source, config["images"][set_name]["limit"]) if source else []


def unused_keys(table: FigureTable, given: Mapping[str, Any]) -> list[str]:
    """The keys of the user's config ``given`` that lead to no job: a model no figure or atlas draws, an image set
    other than the projected one (or any, when nothing is projected), a corpus no text figure reads, a mask dataset
    no figure names, and projections.images / projections.texts when nothing reads them."""
    plan = table.plan
    targets = table.intermediates()
    images_used = bool(plan.atlas_models) or any(
        p.startswith(("results/projections/", "results/logits/")) for p in targets
    )
    texts_used = any(p.startswith("results/text_projections/") for p in targets)
    datasets = {w["dataset"] for _, w in table.stems.values() if "dataset" in w}
    models = table.figure_models_used() | set(plan.atlas_models) | set(plan.rotary_models)
    out = [f"models.{m}" for m in given.get("models") or {} if m not in models]
    out += [f"images.{n}" for n in given.get("images") or {} if not images_used or n != table.images]
    out += [f"texts.{n}" for n in given.get("texts") or {} if not texts_used or n != table.corpus]
    out += [f"mask_datasets.{n}" for n in given.get("mask_datasets") or {} if n not in datasets]
    projections = given.get("projections") or {}
    out += ["projections.images"] if "images" in projections and not images_used else []
    out += ["projections.texts"] if "texts" in projections and not texts_used else []
    return out


def unused_warning(keys: list[str]) -> str | None:
    """One line naming the keys that lead to no job (None when there are none)."""
    if not keys:
        return None
    return (
        f"qkdissect: warning: config keys that lead to no job: {', '.join(keys)} (an image set feeds the image "
        "figures fig1, fig4, fig5, galleries, s17, s4, logits and the atlas through projections.images; a corpus the "
        "text_modes figures through projections.texts; a mask dataset fig2 and fig6; a model the figures that name it)"
    )


def export_environment(configfiles: Iterable[str | Path], repo: Path | None) -> None:
    """What the rules' commands read from the environment (set in the main process and in every cluster job, which
    reads the workflow again): the config files in force, recorded (with the sections each output depends on) in
    every output's provenance, never in the command text (the same config at another path is the same job); the
    checkout the rules run the package from, whose commit every output records (none for a remote source: the
    installed version is recorded); and that a job's command stops when its shell is killed, its store never
    appearing (also under `nohup snakemake`; see qkdissect.util.lifeline)."""
    export_config_files(configfiles)
    if repo is not None:
        export_workflow_checkout(repo)
    os.environ.setdefault("QKDISSECT_TIE_TO_PARENT", "1")
