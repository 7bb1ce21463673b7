"""Where the workflow's stores and figures live, relative to its working directory (``results/...``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: what the mode atlas rule makes (rules/atlas.smk): its page, data and provenance
ATLAS_OUTPUTS = [
    "results/atlas/index.html",
    "results/atlas/data",
    "results/atlas/atlas.provenance.json",
    "results/atlas/atlas.provenance.html",
]


def names_pattern(names: Iterable[str]) -> str:
    """A wildcard pattern matching exactly these names (none: a pattern that matches nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def folding_store(model: str, folding: str) -> str:
    """The scores store of a model's raw (the paper's) or LayerNorm-folded modes."""
    return f"results/scores/{model}.zarr" if folding == "raw" else f"results/scores_ln/{folding}/{model}.zarr"


def projections_store(model: str, images: str) -> str:
    """A model's projections on the image set ``images``."""
    return f"results/projections/{model}/{images}.zarr"


def ablation_store(model: str, images: str) -> str:
    """A model's ablation effects on the image set ``images``."""
    return f"results/ablation/{model}/{images}.zarr"


def text_store(model: str, corpus: str) -> str:
    """A text model's projections on the corpus ``corpus``."""
    return f"results/text_projections/{model}/{corpus}.zarr"


def atlas_maps_store(model: str, images: str) -> str:
    return f"results/atlas_maps/{model}/{images}.zarr"


def model_store(kind: str, model: str) -> str:
    """A store made per model: modes, scores, offsets, spectrum, modes_core; modes_folded(_centred) under modes_ln/."""
    folded = {"modes_folded": "folded", "modes_folded_centred": "folded-centred"}
    if kind in folded:
        return f"results/modes_ln/{folded[kind]}/{model}.zarr"
    return f"results/{kind}/{model}.zarr"


def weights_manifest(model: str) -> str:
    return f"results/weights/{model}.json"


def figure_outputs(stem: str) -> list[str]:
    """The files drawn for one figure (PNG, PDF, provenance JSON and HTML, executed notebook)."""
    return [
        f"results/figures/{stem}.png",
        f"results/figures/{stem}.pdf",
        f"results/figures/{stem}.provenance.json",
        f"results/figures/{stem}.provenance.html",
        f"results/notebooks/{stem}.ipynb",
    ]


def store_path(kind: str, model: str, images: str, wildcards: Mapping[str, str], stem: str, index: int) -> str:
    """Where the store of one kind for one row of a figure lives (``images``: the projected image set;
    ``wildcards``: the figure's, e.g. its mask dataset; ``stem``, ``index``: the figure and the row)."""
    paths = {
        "modes": lambda: model_store("modes", model),
        "scores": lambda: model_store("scores", model),
        "scores_folded": lambda: folding_store(model, "folded"),
        "scores_folded_centred": lambda: folding_store(model, "folded-centred"),
        "projections": lambda: projections_store(model, images),
        "logits": lambda: f"results/logits/{model}/{images}.zarr",
        "preference": lambda: f"results/preference/{model}/{wildcards['dataset']}.zarr",
        "same_object": lambda: f"results/same_object/{model}/{wildcards['dataset']}.zarr",
        "maps": lambda: f"results/maps/{stem}/{index}-{model}.zarr",
        "offsets": lambda: model_store("offsets", model),
        "spectrum": lambda: model_store("spectrum", model),
        "ablation": lambda: ablation_store(model, images),
    }
    return paths[kind]()
