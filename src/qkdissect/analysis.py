"""From a model spec to self-describing datasets: modes (U, S, V) and their scores."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from . import scores as sc
from .layernorm import Folding, folded_factors
from .models import LoadedModel, ModelSpec, QKWeights, load_qk
from .modes import DType, degenerate_blocks, device_record, qk_modes, resolve_device
from .provenance import base_record, dependency, items_sha256, tree_sha256, utc_now
from .store import SCHEMA_VERSION, _jsonable, modes_dataset

#: a weights manifest as the analyses take it: the dict, or the path of its JSON file (then recorded as an input)
Manifest = dict[str, Any] | str | Path | None


def weights_dependencies(loaded: LoadedModel, manifest: Manifest) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The manifest (read when given as a path) and the inputs it and the loaded weights file add to an
    artefact's ``dependencies``."""
    from .weights import read_manifest

    deps = []
    if isinstance(manifest, str | Path):
        deps.append(dependency("weights manifest", manifest))
        manifest = read_manifest(manifest)
    if loaded.weights_path is not None:
        deps.append(dependency("weights", loaded.weights_path.resolve(), loaded.weights_sha256))
    return manifest, deps


def weights_checked(
    loaded: LoadedModel, name: str, manifest: Manifest
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """:func:`weights_dependencies`, with the manifest (when there is one) checked against the loaded weights."""
    from .weights import check_manifest

    manifest, deps = weights_dependencies(loaded, manifest)
    if manifest is not None:
        check_manifest(manifest, loaded.weights_sha256, name, loaded.weights_path)
    return manifest, deps


def image_set_dependency(spec: str, limit: int | None, source: Any, digests: list[str | None]) -> dict[str, Any]:
    """An image set as an input: its spec and limit (to list it again) and one digest of its images as read
    (``digests``: the sha256 of each of ``source.items``, as the image pass read it)."""
    pairs = [(it.id, d) for it, d in zip(source.items, digests, strict=True)]
    return {"role": "images", "spec": spec, "limit": limit, "count": len(pairs), "sha256": items_sha256(pairs)}


def modes_of(modes_path: str | Path, loaded: LoadedModel, name: str) -> xr.Dataset:
    """The modes store at ``modes_path``, refused when it was computed from other weights than ``loaded``."""
    from .errors import QKDissectError
    from .store import open_store

    modes = open_store(modes_path, "modes")
    recorded = modes.attrs.get("weights_sha256")
    if recorded and loaded.weights_sha256 and recorded != loaded.weights_sha256:
        raise QKDissectError(
            f"{modes_path} was computed from other weights (sha256 {str(recorded)[:12]}…) than "
            f"{name} has now ({loaded.weights_sha256[:12]}…): recompute the modes"
        )
    return modes


def weights_record(loaded: LoadedModel, qk: QKWeights) -> dict[str, Any]:
    return {
        "spec": str(loaded.spec),
        "origin": loaded.origin,
        "path": str(loaded.weights_path) if loaded.weights_path else None,
        "sha256": loaded.weights_sha256,
        "revision": loaded.revision,
        "model_class": f"{type(loaded.model).__module__}.{type(loaded.model).__name__}",
    }


def compute_modes(
    spec: str | ModelSpec,
    *,
    device: str = "auto",
    dtype: DType = "float64",
    block_rtol: float = 1e-3,
    model_key: str | None = None,
    manifest: Manifest = None,
    folding: Folding = "raw",
) -> xr.Dataset:
    """Load a model, extract its per-head W_q and W_k, and return the modes dataset with provenance.

    ``manifest`` (from :func:`qkdissect.weights.resolve_weights`, or its JSON file) is checked against the weights
    actually loaded and recorded in the provenance. ``folding`` "folded" / "folded-centred" decomposes the
    LayerNorm-aware interaction ``(P) diag(gamma) W_q^T W_k diag(gamma) (P)`` instead of the paper's raw one
    (:mod:`qkdissect.layernorm`)."""
    started = utc_now()
    t0 = time.perf_counter()
    qk, loaded = load_qk(spec)
    manifest, deps = weights_checked(loaded, model_key or str(loaded.spec), manifest)
    t_load = time.perf_counter() - t0
    dev = resolve_device(device)
    t1 = time.perf_counter()
    w_q, w_k = folded_factors(qk, folding)
    modes = qk_modes(w_q, w_k, dtype=dtype, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_svd = time.perf_counter() - t1
    u, s, v = modes.numpy()
    block = degenerate_blocks(s, rtol=block_rtol)
    info = qk.describe()
    record = base_record(
        "modes",
        {"dtype": dtype, "device_requested": device, "block_rtol": block_rtol, "weights_processing": folding},
    )
    record.update(
        {
            "model": {"key": model_key or str(loaded.spec), **info},
            "weights": {**weights_record(loaded, qk), "manifest": manifest},
            "dependencies": deps,
            "device": device_record(device, dev),
            "started": started,
            "finished": utc_now(),
            "timings_s": {"load": round(t_load, 4), "svd": round(t_svd, 6)},
        }
    )
    attrs = {
        "model_id": model_key or str(loaded.spec),
        "spec": str(loaded.spec),
        "adapter": qk.adapter,
        "d_model": qk.d_model,
        "d_head": qk.d_head,
        "n_layers": qk.n_layers,
        "n_heads": qk.n_heads,
        "n_prefix_tokens": qk.layout.n_prefix,
        "grid": list(qk.layout.grid) if qk.layout.grid else None,
        "weights_sha256": loaded.weights_sha256,
        "weights_revision": loaded.revision,
        "dtype": dtype,
        "device": str(dev),
        "block_rtol": block_rtol,
        "folding": folding,
        "notes": qk.notes,
        "provenance": record,
    }
    return modes_dataset(u, s, v, block, attrs)


def compute_scores(
    modes: xr.Dataset,
    *,
    released_code: bool = False,
    level: float = 0.95,
    modes_path: str | Path | None = None,
) -> xr.Dataset:
    """All section-1.3 scores of a modes dataset, with the exact null interval in attrs (``modes_path``, when
    given, is recorded with its digest)."""
    u, s, v = (np.asarray(modes[n].values, dtype=np.float64) for n in ("U", "S", "V"))
    r = sc.score_modes(u, s, v, released_code=released_code, level=level)
    coords = {k: modes.coords[k].values for k in ("layer", "head", "mode")}
    coords["depth"] = ("layer", r.depth)  # type: ignore[assignment]
    weighted_desc = "singular-value-weighted mean of per-mode cosines" + (
        " / d_head (released code, bug B1)" if released_code else ""
    )
    ds = xr.Dataset(
        {
            "cosine": (("layer", "head", "mode"), r.cosine, {"description": "u_n . v_n"}),
            "head_mean": (("layer", "head"), r.head_mean, {"description": "mean of per-mode cosines"}),
            "head_weighted": (("layer", "head"), r.head_weighted, {"description": weighted_desc}),
            "layer_mean": (("layer",), r.layer_mean, {"description": "mean over heads of head_mean"}),
            "layer_weighted": (("layer",), r.layer_weighted, {"description": "mean over heads of head_weighted"}),
        },
        coords=coords,
    )
    record = base_record("scores", {"released_code": released_code, "null_level": level})
    record.update(
        {
            "inputs": {
                "modes": {
                    "model_id": modes.attrs.get("model_id"),
                    "provenance_finished": modes.attrs.get("provenance", {}).get("finished"),
                    **({"path": str(modes_path), "sha256": tree_sha256(modes_path)} if modes_path else {}),
                }
            },
            "weights": modes.attrs.get("provenance", {}).get("weights"),
            "dependencies": [dependency("modes store", modes_path)] if modes_path else [],
            "finished": utc_now(),
        }
    )
    ds.attrs.update(
        _jsonable(
            {
                "qkdissect_schema": f"scores/v{SCHEMA_VERSION}",
                "model_id": modes.attrs.get("model_id"),
                "folding": modes.attrs.get("folding", "raw"),
                "d_model": int(u.shape[-2]),
                "d_head": modes.attrs.get("d_head"),
                "released_code": released_code,
                "null_level": level,
                "null_low": r.null_low,
                "null_high": r.null_high,
                "null_definition": "central interval of the cosine of two independent isotropic vectors in "
                "R^d_model: (t+1)/2 ~ Beta((d-1)/2, (d-1)/2), exact quantiles",
                "provenance": record,
            }
        )
    )
    return ds


@dataclass
class ImageModel:
    """A loaded image model ready for a pass over images: its weights, preprocessing, device and patch grid."""

    qk: QKWeights
    loaded: LoadedModel
    name: str
    preprocess: Any
    device: torch.device
    model: torch.nn.Module
    grid: tuple[int, int]


def load_image_model(spec: str | ModelSpec, device: str, model_key: str | None) -> ImageModel:
    """Load a model with its own preprocessing onto ``device``; image passes need a patch grid."""
    from .images import preprocess_for

    qk, loaded = load_qk(spec)
    name = model_key or str(loaded.spec)
    if qk.layout.grid is None:
        raise ValueError(f"{name} has no patch grid: image passes need an image model")
    dev = resolve_device(device)
    return ImageModel(qk, loaded, name, preprocess_for(loaded), dev, loaded.model.to(dev).eval(), qk.layout.grid)


def _rows_of(model: Any, qk: QKWeights, x: torch.Tensor, rows: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """The preference pass's attention rows of the images ``i`` of a batch (one piece for AdaptiveBatch)."""
    from .preference import attention_rows

    return attention_rows(model, qk, x[i], rows[i])


def mask_dataset_dependency(data: Any, spec: str, limit: int | None) -> dict[str, Any]:
    """A mask dataset as an input: its spec and limit (to list it again) and one digest of its items' files."""
    return {
        "role": "mask dataset",
        "spec": spec,
        "limit": limit,
        "count": len(data),
        "sha256": items_sha256((it.id, it.sha256()) for it in data.items),
    }


def compute_projections(
    spec: str | ModelSpec,
    modes_path: str | Path,
    images: str,
    output: str | Path,
    *,
    tokens: str = "post-norm",
    batch_size: int = 32,
    top_k: int = 8,
    device: str = "auto",
    workers: int | None = None,
    limit: int | None = None,
    model_key: str | None = None,
    manifest: Manifest = None,
    progress: bool = True,
) -> Path:
    """Project every image of ``images`` onto all modes of ``modes_path`` and stream the per-image statistics,
    the top-k images per mode and the anisotropy sums into a projections store at ``output``. A batch that does
    not fit in memory is split (and the smaller size kept); the results do not depend on the batch size."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from .batching import AdaptiveBatch
    from .errors import QKDissectError
    from .images import ImageDataset, collate, default_workers, image_source
    from .projections import SIGNS, Projector, StreamingTopK, anisotropy
    from .store import StreamingStore

    started = utc_now()
    t0 = time.perf_counter()
    im = load_image_model(spec, device, model_key)
    qk, loaded, name, pre, dev, model = im.qk, im.loaded, im.name, im.preprocess, im.device, im.model
    manifest, deps = weights_checked(im.loaded, im.name, manifest)
    modes = modes_of(modes_path, loaded, name)
    source = image_source(images, limit=limit)
    proj = Projector(qk, modes.U.values, modes.V.values, source=tokens, device=dev)  # type: ignore[arg-type]
    n_layers, n_heads, n_modes = proj.shape
    n = len(source)
    chunk = batch_size * max(1, round(256 / batch_size))
    topk = StreamingTopK((n_layers, n_heads, n_modes, 2), top_k, device=dev)
    unit_sum = torch.zeros(n_layers, qk.d_model, dtype=torch.float64, device=dev)
    valid = np.zeros(n, dtype=bool)
    digests: list[str | None] = [None] * n
    skipped: list[dict[str, str]] = []
    run = AdaptiveBatch(f"project {name}")
    dataset = ImageDataset(source, pre)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=default_workers() if workers is None else workers,
        collate_fn=collate,
    )
    dims = ("image", "layer", "head", "mode")
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    with StreamingStore(output) as st:
        for var, what in (
            ("q_max", "max_t x_t.u"),
            ("q_min", "min_t x_t.u"),
            ("k_max", "max_t x_t.v"),
            ("k_min", "min_t x_t.v"),
        ):
            st.create(
                var,
                (n, n_layers, n_heads, n_modes),
                dims,
                (chunk, n_layers, n_heads, n_modes),
                "float32",
                description=f"{what} over the image's patch tokens (NaN: image skipped)",
            )
        bar = tqdm(loader, total=len(loader), desc=f"project {name}", unit="batch", disable=not progress)
        for start, (ok, x, bad, batch_digests) in zip(range(0, n, batch_size), bar, strict=True):
            size = min(batch_size, n - start)
            for i, d in batch_digests:
                digests[i] = d
            for i, err in bad:
                skipped.append({"id": source.items[i].id, "error": err})
            block = {
                v: np.full((size, n_layers, n_heads, n_modes), np.nan, np.float32)
                for v in ("q_max", "q_min", "k_max", "k_min")
            }
            if ok:
                stats = run(lambda xb: proj(model, xb), x)  # type: ignore[arg-type]
                rows = np.asarray(ok) - start
                for var, val in (
                    ("q_max", stats.q_max),
                    ("q_min", stats.q_min),
                    ("k_max", stats.k_max),
                    ("k_min", stats.k_min),
                ):
                    block[var][rows] = val.float().cpu().numpy()
                topk.update(stats.scores(), torch.as_tensor(ok))
                c = stats.centre.double()
                unit_sum += (c / c.norm(dim=-1, keepdim=True)).sum(dim=0)
                valid[ok] = True
            for var, arr in block.items():
                st.write(var, start, arr)
            bar.set_postfix(skipped=len(skipped))
        t_pass = time.perf_counter() - t1
        n_valid = int(valid.sum())
        if n_valid == 0:
            raise QKDissectError(
                f"none of the {n} images in {source.root} could be decoded (first: {skipped[0]['error']})"
            )
        k = topk.score.shape[-1]
        top_score = np.full((n_layers, n_heads, n_modes, 2, top_k), -np.inf, np.float32)
        top_image = np.full((n_layers, n_heads, n_modes, 2, top_k), -1, np.int64)
        top_score[..., :k] = topk.score.float().cpu().numpy()
        top_image[..., :k] = topk.index.cpu().numpy()
        s = np.asarray(modes.S.values, dtype=np.float32)
        us = unit_sum.cpu().numpy()
        record = base_record(
            "projections",
            {"tokens": tokens, "batch_size": batch_size, "top_k": top_k, "device_requested": device, "limit": limit},
        )
        image_dep = image_set_dependency(images, limit, source, digests)
        record.update(
            {
                "model": {"key": name, **qk.describe()},
                "weights": {**weights_record(loaded, qk), "manifest": manifest},
                "inputs": {
                    "modes": {"path": str(modes_path), "sha256": tree_sha256(modes_path)},
                    "images": source.describe(),
                },
                "dependencies": [*deps, dependency("modes store", modes_path), image_dep],
                "batch": run.record(),
                "device": device_record(device, dev),
                "started": started,
                "finished": utc_now(),
                "timings_s": {
                    "load": round(t_load, 3),
                    "pass": round(t_pass, 3),
                    "images_per_s": round(n_valid / t_pass, 3) if t_pass > 0 else None,
                },
            }
        )
        small = xr.Dataset(
            {
                "valid": (("image",), valid, {"description": "the image was decoded and projected"}),
                "top_score": (
                    ("layer", "head", "mode", "sign", "rank"),
                    top_score,
                    {"description": "score+ = max q * max k, score- = min q * min k, of the top images, descending"},
                ),
                "top_image": (
                    ("layer", "head", "mode", "sign", "rank"),
                    top_image,
                    {"description": "index (image dim) of the top images; -1 where fewer images"},
                ),
                "top_score_weighted": (
                    ("layer", "head", "mode", "sign", "rank"),
                    top_score * s[..., None, None],
                    {"description": "s_n * top_score (same images: the ranking per mode does not depend on s_n)"},
                ),
                "centre_unit_sum": (
                    ("layer", "dim"),
                    us,
                    {"description": "sum over valid images of the unit centre-token vector"},
                ),
                "anisotropy": (
                    ("layer",),
                    anisotropy(us, n_valid),
                    {"description": "mean cosine between centre tokens of different images (Fig. S4 A)"},
                ),
            },
            coords={
                "image_id": (("image",), np.array([it.id for it in source.items], dtype=object)),
                "image_sha256": (("image",), np.array([d or "" for d in digests], dtype=object)),
                "sign": (("sign",), np.array(list(SIGNS), dtype=object)),
                "layer": np.arange(n_layers),
                "head": np.arange(n_heads),
                "mode": np.arange(n_modes),
            },
            attrs={
                "qkdissect_schema": f"projections/v{SCHEMA_VERSION}",
                "model_id": name,
                "spec": str(loaded.spec),
                "token_source": tokens,
                "n_prefix_tokens": qk.layout.n_prefix,
                "grid": list(qk.layout.grid or ()),
                "centre_token": list(divmod(proj.centre - qk.layout.n_prefix, proj.grid[1])),
                "preprocess": pre.describe(),
                "images": {**source.describe(), "spec": images, "valid": n_valid, "skipped": len(skipped)},
                "skipped": skipped[:1000],
                "top_k": top_k,
                "weights_sha256": loaded.weights_sha256,
                "provenance": record,
            },
        )
        st.finish(small)
    return Path(output)


def compute_logit_stats(
    spec: str | ModelSpec,
    modes_path: str | Path,
    images: str,
    output: str | Path,
    *,
    batch_size: int = 4,
    device: str = "auto",
    workers: int | None = None,
    limit: int | None = None,
    model_key: str | None = None,
    manifest: Manifest = None,
    progress: bool = True,
) -> Path:
    """Beyond the paper, on real images: the share of logit variance of each term (token-token, query bias, key
    bias, constant), the share of the token-token term the top-k modes capture, and whether the modes with
    cos > 0 or < 0 carry the winning keys (:mod:`qkdissect.logits`) -> a logits store at ``output``."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from .images import ImageDataset, collate, default_workers, image_source
    from .logits import SCOPES, TERMS, LogitStats, default_ks
    from .projections import layer_token_hooks
    from .store import write_store

    started = utc_now()
    im = load_image_model(spec, device, model_key)
    qk, loaded, name, dev, model = im.qk, im.loaded, im.name, im.device, im.model
    manifest, deps = weights_checked(im.loaded, im.name, manifest)
    modes = modes_of(modes_path, loaded, name)
    source = image_source(images, limit=limit)
    ks = default_ks(qk.d_head)
    stats = [LogitStats(qk.n_heads, ks) for _ in range(qk.n_layers)]

    def f64(t: Any) -> torch.Tensor:
        return torch.as_tensor(t).to(device=dev, dtype=torch.float64)

    weights = [(f64(a.w_q), f64(a.w_k), f64(a.b_q), f64(a.b_k)) for a in qk.layers]
    u, s, v = (f64(modes[n].values) for n in ("U", "S", "V"))

    def update(i: int, t: torch.Tensor) -> None:
        stats[i].update(t.to(torch.float64), *weights[i], u[i], s[i], v[i])

    loader = DataLoader(
        ImageDataset(source, im.preprocess),
        batch_size=batch_size,
        num_workers=default_workers() if workers is None else workers,
        collate_fn=collate,
    )
    n_valid, skipped = 0, []
    digests: list[str | None] = [None] * len(source)
    with torch.inference_mode():
        for ok, x, bad, batch_digests in tqdm(loader, desc=f"logits {name}", unit="batch", disable=not progress):
            for i, d in batch_digests:
                digests[i] = d
            skipped += [source.items[i].id for i, _ in bad]
            if x is not None:
                with layer_token_hooks(qk, "post-norm", update):
                    model(x.to(dev))
                n_valid += len(ok)
    if n_valid == 0:
        raise ValueError(f"none of the {len(source)} images of {images} could be decoded")
    shares = torch.stack([st.shares() for st in stats]).numpy()  # (layer, scope, term, head)
    explained = torch.stack([st.explained() for st in stats]).numpy()  # (layer, k, head)
    winning = torch.stack([st.winning_positive_share() for st in stats]).numpy()  # (layer, head)
    cos = (modes.U * modes.V).sum("dim").values
    sv = modes.S.values
    sigma_pos = (sv * (cos > 0)).sum(-1) / sv.sum(-1)
    record = base_record("logits", {"batch_size": batch_size, "device_requested": device, "limit": limit})
    record.update(
        {
            "model": {"key": name, **qk.describe()},
            "weights": {**weights_record(loaded, qk), "manifest": manifest},
            "dependencies": [
                *deps,
                dependency("modes store", modes_path),
                image_set_dependency(images, limit, source, digests),
            ],
            "device": device_record(device, dev),
            "started": started,
            "finished": utc_now(),
        }
    )
    n_layers = qk.n_layers
    out = xr.Dataset(
        {
            "share": (("layer", "scope", "term", "head"), shares, {"description": "cov(term, logit) / var(logit)"}),
            "explained": (
                ("layer", "k", "head"),
                explained,
                {"description": "1 - ||T - T_k||^2 / ||T||^2 within query rows (T: token-token term)"},
            ),
            "winning_positive": (
                ("layer", "head"),
                winning,
                {"description": "share of the winning keys' token-token margin from modes with cos(u, v) > 0"},
            ),
            "sigma_positive": (
                ("layer", "head"),
                sigma_pos,
                {"description": "baseline: share of the singular values in modes with cos(u, v) > 0"},
            ),
        },
        coords={
            "layer": np.arange(n_layers),
            "scope": np.array(SCOPES, dtype=object),
            "term": np.array(TERMS, dtype=object),
            "k": np.array(ks),
            "head": np.arange(qk.n_heads),
            "depth": ("layer", np.arange(n_layers) / max(1, n_layers - 1)),
        },
        attrs={
            "qkdissect_schema": f"logits/v{SCHEMA_VERSION}",
            "model_id": name,
            "spec": str(loaded.spec),
            "images": {**source.describe(), "spec": images, "valid": n_valid, "skipped": len(skipped)},
            "skipped": skipped[:1000],
            "provenance": record,
        },
    )
    return write_store(out, output)


def compute_preference(
    spec: str | ModelSpec,
    dataset: str,
    output: str | Path,
    *,
    batch_size: int = 8,
    device: str = "auto",
    limit: int | None = None,
    model_key: str | None = None,
    manifest: Manifest = None,
    progress: bool = True,
) -> Path:
    """Attention preference (paper 4.1) of a model on a mask dataset -> a preference store at ``output``."""
    from tqdm import tqdm

    from .batching import AdaptiveBatch
    from .datasets import mask_dataset, mask_to_tokens
    from .preference import REGIONS, SOURCES, grouped, preference_table, query_tokens
    from .store import write_store

    started = utc_now()
    im = load_image_model(spec, device, model_key)
    qk, loaded, name, pre, dev, model, grid = im.qk, im.loaded, im.name, im.preprocess, im.device, im.model, im.grid
    manifest, deps = weights_checked(im.loaded, im.name, manifest)
    ds_masks = mask_dataset(dataset, limit=limit)
    tables, token_masks, rows_all = [], [], []
    items = ds_masks.items
    run = AdaptiveBatch(f"preference {name}")
    for b in tqdm(range(0, len(items), batch_size), desc=f"preference {name}", disable=not progress):
        xs, tms = [], []
        for it in items[b : b + batch_size]:
            img, masks = it.load()
            tm = np.stack([mask_to_tokens(masks[r], pre, grid).ravel() for r in REGIONS])
            tm = tm / np.maximum(tm.sum(axis=0, keepdims=True), 1e-12)  # area fractions summing to 1 per token
            xs.append(pre.tensor(img))
            tms.append(tm)
        tm_b = np.stack(tms)
        rows = query_tokens(tm_b[:, :2])
        x_b, rows_b = torch.stack(xs).to(dev), torch.as_tensor(rows, device=dev)
        probs = run(partial(_rows_of, model, qk, x_b, rows_b), torch.arange(len(xs), device=dev))
        tables.append(preference_table(probs.cpu().numpy(), tm_b))
        token_masks.append(tm_b)
        rows_all.append(rows)
    table = np.concatenate(tables)
    rows = np.concatenate(rows_all)
    present = rows >= 0
    groups = grouped(table, present)
    n_layers = qk.n_layers
    depth = np.arange(n_layers) / max(1, n_layers - 1)
    data = {
        "table": (
            ("image", "layer", "head", "source", "region"),
            table.astype(np.float32),
            {"description": "attention of the source token's row on each region (rows sum to 1)"},
        ),
        "query_token": (("image", "source"), rows, {"description": "patch index of the query token; -1: no mask"}),
        "token_masks": (
            ("image", "region", "token"),
            np.concatenate(token_masks).astype(np.float32),
            {"description": "area fractions of each region per patch token (sum to 1)"},
        ),
    }
    for g, v in groups.items():
        data[g] = (("image", "layer", "head"), v.astype(np.float32), {"description": f"{g} (paper 4.1 grouping)"})
        data[f"layer_{g}"] = (("layer",), np.nanmean(v, axis=(0, 2)), {"description": "mean over images and heads"})
    record = base_record("preference", {"batch_size": batch_size, "device_requested": device, "limit": limit})
    record.update(
        {
            "model": {"key": name, **qk.describe()},
            "weights": {**weights_record(loaded, qk), "manifest": manifest},
            "inputs": {"dataset": ds_masks.describe()},
            "dependencies": [*deps, mask_dataset_dependency(ds_masks, dataset, limit)],
            "batch": run.record(),
            "device": device_record(device, dev),
            "started": started,
            "finished": utc_now(),
        }
    )
    out = xr.Dataset(
        data,
        coords={
            "image_id": (("image",), np.array([it.id for it in items], dtype=object)),
            "image_sha256": (("image",), np.array([it.sha256() or "" for it in items], dtype=object)),
            "source": (("source",), np.array(SOURCES, dtype=object)),
            "region": (("region",), np.array(REGIONS, dtype=object)),
            "layer": np.arange(n_layers),
            "depth": ("layer", depth),
        },
        attrs={
            "qkdissect_schema": f"preference/v{SCHEMA_VERSION}",
            "model_id": name,
            "spec": str(loaded.spec),
            "dataset": {**ds_masks.describe(), "spec": dataset, "limit": limit},
            "grid": list(grid),
            "preprocess": pre.describe(),
            "notes": qk.notes,
            "provenance": record,
        },
    )
    return write_store(out, output)


def compute_same_object(
    spec: str | ModelSpec,
    modes_path: str | Path,
    dataset: str,
    output: str | Path,
    *,
    top: int = 5,
    tokens: str = "post-norm",
    batch_size: int = 4,
    device: str = "auto",
    limit: int | None = None,
    model_key: str | None = None,
    manifest: Manifest = None,
    progress: bool = True,
) -> Path:
    """Same-object probability (paper 4.2, Fig. 6) of every mode on a dataset with object masks."""
    from tqdm import tqdm

    from .batching import AdaptiveBatch
    from .datasets import mask_dataset
    from .projections import SIGNS, layer_token_hooks, stacked_uv
    from .same_object import object_weights, optimal_objects, top_fraction, weighted_by_sigma
    from .store import write_store

    started = utc_now()
    im = load_image_model(spec, device, model_key)
    qk, loaded, name, pre, dev, model, grid = im.qk, im.loaded, im.name, im.preprocess, im.device, im.model, im.grid
    manifest, deps = weights_checked(im.loaded, im.name, manifest)
    modes = modes_of(modes_path, loaded, name)
    data = mask_dataset(dataset, limit=limit)
    run = AdaptiveBatch(f"same-object {name}")
    u = torch.as_tensor(modes.U.values, dtype=torch.float32)
    n_layers, n_heads, _, n_modes = u.shape
    uv = stacked_uv(u, torch.as_tensor(modes.V.values, dtype=torch.float32)).to(dev)
    hm = n_heads * n_modes
    n_img = len(data)
    scores = np.full((n_img, n_layers, hm, 2), -np.inf, np.float32)
    same = np.zeros((n_img, n_layers, hm, 2), bool)
    n_objects = np.zeros(n_img, np.int32)
    for b in tqdm(range(0, n_img, batch_size), desc=f"same-object {name}", disable=not progress):
        batch = data.items[b : b + batch_size]
        loaded_items = [it.load() for it in batch]
        weights = [object_weights(m, pre, grid) for _, m in loaded_items]
        x = torch.stack([pre.tensor(img) for img, _ in loaded_items]).to(dev)

        def project(xb: torch.Tensor) -> torch.Tensor:
            proj: list[torch.Tensor | None] = [None] * n_layers

            def keep(i: int, t: torch.Tensor) -> None:
                proj[i] = t[:, qk.layout.n_prefix :].float() @ uv[i]  # (b, T, 2*H*M)

            with layer_token_hooks(qk, tokens, keep), torch.inference_mode():  # type: ignore[arg-type]
                model(xb)
            return torch.stack([p for p in proj if p is not None], dim=1)  # (b, L, T, 2HM)

        p_all = run(project, x)
        for j, (w, _) in enumerate(weights):
            idx = b + j
            n_objects[idx] = w.shape[0]
            if w.shape[0] < 2:
                continue
            pj = p_all[j]  # (L, T, 2HM)
            means = torch.einsum("ot,ltk->olk", torch.as_tensor(w, dtype=torch.float32, device=dev), pj)
            same[idx] = optimal_objects(means[..., :hm], means[..., hm:]).cpu().numpy()
            q, k = pj[..., :hm], pj[..., hm:]
            sc = torch.stack([q.amax(1) * k.amax(1), q.amin(1) * k.amin(1)], dim=-1)  # (L, HM, 2)
            scores[idx] = sc.cpu().numpy()
    p = top_fraction(scores, same, top).reshape(n_layers, n_heads, n_modes, 2)
    order = np.argsort(-scores, axis=0, kind="stable")[: min(top, n_img)]
    order = np.moveaxis(order, 0, -1).reshape(n_layers, n_heads, n_modes, 2, -1)
    s = np.asarray(modes.S.values, dtype=np.float64)
    head_p = weighted_by_sigma(p, s)
    depth = np.arange(n_layers) / max(1, n_layers - 1)
    record = base_record("same_object", {"top": top, "tokens": tokens, "batch_size": batch_size, "limit": limit})
    record.update(
        {
            "model": {"key": name, **qk.describe()},
            "weights": {**weights_record(loaded, qk), "manifest": manifest},
            "inputs": {
                "modes": {"path": str(modes_path), "sha256": tree_sha256(modes_path)},
                "dataset": data.describe(),
            },
            "dependencies": [
                *deps,
                dependency("modes store", modes_path),
                mask_dataset_dependency(data, dataset, limit),
            ],
            "batch": run.record(),
            "device": device_record(device, dev),
            "started": started,
            "finished": utc_now(),
        }
    )
    out = xr.Dataset(
        {
            "p": (
                ("layer", "head", "mode", "sign"),
                p,
                {"description": "fraction of top images where the query and key sides pick the same object"},
            ),
            "top_image": (
                ("layer", "head", "mode", "sign", "rank"),
                order.astype(np.int64),
                {"description": "index of the top images"},
            ),
            "head_p": (("layer", "head"), head_p, {"description": "sum_n s_n p_n / sum_n s_n over modes and signs"}),
            "layer_p": (("layer",), np.nanmean(head_p, axis=1), {"description": "mean over heads of head_p"}),
            "n_objects": (("image",), n_objects, {"description": "objects covering at least one token"}),
        },
        coords={
            "image_id": (("image",), np.array([it.id for it in data.items], dtype=object)),
            "image_sha256": (("image",), np.array([it.sha256() or "" for it in data.items], dtype=object)),
            "sign": (("sign",), np.array(list(SIGNS), dtype=object)),
            "layer": np.arange(n_layers),
            "depth": ("layer", depth),
        },
        attrs={
            "qkdissect_schema": f"same_object/v{SCHEMA_VERSION}",
            "model_id": name,
            "spec": str(loaded.spec),
            "dataset": {**data.describe(), "spec": dataset, "limit": limit},
            "top": top,
            "token_source": tokens,
            "eligible_images": int((n_objects >= 2).sum()),
            "provenance": record,
        },
    )
    return write_store(out, output)
