"""Hooks on the tokens each layer's attention sees, and the projection of those tokens onto every mode at once.

A hook on each layer's attention input gives, by default, the output of the block's norm, i.e. exactly the
tokens that W_q and W_k see (``post-norm``); ``pre-norm`` gives the residual stream entering the block, as the
released code projects it (paper B4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import torch

from ..models.qk import QKWeights
from ..options import TOKEN_SOURCES, TokenSource


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


class _AllLayersSeen(Exception):
    """Raised by :func:`layer_tokens`' hook once it has every layer it wants: the blocks after them never run."""


def layer_tokens(
    model: torch.nn.Module, qk: QKWeights, x: torch.Tensor, layers: list[int], source: TokenSource = "post-norm"
) -> dict[int, torch.Tensor]:
    """The patch tokens (batch, token, d) of the given layers for a batch of preprocessed images. The forward pass
    stops once the last of them is seen (the tokens of a layer do not depend on the blocks after it): a map of a
    layer-2 mode runs 3 of DINOv2's 12 blocks."""
    got: dict[int, torch.Tensor] = {}
    wanted = set(layers)

    def keep(i: int, t: torch.Tensor) -> None:
        got[i] = t[:, qk.layout.n_prefix :].detach().float().cpu()
        if wanted <= got.keys():
            raise _AllLayersSeen

    with layer_token_hooks(qk, source, keep, layers), torch.inference_mode(), suppress(_AllLayersSeen):
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
