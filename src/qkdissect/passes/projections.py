"""Token projections on real images: query maps ``x_t . u_n`` and key maps ``x_t . v_n`` for every layer, head
and mode at once, per-image statistics, a streaming top-k of images per mode, and the anisotropy baseline.

One forward pass per image batch. A hook on each layer's attention input (by default the output of the block's
norm, i.e. exactly the tokens that W_q and W_k see; ``pre-norm`` projects the residual stream entering the block,
as the released code does, paper B4) multiplies the patch tokens by ``[U_l | V_l]`` (d x 2*H*M, one GEMM per
layer: no Python loop over heads or modes) and keeps only max/min over tokens, so memory does not grow with the
number of images.

Image score of a mode (paper section 1.6): ``score+ = max_t(x_t.u) * max_t(x_t.v)`` and, for the opposite sign
(-u, -v), ``score- = min_t(x_t.u) * min_t(x_t.v)``. Ranking images per mode does not depend on sigma_n, so the
sigma-weighted variant ``s_n * score`` has the same images; it matters when modes are compared with each other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..core.device import device_record
from ..core.topk import StreamingTopK, anisotropy
from ..data.images import ImageDataset, collate, default_workers, image_source
from ..errors import QKDissectError
from ..models import ModelLike, QKWeights, describe_loaded
from ..options import SIGNS, TokenSource
from ..provenance.records import base_record, dependency, tree_sha256, utc_now
from ..stores.io import StreamingStore
from ..stores.schema import SCHEMA_VERSION
from .batching import AdaptiveBatch
from .hooks import layer_token_hooks, modes_uv
from .loop import Manifest, image_set_dependency, load_image_model, modes_of, weights_checked


def centre_index(grid: tuple[int, int]) -> int:
    """Row-major index of the centre patch (g_h // 2, g_w // 2) (paper 4.4: the choice for even grids is ours)."""
    return (grid[0] // 2) * grid[1] + grid[1] // 2


@dataclass
class BatchStats:
    """Per image (batch, layer, head, mode) max/min of the query and key maps; centre tokens (batch, layer, d)."""

    q_max: torch.Tensor
    q_min: torch.Tensor
    k_max: torch.Tensor
    k_min: torch.Tensor
    centre: torch.Tensor

    def scores(self) -> torch.Tensor:
        """(batch, layer, head, mode, sign): score+ = max q * max k, score- = min q * min k."""
        return torch.stack([self.q_max * self.k_max, self.q_min * self.k_min], dim=-1)


class Projector:
    """Projects every layer's patch tokens onto all U and V of the modes in one GEMM per layer."""

    def __init__(
        self,
        qk: QKWeights,
        u: np.ndarray | torch.Tensor,
        v: np.ndarray | torch.Tensor,
        *,
        source: TokenSource = "post-norm",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        uv, self.shape = modes_uv(qk, u, v)
        if qk.layout.grid is None:
            raise ValueError(f"{qk.model_id} has no patch grid: token projections need an image model")
        self.qk, self.source = qk, source
        self.device, self.dtype = torch.device(device), dtype
        self.uv = uv.to(device=self.device, dtype=dtype).contiguous()
        self.n_prefix = qk.layout.n_prefix
        self.grid = qk.layout.grid
        self.centre = self.n_prefix + centre_index(self.grid)

    def _reduce(self, layer: int, x: torch.Tensor, out: dict[str, list[Any]]) -> None:
        n_tok = self.grid[0] * self.grid[1]
        if x.shape[1] - self.n_prefix != n_tok:
            raise ValueError(
                f"layer {layer}: {x.shape[1] - self.n_prefix} patch tokens, expected {self.grid[0]}x{self.grid[1]}; "
                "feed images at the model's own input size"
            )
        # all tokens in one contiguous GEMM (the prefix rows are a negligible extra), then the patch rows
        p = (x.to(self.dtype) @ self.uv[layer])[:, self.n_prefix :]  # (batch, token, 2*H*M)
        out["min"][layer], out["max"][layer] = torch.aminmax(p, dim=1)
        out["centre"][layer] = x[:, self.centre].to(self.dtype)

    @torch.inference_mode()
    def __call__(self, model: torch.nn.Module, x: torch.Tensor) -> BatchStats:
        n_layers, n_heads, n_modes = self.shape
        out: dict[str, list[Any]] = {k: [None] * n_layers for k in ("max", "min", "centre")}
        with layer_token_hooks(self.qk, self.source, lambda i, t: self._reduce(i, t, out)):
            model(x.to(self.device))
        if any(m is None for m in out["max"]):
            raise RuntimeError("the forward pass did not reach every attention layer")
        mx = torch.stack(out["max"], dim=1).reshape(x.shape[0], n_layers, 2, n_heads, n_modes)
        mn = torch.stack(out["min"], dim=1).reshape(x.shape[0], n_layers, 2, n_heads, n_modes)
        return BatchStats(mx[:, :, 0], mn[:, :, 0], mx[:, :, 1], mn[:, :, 1], torch.stack(out["centre"], dim=1))


def compute_projections(
    spec: ModelLike,
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
                "weights": {**describe_loaded(loaded), "manifest": manifest},
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
