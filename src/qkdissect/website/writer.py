"""Writing the atlas: a folder that opens from ``file://`` with no server and no network.

::

    atlas/index.html                  the page (loads data/app.css, data/app.js, data/index.js)
    atlas/atlas.provenance.json       what it was made from (audited like a figure's), and .html for readers
    atlas/data/index.js               the models
    atlas/data/<model>/model.js       every mode's singular value, cosine, block and null flag; heads' cosines;
                                      each mode's ablation effect (a model with an ablation store)
    atlas/data/<model>/heads/L<l>-H<h>.js   one head's slots: top images, scores, query and key maps (and each top
                                            image's own ablation effect)
    atlas/data/<model>/thumbs/<i>.jpg       each top image once

Data files are scripts (``QKAtlas.model(...)``, ``QKAtlas.head(...)``) that the page adds when it needs them: a
browser reads no JSON from ``file://``, but runs scripts. A head's page loads its own file only, so a ViT-H/14
atlas opens as fast as a ViT-S one. The whole folder is written beside its place and renamed into it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import QKDissectError
from ..provenance.atlas import DATA, INDEX, SIDECAR
from ..provenance.figures import figure_record, write_sidecar
from ..util.atomic import atomic_path
from .payload import AtlasStores, ModelData, head_payload, model_summary, open_model, slot_effects

#: the page's own files (package data), copied into every atlas
STATIC = {"index.html": INDEX, "app.js": f"{DATA}/app.js", "app.css": f"{DATA}/app.css"}
#: JPEG quality of the thumbnails
QUALITY = 85


def _script(call: str, *args: Any) -> str:
    """A data file: one call of the page's loader with JSON arguments."""
    return f"QKAtlas.{call}({', '.join(json.dumps(a, allow_nan=False, separators=(',', ':')) for a in args)});\n"


def _model_files(folder: Path, m: ModelData, label: str | None) -> dict[str, Any]:
    """A model's summary, head files and thumbnails under ``folder``; returns its summary."""
    summary = model_summary(m, label)
    (folder / "heads").mkdir(parents=True)
    (folder / "thumbs").mkdir()
    (folder / "model.js").write_text(_script("model", summary))
    effects = slot_effects(m.maps, m.ablation) if m.ablation is not None else None
    for layer in range(summary["layers"]):
        names = ["slot_image", "top_score", "q_code", "k_code", "key_top_on_prefix"]
        loaded = m.maps[[n for n in names if n in m.maps]].isel(layer=layer).load()
        for head in range(summary["heads"]):
            mine = effects[layer] if effects is not None else None
            text = _script("head", m.key, head_payload(loaded, layer, head, mine))
            (folder / "heads" / f"L{layer}-H{head}.js").write_text(text)
    for i, thumb in enumerate(np.asarray(m.maps.thumbnail.values, dtype=np.uint8)):
        Image.fromarray(thumb).save(folder / "thumbs" / f"{i}.jpg", "JPEG", quality=QUALITY)
    return summary


def write_atlas(models: Sequence[AtlasStores], output: str | Path, labels: Mapping[str, str] | None = None) -> Path:
    """Write the atlas of ``models`` (each: its modes, scores and atlas maps stores) into the folder ``output``
    (replacing it, atomically), with its provenance; returns its ``index.html``. ``labels``: the name shown for a
    model (by its key; the config's ``label``), else its key."""
    if not models:
        raise QKDissectError("the atlas needs at least one model's stores (modes, scores and atlas maps)")
    data = [open_model(s) for s in models]
    keys = [m.key for m in data]
    if len(set(keys)) < len(keys):
        raise QKDissectError(
            f"the atlas shows each model once; given twice: {sorted({k for k in keys if keys.count(k) > 1})}"
        )
    labels = dict(labels or {})
    unknown = sorted(set(labels) - set(keys))
    if unknown:
        shown = ", ".join(keys)
        raise QKDissectError(f"atlas labels for models it does not show: {', '.join(unknown)} (it shows {shown})")
    inputs = [p for s in models for p in s.paths()]
    params: dict[str, Any] = {"models": keys, "thumbnail_quality": QUALITY}
    if labels:
        params["labels"] = labels
    record = figure_record("mode atlas", params, inputs, kind="atlas")
    out = Path(output)
    with atomic_path(out) as tmp:
        (tmp / DATA).mkdir(parents=True)
        for name, target in STATIC.items():
            (tmp / target).write_text(resources.files("qkdissect.website").joinpath("static", name).read_text())
        summaries = [_model_files(tmp / DATA / m.key, m, labels.get(m.key)) for m in data]
        index = {"models": [{k: s[k] for k in ("key", "label", "layers", "heads", "modes")} for s in summaries]}
        (tmp / DATA / "index.js").write_text(_script("index", index))
        write_sidecar(tmp / SIDECAR, record, [tmp / INDEX, tmp / DATA], atomic=False)
    return out / INDEX
