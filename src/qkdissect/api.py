"""The Python API: the same numbers as the command line and the workflow, in a few lines of Jupyter.

>>> import qkdissect as qk
>>> m = qk.modes("timm:vit_small_patch14_dinov2@dinov2.safetensors?img_size=224")   # or a model object
>>> s = qk.scores(m)
>>> s.layer_weighted.plot()
>>> p = qk.project(model, m, "folder:photos")                                         # top images per mode
>>> x = qk.preprocess(model)("photo.jpg")                                             # the exact model input
>>> qk.atlas("results")                                  # every mode of a results folder, in a web page
>>> a = qk.ablate(model, m, "skimage", projections=p)    # what removing each mode changes

``model`` is everywhere a spec string (``qkdissect models`` lists the known names) or a timm / Hugging Face
model object already in memory. Heavy libraries (torch, timm, transformers) are imported on first use, so
``import qkdissect`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .options import DType, Folding, ImageScore, Offset, TokenSource, dedupe_distance, default

if TYPE_CHECKING:
    import xarray as xr
    from torch import nn

    from .data.geometry import Preprocess


def modes(
    model: str | nn.Module,
    *,
    device: str = default("device"),
    dtype: DType = default("dtype"),
    block_rtol: float = default("block_rtol"),
    folding: Folding = default("folding"),
    name: str | None = None,
    output: str | Path | None = None,
    offset: Offset | None = None,
) -> xr.Dataset:
    """The singular modes (U, S, V) of every head's W_q^T W_k, as a modes Dataset with its provenance (also
    written to the store ``output`` when given). For a rotary (RoPE) model, ``offset`` d (the query's position
    minus the key's) gives the modes of W_q^T R(-d) W_k, the interaction of tokens d apart (default: 0): a number
    of tokens for a language model, ``(dy, dx)`` patches (rows, columns) for a 2-D RoPE vision transformer;
    ``"mean"`` (image model: every pair of patches of its grid) or ``"mean:N"`` (language model: the causal pairs
    of N tokens) the content core, the interaction averaged over the offsets of those pairs."""
    from .passes.weights import compute_modes

    return compute_modes(
        model, output, device=device, dtype=dtype, block_rtol=block_rtol, folding=folding, model_key=name,
        offset=offset,
    )  # fmt: skip


def scores(
    modes: xr.Dataset | str | Path,
    *,
    released_code: bool = False,
    level: float = default("null_level"),
    null_rtol: float = default("null_rtol"),
    output: str | Path | None = None,
) -> xr.Dataset:
    """Per-mode cosines, per-head and per-layer (weighted) averages and the null interval of a modes Dataset (or
    of the modes store at a path); the plain mean leaves out modes below ``null_rtol`` of their head's largest
    singular value (``layer_mean_all`` keeps every mode)."""
    from .passes.scores import compute_scores

    return compute_scores(modes, output, released_code=released_code, level=level, null_rtol=null_rtol)


def project(
    model: str | nn.Module,
    modes: xr.Dataset | str | Path,
    images: str,
    *,
    output: str | Path | None = None,
    tokens: TokenSource = default("tokens"),
    batch_size: int = default("batch_size"),
    top_k: int = default("top_k"),
    device: str = default("device"),
    limit: int | None = None,
    workers: int | None = 0,
    score: ImageScore = default("score"),
    dedupe: bool | int | None = default("dedupe"),
    progress: bool = True,
    shard: str | None = None,
) -> xr.Dataset:
    """Project every image of ``images`` (``skimage``, ``folder:/path``, ``imagenet-val:/path``,
    ``imagenet-hf[:/hub-cache][@revision]``) onto all modes: per-image maxima and minima of the query and key maps,
    the top-k images per (layer, head, mode, sign) by the image ``score`` (``released`` or ``clipped``), the
    anisotropy sums. ``dedupe``: drop exact and near-duplicate images first (True: within the default distance of
    the perceptual hash, or that many bits). Streamed to the store ``output`` (and opened from it); without
    ``output`` the result is loaded into memory (fine for thousands of images; give ``output`` for ImageNet).
    ``shard="K/N"``: only shard K of N of the set (whole batches), a store that :func:`merge_shards` merges with
    the other N - 1 into the one this call without ``shard`` writes."""
    from .passes.projections import compute_projections
    from .passes.shards import Shard

    return compute_projections(
        model, modes, images, output, tokens=tokens, batch_size=batch_size, top_k=top_k, device=device,
        limit=limit, workers=workers, score=score, dedupe=dedupe_distance(dedupe), progress=progress,
        shard=Shard.parse(shard) if shard else None,
    )  # fmt: skip


def merge_shards(shards: list[str | Path], output: str | Path) -> xr.Dataset:
    """The N shard stores of a projection or an atlas pass (``shard="K/N"``), in order, merged into the store one
    job writes (at ``output``)."""
    from .passes.shards import merge_shards as merge

    return merge(shards, output)


def atlas_maps(
    model: str | nn.Module,
    modes: xr.Dataset | str | Path,
    projections: xr.Dataset | str | Path,
    *,
    output: str | Path | None = None,
    grid: int = default("atlas_grid"),
    thumbnail: int = default("thumbnail"),
    batch_size: int = default("atlas_batch_size"),
    device: str = default("device"),
    name: str | None = None,
    progress: bool = True,
    shard: str | None = None,
) -> xr.Dataset:
    """The atlas pass: the query and key maps of every mode's top images in ``projections`` (quantised to 8 bits,
    at most ``grid`` cells a side) and each of those images once as a thumbnail, for :func:`atlas`. ``shard``:
    ``"K/N"`` of the top images, merged by :func:`merge_shards`."""
    from .passes.atlas import compute_atlas_maps
    from .passes.shards import Shard

    return compute_atlas_maps(
        model, modes, projections, output, grid=grid, thumbnail=thumbnail, batch_size=batch_size, device=device,
        model_key=name, progress=progress, shard=Shard.parse(shard) if shard else None,
    )  # fmt: skip


def atlas(
    results: str | Path = "results",
    *,
    models: list[str] | None = None,
    images: str | None = None,
    output: str | Path | None = None,
    compute: bool = True,
    device: str = default("device"),
    progress: bool = True,
    labels: dict[str, str] | None = None,
) -> Path:
    """The mode atlas of a results folder (``RESULTS/atlas/index.html``, opens from ``file://``): every mode of
    every projected image model (or of ``models``). An atlas maps store that is missing, or older than its
    projections store, is made first (the model is loaded; ``compute=False`` refuses instead). ``labels``: the
    name the page shows for a model, by its key (default: the key). Returns the page."""
    from .errors import QKDissectError
    from .website import write_atlas
    from .website.results import find_models

    found = find_models(results, models, images)
    for f in found:
        if f.maps_current():
            continue
        if not compute:
            raise QKDissectError(f"{f.stores.maps} is missing or older than {f.projections}: make it first")
        from .passes.atlas import compute_atlas_maps

        compute_atlas_maps(f.spec, f.stores.modes, f.projections, f.stores.maps, device=device, model_key=f.key,
                           manifest=f.manifest, progress=progress)  # fmt: skip
    return write_atlas([f.stores for f in found], output or Path(results) / "atlas", labels)


def ablate(
    model: str | nn.Module,
    modes: xr.Dataset | str | Path,
    images: str,
    *,
    select: str | list[Any] = "auto",
    projections: xr.Dataset | str | Path | None = None,
    mean: bool = False,
    outputs: bool = True,
    output: str | Path | None = None,
    batch_size: int = default("ablation_batch_size"),
    device: str = default("device"),
    limit: int | None = None,
    workers: int | None = 0,
    dedupe: bool | int | None = default("dedupe"),
    progress: bool = True,
) -> xr.Dataset:
    """What removing a mode does: for every mode ``select`` names (``"auto"``: the 4 strongest of every head,
    ``"top:N"``, ``"all"``, or modes ``(layer, head, mode)``) and every image, the mode's term is taken out of its
    head's attention logits (``mean``: replaced by its mean over the image set); the store has the head's attention
    change and the model's output change per image and averaged over the set (``subset="all"``) and over the mode's
    top images in ``projections`` (``subset="top"``). ``outputs=False``: the head's attention change only."""
    from .passes.ablation import compute_ablation

    return compute_ablation(
        model, modes, images, output, select=select, projections=projections, mean=mean, outputs=outputs,
        batch_size=batch_size, device=device, workers=workers, limit=limit, dedupe=dedupe_distance(dedupe),
        progress=progress,
    )  # fmt: skip


def open_store(path: str | Path, kind: str | None = None) -> xr.Dataset:
    """Open any qkdissect store (modes, scores, projections, maps, ...); ``kind`` checks which it is."""
    from .stores import open_store as _open

    return _open(path, kind)


def preprocess(model: str | nn.Module | Any) -> Preprocess:
    """The exact image -> tensor transform every pass uses for ``model`` (its own resize, centre crop and
    normalisation): call it on a PIL image, an array or a file path."""
    from .models import load_model, preprocess_for
    from .models.loading import in_memory
    from .models.sources.base import LoadedModel

    if isinstance(model, LoadedModel):
        return preprocess_for(model)
    from torch import nn

    return preprocess_for(in_memory(model) if isinstance(model, nn.Module) else load_model(model))
