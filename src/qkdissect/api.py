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

import inspect
from collections.abc import Callable
from dataclasses import MISSING, fields
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .options import default
from .requests import (
    AblationRequest,
    AtlasMapsRequest,
    ModelContext,
    ModesRequest,
    ProjectRequest,
    Request,
    ScoresRequest,
)

if TYPE_CHECKING:
    import xarray as xr
    from torch import nn

    from .data.geometry import Preprocess

F = TypeVar("F", bound=Callable[..., Any])


def run(request: Request) -> Any:
    """Run the pass a request (:mod:`qkdissect.requests`) asks for: what every function below and every command
    of the command line does."""
    module, function = request.RUNS.split(":")
    return getattr(import_module(f"{__package__}.passes.{module}"), function)(request)


def takes(request: type[Request]) -> Callable[[F], F]:
    """A function of the API whose ``**options`` are the fields of ``request`` (with the model's ``device``,
    ``name`` and ``manifest``): its signature, as ``help()`` and Jupyter show it, lists them with their defaults."""

    def wrap(fn: F) -> F:
        own = [p for p in inspect.signature(fn).parameters.values() if p.kind != p.VAR_KEYWORD]
        taken = {p.name for p in own}
        extra = [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
            for f in [*fields(request), *(fields(ModelContext)[1:] if "model" in request.names() else [])]
            if f.name not in taken and f.default is not MISSING
        ]
        fn.__signature__ = inspect.signature(fn).replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
        return fn

    return wrap


@takes(ModesRequest)
def modes(model: str | nn.Module, *, output: str | Path | None = None, **options: Any) -> xr.Dataset:
    """The singular modes (U, S, V) of every head's W_q^T W_k, as a modes Dataset with its provenance (also
    written to the store ``output`` when given). For a rotary (RoPE) model, ``offset`` d (the query's position
    minus the key's) gives the modes of W_q^T R(-d) W_k, the interaction of tokens d apart (default: 0): a number
    of tokens for a language model, ``(dy, dx)`` patches (rows, columns) for a 2-D RoPE vision transformer;
    ``"mean"`` (image model: every pair of patches of its grid) or ``"mean:N"`` (language model: the causal pairs
    of N tokens) the content core, the interaction averaged over the offsets of those pairs. Options: ``device``,
    ``dtype``, ``block_rtol``, ``folding``, ``offset``, ``name`` (the model's name in the store)."""
    return run(ModesRequest.build(model, output, **options))  # type: ignore[no-any-return]


@takes(ScoresRequest)
def scores(modes: xr.Dataset | str | Path, *, output: str | Path | None = None, **options: Any) -> xr.Dataset:
    """Per-mode cosines, per-head and per-layer (weighted) averages and the null interval of a modes Dataset (or
    of the modes store at a path); the plain mean leaves out modes below ``null_rtol`` of their head's largest
    singular value (``layer_mean_all`` keeps every mode). Options: ``released_code``, ``level``, ``null_rtol``."""
    return run(ScoresRequest.build(modes, output, **options))  # type: ignore[no-any-return]


@takes(ProjectRequest)
def project(
    model: str | nn.Module,
    modes: xr.Dataset | str | Path,
    images: str,
    *,
    output: str | Path | None = None,
    workers: int | None = 0,
    **options: Any,
) -> xr.Dataset:
    """Project every image of ``images`` (``skimage``, ``folder:/path``, ``imagenet-val:/path``,
    ``imagenet-hf[:/hub-cache][@revision]``) onto all modes: per-image maxima and minima of the query and key maps,
    the top-k images per (layer, head, mode, sign) by the image ``score`` (``released`` or ``clipped``), the
    anisotropy sums. ``dedupe``: drop exact and near-duplicate images first (True: within the default distance of
    the perceptual hash, or that many bits). Streamed to the store ``output`` (and opened from it); without
    ``output`` the result is loaded into memory (fine for thousands of images; give ``output`` for ImageNet).
    ``shard="K/N"``: only shard K of N of the set (whole batches), a store that :func:`merge_shards` merges with
    the other N - 1 into the one this call without ``shard`` writes."""
    return run(ProjectRequest.build(model, modes, images, output, workers=workers, **options))  # type: ignore[no-any-return]


def merge_shards(shards: list[str | Path], output: str | Path) -> xr.Dataset:
    """The N shard stores of a projection or an atlas pass (``shard="K/N"``), in order, merged into the store one
    job writes (at ``output``)."""
    from .passes.shards import merge_shards as merge

    return merge(shards, output)


@takes(AtlasMapsRequest)
def atlas_maps(
    model: str | nn.Module,
    modes: xr.Dataset | str | Path,
    projections: xr.Dataset | str | Path,
    *,
    output: str | Path | None = None,
    **options: Any,
) -> xr.Dataset:
    """The atlas pass: the query and key maps of every mode's top images in ``projections`` (quantised to 8 bits,
    at most ``grid`` cells a side) and each of those images once as a thumbnail, for :func:`atlas`. ``shard``:
    ``"K/N"`` of the top images, merged by :func:`merge_shards`."""
    return run(AtlasMapsRequest.build(model, modes, projections, output, **options))  # type: ignore[no-any-return]


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
        model = ModelContext(f.spec, device, f.key, f.manifest)
        run(AtlasMapsRequest(model, f.stores.modes, f.projections, f.stores.maps, progress=progress))
    return write_atlas([f.stores for f in found], output or Path(results) / "atlas", labels)


@takes(AblationRequest)
def ablate(
    model: str | nn.Module,
    modes: xr.Dataset | str | Path,
    images: str,
    *,
    output: str | Path | None = None,
    workers: int | None = 0,
    **options: Any,
) -> xr.Dataset:
    """What removing a mode does: for every mode ``select`` names (``"auto"``: the 4 strongest of every head,
    ``"top:N"``, ``"all"``, or modes ``(layer, head, mode)``) and every image, the mode's term is taken out of its
    head's attention logits (``mean``: replaced by its mean over the image set); the store has the head's attention
    change and the model's output change per image and averaged over the set (``subset="all"``) and over the mode's
    top images in ``projections`` (``subset="top"``). ``outputs=False``: the head's attention change only."""
    return run(AblationRequest.build(model, modes, images, output, workers=workers, **options))  # type: ignore[no-any-return]


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
