"""The data a workflow's jobs read: its image set, mask datasets and text corpus, each with the stores made from
it, for :func:`qkdissect.config_check.source_problems` (checked when the config is read, before any job resolves
or loads a model)."""

from __future__ import annotations

from ..config_check import Source
from . import paths
from .plan import Plan


def data_sources(plan: Plan) -> list[Source]:
    """(where in the config, kind, source, the stores made from it) of every data source a job reads."""
    config, fig = plan.config, plan.figures
    images = config["projections"]["images"]
    readers = sorted(set(plan.projection_models) | set(plan.atlas_models))
    stores = [paths.projections_store(m, images) for m in readers]
    stores += [f"results/logits/{m}/{images}.zarr" for m in plan.figure_models("logits")]
    found: list[Source] = []
    if stores and images in config["images"]:
        found.append((f"images.{images}.source", "images", config["images"][images]["source"], stores))
    for key, store in (("fig2", "preference"), ("fig6", "same_object")):
        for d in fig[key]["datasets"] if fig[key] else []:
            made = [f"results/{store}/{m}/{d}.zarr" for m in plan.mask_figure_models(key)]
            found.append((f"mask_datasets.{d}.source", "masks", config["mask_datasets"][d]["source"], made))
    rows, corpus = plan.text_mode_rows(), config["projections"]["texts"]
    if rows and corpus in config["texts"]:
        made = [paths.text_store(r["model"], corpus) for r in rows]
        found.append((f"texts.{corpus}.source", "texts", config["texts"][corpus]["source"], made))
    return found
