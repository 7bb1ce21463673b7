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

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from .models import QKWeights

TokenSource = Literal["post-norm", "pre-norm"]
TOKEN_SOURCES: tuple[str, ...] = ("post-norm", "pre-norm")
SIGNS = ("+", "-")


@contextmanager
def layer_token_hooks(
    qk: QKWeights, source: TokenSource, fn: Callable[[int, torch.Tensor], None], layers: list[int] | None = None
) -> Iterator[None]:
    """Call ``fn(layer, x)`` with each layer's tokens (batch, token, d_model) while the model runs: the output of
    the norm feeding the attention (``post-norm``) or its input, the residual stream (``pre-norm``)."""
    if source not in TOKEN_SOURCES:
        raise ValueError(f"token source must be one of {TOKEN_SOURCES}, not {source!r}")
    handles = []
    wanted = set(range(qk.n_layers)) if layers is None else set(layers)
    for i, layer in enumerate(qk.layers):
        if i not in wanted:
            continue
        if layer.norm is None or source == "pre-norm":
            target = layer.norm if layer.norm is not None else layer.attention

            def pre(_m: Any, inputs: tuple, i: int = i) -> None:
                fn(i, inputs[0])

            handles.append(target.register_forward_pre_hook(pre))
        else:

            def post(_m: Any, _inp: Any, out: torch.Tensor, i: int = i) -> None:
                fn(i, out)

            handles.append(layer.norm.register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def stacked_uv(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(layer, head, d, mode) U and V -> (layer, d, 2 * head * mode) ``[U_l | V_l]``, columns in (head, mode)
    order: one matrix per layer that projects tokens onto every query and key direction at once."""
    n_layers, _, d, _ = u.shape
    return torch.cat(
        [u.permute(0, 2, 1, 3).reshape(n_layers, d, -1), v.permute(0, 2, 1, 3).reshape(n_layers, d, -1)], dim=-1
    )


def modes_uv(
    qk: QKWeights, u: np.ndarray | torch.Tensor, v: np.ndarray | torch.Tensor
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``[U_l | V_l]`` (layer, d, 2 * head * mode) of modes U, V (layer, head, d, mode) that must belong to ``qk``,
    and their (layer, head, mode) shape."""
    u_t, v_t = torch.as_tensor(u), torch.as_tensor(v)
    n_layers, n_heads, d, n_modes = u_t.shape
    if (n_layers, n_heads, d) != (qk.n_layers, qk.n_heads, qk.d_model):
        raise ValueError(
            f"modes of shape (layer={n_layers}, head={n_heads}, d={d}) do not belong to this model "
            f"(layer={qk.n_layers}, head={qk.n_heads}, d={qk.d_model})"
        )
    return stacked_uv(u_t, v_t), (n_layers, n_heads, n_modes)


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


class StreamingTopK:
    """Top-k images per (layer, head, mode, sign) over a stream of batches; memory independent of the stream.
    ``n_payload`` integer tensors of the same shape can ride along with each kept item (``payload``: e.g. the
    token positions of a passage's best pair)."""

    def __init__(self, shape: tuple[int, ...], k: int, device: torch.device | str = "cpu", n_payload: int = 0) -> None:
        self.k = k
        self.score = torch.full((*shape, 0), -math.inf, device=device)
        self.index = torch.full((*shape, 0), -1, dtype=torch.int64, device=device)
        self.payload = [torch.full((*shape, 0), -1, dtype=torch.int64, device=device) for _ in range(n_payload)]

    def update(self, scores: torch.Tensor, indices: torch.Tensor, payload: Sequence[torch.Tensor] = ()) -> None:
        """``scores`` (batch, *shape) of the images with global ``indices`` (batch,); ``payload`` tensors of the
        same shape as ``scores``, one per ``n_payload``."""
        if scores.shape[0] == 0:
            return
        s = torch.cat([self.score, scores.movedim(0, -1).to(self.score)], dim=-1)
        idx = torch.cat([self.index, indices.to(self.index.device).expand(*s.shape[:-1], -1)], dim=-1)
        extra = [
            torch.cat([old, new.movedim(0, -1).to(old)], dim=-1) for old, new in zip(self.payload, payload, strict=True)
        ]
        # ties broken towards the smaller image index: sort by index first (stable), then by score
        order = torch.argsort(idx, dim=-1, stable=True)
        s, idx = s.gather(-1, order), idx.gather(-1, order)
        top = torch.argsort(s, dim=-1, descending=True, stable=True)[..., : self.k]
        self.score, self.index = s.gather(-1, top), idx.gather(-1, top)
        self.payload = [e.gather(-1, order).gather(-1, top) for e in extra]


def anisotropy(unit_sum: np.ndarray, count: int) -> np.ndarray:
    """Mean cosine over pairs of different images i != j from the sum of unit vectors S and their number n:
    sum_{i != j} cos = ||S||^2 - n, over n (n - 1) pairs. ``unit_sum`` (layer, d) -> (layer,)."""
    if count < 2:
        return np.full(unit_sum.shape[0], np.nan)
    return (np.sum(unit_sum.astype(np.float64) ** 2, axis=-1) - count) / (count * (count - 1))


def layer_tokens(
    model: torch.nn.Module, qk: QKWeights, x: torch.Tensor, layers: list[int], source: TokenSource = "post-norm"
) -> dict[int, torch.Tensor]:
    """The patch tokens (batch, token, d) of the given layers for a batch of preprocessed images."""
    got: dict[int, torch.Tensor] = {}

    def keep(i: int, t: torch.Tensor) -> None:
        got[i] = t[:, qk.layout.n_prefix :].detach().float().cpu()

    with layer_token_hooks(qk, source, keep, layers), torch.inference_mode():
        model(x)
    return got


def mode_maps(
    tokens: torch.Tensor, u: np.ndarray, v: np.ndarray, grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Query and key maps (batch, g_h, g_w) of one mode: tokens (batch, token, d) onto u (d,) and v (d,)."""
    t = tokens.double().numpy()
    q = t @ np.asarray(u, dtype=np.float64)
    k = t @ np.asarray(v, dtype=np.float64)
    return q.reshape(-1, *grid), k.reshape(-1, *grid)
