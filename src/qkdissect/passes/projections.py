"""Token projections on real images: query maps ``x_t . u_n`` and key maps ``x_t . v_n`` for every layer, head
and mode at once, per-image statistics, a streaming top-k of images per mode, and the anisotropy baseline.

One forward pass per image batch. A hook on each layer's attention input (by default the output of the block's
norm, i.e. exactly the tokens that W_q and W_k see; ``pre-norm`` projects the residual stream entering the block,
as the released code does, paper B4) multiplies the patch tokens by ``[U_l | V_l]`` (d x 2*H*M, one GEMM per
layer: no Python loop over heads or modes) and keeps only max/min over tokens, so memory does not grow with the
number of images.

Image score of a mode (paper section 1.6): ``score+ = max_t(x_t.u) * max_t(x_t.v)`` and, for the opposite sign
(-u, -v), ``score- = min_t(x_t.u) * min_t(x_t.v)``, as the released code (``score="released"``, the default);
where both maxima are negative their product is positive too, so ``score="clipped"`` offers
``[max q]_+ [max k]_+`` and ``[-min q]_+ [-min k]_+`` (:func:`qkdissect.core.topk.image_scores`). The store counts,
per mode and sign, the top images whose two extremes are both on the wrong side (``top_both_negative``). Ranking
images per mode does not depend on sigma_n, so the sigma-weighted variant ``s_n * score`` has the same images; it
matters when modes are compared with each other.

Prefix tokens (CLS, distillation, registers: ``attrs["prefix_tokens"]`` names each) stay out of the maxima, minima,
scores and top images; from the same product over all tokens the pass counts, per mode and sign, the images whose
query and key maps peak on a prefix token, per kind (``query_top_on_prefix``, ``key_top_on_prefix``; int64, so that
shards sum exactly): attention sinks are part of what a mode does.

``dedupe`` (a Hamming distance) drops the exact and near duplicates of the image set before the pass
(:mod:`qkdissect.data.duplicates`); the store names them (``attrs["images"]["dedupe"]``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..core.topk import (
    StreamingTopK,
    anisotropy,
    both_wrong_side,
    count_kinds,
    extreme_on_prefix,
    fixed_point,
    from_fixed_point,
    image_scores,
)
from ..models import QKWeights
from ..options import PREFIX_KINDS, ImageScore, TokenSource, top_k_within
from ..requests import ProjectRequest
from ..stores.readwrite import StreamingStore
from ..stores.schema import PROJECTION_STATS, labels, projections_dataset
from ..util.clock import utc_now
from .batching import AdaptiveBatch
from .hooks import layer_token_hooks, modes_uv
from .loop import ImageStream, load_image_model, modes_of, pass_record, stream_target, streamed
from .shards import Shard, shard_store


def centre_index(grid: tuple[int, int]) -> int:
    """Row-major index of the centre patch (g_h // 2, g_w // 2) (paper 4.4: the choice for even grids is ours)."""
    return (grid[0] // 2) * grid[1] + grid[1] // 2


@dataclass
class BatchStats:
    """Per image (batch, layer, head, mode) max/min of the query and key maps over the patch tokens; centre tokens
    (batch, layer, d); ``on_prefix`` (batch, layer, side (q, k), head, mode, sign): the prefix token where the map's
    largest (sign +) or smallest (sign -) value over all tokens lies, -1 where on a patch token."""

    q_max: torch.Tensor
    q_min: torch.Tensor
    k_max: torch.Tensor
    k_min: torch.Tensor
    centre: torch.Tensor
    on_prefix: torch.Tensor

    def scores(self, rule: ImageScore = "released") -> torch.Tensor:
        """(batch, layer, head, mode, sign): the image scores (:func:`qkdissect.core.topk.image_scores`)."""
        return image_scores(self.q_max, self.q_min, self.k_max, self.k_min, rule)

    def both_negative(self) -> torch.Tensor:
        """(batch, layer, head, mode, sign) 1 where both extremes are on the wrong side of 0, else 0."""
        return both_wrong_side(self.q_max, self.q_min, self.k_max, self.k_min).long()

    def prefix_counts(self, kind: torch.Tensor) -> torch.Tensor:
        """(side (q, k), layer, head, mode, sign, prefix_kind) int64: the batch's images whose map peaks on a prefix
        token of each kind of :data:`PREFIX_KINDS` (``kind``: the kind index of each prefix token)."""
        return count_kinds(self.on_prefix, kind, len(PREFIX_KINDS)).movedim(1, 0)


class Projector:
    """Projects every layer's tokens onto all U and V of the modes in one GEMM per layer: the patch tokens' max
    and min, and where over all tokens (prefix included) the extremes lie."""

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
        self.kind = torch.tensor([PREFIX_KINDS.index(k) for k in qk.layout.prefix_kinds], dtype=torch.int64)

    def _reduce(self, layer: int, x: torch.Tensor, out: dict[str, list[Any]]) -> None:
        n_tok = self.grid[0] * self.grid[1]
        if x.shape[1] - self.n_prefix != n_tok:
            raise ValueError(
                f"layer {layer}: {x.shape[1] - self.n_prefix} patch tokens, expected {self.grid[0]}x{self.grid[1]}; "
                "feed images at the model's own input size"
            )
        # all tokens in one contiguous GEMM (the prefix rows are a negligible extra), then the patch rows
        full = x.to(self.dtype) @ self.uv[layer]  # (batch, token, 2*H*M)
        out["min"][layer], out["max"][layer] = torch.aminmax(full[:, self.n_prefix :], dim=1)
        out["prefix"][layer] = extreme_on_prefix(full, self.n_prefix, out["max"][layer], out["min"][layer])
        out["centre"][layer] = x[:, self.centre].to(self.dtype)

    @torch.inference_mode()
    def __call__(self, model: torch.nn.Module, x: torch.Tensor) -> BatchStats:
        n_layers, n_heads, n_modes = self.shape
        out: dict[str, list[Any]] = {k: [None] * n_layers for k in ("max", "min", "centre", "prefix")}
        with layer_token_hooks(self.qk, self.source, lambda i, t: self._reduce(i, t, out)):
            model(x.to(self.device))
        if any(m is None for m in out["max"]):
            raise RuntimeError("the forward pass did not reach every attention layer")
        mx = torch.stack(out["max"], dim=1).reshape(x.shape[0], n_layers, 2, n_heads, n_modes)
        mn = torch.stack(out["min"], dim=1).reshape(x.shape[0], n_layers, 2, n_heads, n_modes)
        on = torch.stack(out["prefix"], dim=1).reshape(x.shape[0], n_layers, 2, n_heads, n_modes, 2)
        centre = torch.stack(out["centre"], dim=1)
        return BatchStats(mx[:, :, 0], mn[:, :, 0], mx[:, :, 1], mn[:, :, 1], centre, on)


def shard_extras(
    ds: xr.Dataset, flag: np.ndarray, limbs: np.ndarray, s: np.ndarray, where: dict[str, Any]
) -> xr.Dataset:
    """A shard's store: the store of its images, plus what the merge needs (:mod:`.shards`): the both-negative
    flag of each top image, the fixed-point sum of the unit centre tokens, the singular values, and where the
    shard lies in the whole set (``attrs["shard"]``)."""
    top = ("layer", "head", "mode", "sign", "rank")
    extra = {
        "top_both_negative_flag": (top, flag, "1: both extremes of the top image on the wrong side of 0"),
        "centre_unit_sum_fixed": (("limb", "layer", "dim"), limbs,
                                  "centre_unit_sum in fixed point: (hi + lo 2^-31) 2^-31 (exact sums)"),
        "singular_value": (("layer", "head", "mode"), s, "s_n of the modes"),
    }  # fmt: skip
    return shard_store(ds, extra, where)


def compute_projections(*args: Any, **kw: Any) -> xr.Dataset:
    """:func:`run_projections` of ``ProjectRequest.build(spec, modes, images, output, tokens=..., ...)``."""
    return run_projections(ProjectRequest.build(*args, **kw))


def run_projections(r: ProjectRequest) -> xr.Dataset:
    """Project every image of ``images`` onto all modes and stream the per-image statistics, the top-k images per
    mode (by the image score ``score``) and the anisotropy sums into a projections store at ``output`` (a
    temporary one, loaded into memory, when not given); ``dedupe``: drop duplicates within that many bits of the
    perceptual hash first. A batch that does not fit in memory is split (and the smaller size kept); the results
    do not depend on the batch size. ``shard``: only that shard of the set, into a shard store that
    :func:`qkdissect.passes.shards.merge_projections` merges with the others into this very store."""
    tokens, batch_size, top_k, score, shard = r.tokens, r.batch_size, r.top_k, r.score, Shard.of(r.shard)
    started, t0 = utc_now(), time.perf_counter()
    im = load_image_model(r.model)
    modes_ds, deps = modes_of(r.modes, im)
    stream = ImageStream.open(r.images, r.limit, im.preprocess, r.dedupe, shard, batch_size)
    top_k_within(top_k, stream.total, f"images of {r.images}")
    proj = Projector(im.qk, modes_ds.U.values, modes_ds.V.values, source=tokens, device=im.device)
    n_layers, n_heads, n_modes = proj.shape
    n = len(stream)
    topk = StreamingTopK((n_layers, n_heads, n_modes, 2), top_k, device=im.device, n_payload=1)
    unit_sum = torch.zeros(2, n_layers, im.qk.d_model, dtype=torch.int64, device=im.device)  # fixed point
    on_prefix = torch.zeros(2, n_layers, n_heads, n_modes, 2, len(PREFIX_KINDS), dtype=torch.int64)
    run = AdaptiveBatch(f"project {im.name}")
    t_load = time.perf_counter() - t0
    shape = (n_layers, n_heads, n_modes)
    with stream_target(r.output) as target:
        with StreamingStore(target) as st:
            chunk = batch_size * max(1, round(256 / batch_size))
            for var, what in PROJECTION_STATS.items():
                desc = f"{what} over the image's patch tokens (NaN: image skipped)"
                dims = ("image", "layer", "head", "mode")
                st.create(var, (n, *shape), dims, (chunk, *shape), "float32", description=desc, **labels(var))
            for start, size, ok, x in stream.batches(batch_size, r.workers, f"project {im.name}", r.progress):
                block = {v: np.full((size, *shape), np.nan, np.float32) for v in PROJECTION_STATS}
                if ok:
                    stats = run(lambda xb: proj(im.model, xb), x)  # type: ignore[arg-type]
                    rows = np.asarray(ok) - start
                    for var in PROJECTION_STATS:
                        block[var][rows] = getattr(stats, var).float().cpu().numpy()
                    topk.update(stats.scores(score), torch.as_tensor(ok), [stats.both_negative()])
                    c = stats.centre.double()
                    unit_sum += fixed_point(c / c.norm(dim=-1, keepdim=True)).sum(dim=1)
                    on_prefix += stats.prefix_counts(proj.kind).cpu()
                for var, arr in block.items():
                    st.write(var, start, arr)
            have = topk.score.shape[-1]
            top_score = np.full((*shape, 2, top_k), -np.inf, np.float32)
            top_image = np.full((*shape, 2, top_k), -1, np.int64)
            top_score[..., :have] = topk.score.float().cpu().numpy()
            top_image[..., :have] = topk.index.cpu().numpy()
            flag = np.zeros((*shape, 2, top_k), np.int8)
            flag[..., :have] = topk.payload[0].cpu().numpy()
            both_negative = (flag == 1).sum(axis=-1)
            limbs = unit_sum.cpu().numpy()
            us = from_fixed_point(limbs)
            parameters = {"tokens": tokens, "batch_size": batch_size, "top_k": top_k,
                          "device_requested": r.model.device, "limit": r.limit, "score": score,
                          "dedupe": r.dedupe}  # fmt: skip
            timings = {"load": round(t_load, 3), **stream.rate()}
            record = pass_record("projections", parameters, im, [*deps, stream.dependency()], r.model.device, started,
                                 batch=run.record(), timings_s=timings)  # fmt: skip
            qk = im.qk
            attrs = {
                "model_id": im.name,
                "spec": str(im.source.spec),
                "token_source": tokens,
                "n_prefix_tokens": qk.layout.n_prefix,
                "prefix_tokens": list(qk.layout.prefix_kinds),
                "grid": list(qk.layout.grid or ()),
                "centre_token": list(divmod(proj.centre - qk.layout.n_prefix, proj.grid[1])),
                "preprocess": im.preprocess.describe(),
                "images": stream.describe(),
                "skipped": stream.skipped[:1000],
                "top_k": top_k,
                "image_score": score,
                "weights_sha256": im.source.weights_sha256,
                "provenance": record,
            }
            s = np.asarray(modes_ds.S.values, dtype=np.float32)
            small = projections_dataset(stream.valid, top_score, top_image, both_negative, s, us,
                                        anisotropy(us, stream.n_valid), stream.coords(), attrs,
                                        on_prefix=on_prefix.numpy())  # fmt: skip
            if shard is not None:
                small = shard_extras(small, flag, limbs, s, stream.shard_record())
            st.finish(small)
        return streamed(target, r.output)
