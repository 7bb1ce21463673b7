"""Which modes a figure shows: the paper's codes checked against a model's shape, and the automatic choices
(spread over depth, a grouping and a contextualising mode, the modes that act most on one image). Arrays in,
lists of modes out.

A mode is ``(layer, head, mode, sign)``, 0-based, sign "+" (the mode's u, v) or "-" (-u, -v); its label follows
the paper: "L8 H9 M2", with "(-)" for the opposite sign (:func:`qkdissect.options.mode_label`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..options import Mode, mode_label


def check_modes(spec: Sequence[Sequence[Any]], shape: tuple[int, int, int]) -> list[Mode]:
    """``[[layer, head, mode(, sign)], ...]`` as modes, every one inside ``shape`` (layers, heads, modes); all
    entries out of range are named at once, with the valid ranges."""
    out: list[Mode] = []
    bad: list[str] = []
    for item in spec:
        layer, head, mode = (int(v) for v in item[:3])
        sign = str(item[3]) if len(item) > 3 else "+"
        if sign not in ("+", "-"):
            bad.append(f"{mode_label((layer, head, mode))}: sign {sign!r} is not + or -")
        for what, val, size in zip(("layer", "head", "mode"), (layer, head, mode), shape, strict=True):
            if not 0 <= val < size:
                bad.append(f"{mode_label((layer, head, mode, sign))}: {what} {val} out of range 0-{size - 1}")
        out.append((layer, head, mode, sign))
    if bad:
        layers, heads, modes = shape
        raise ValueError(
            "; ".join(bad) + f" (the model has {layers} layers, {heads} heads, {modes} modes per head; 0-based)"
        )
    return out


def spread_modes(s: np.ndarray, n: int = 5, layers: tuple[int, int] | None = None) -> list[Mode]:
    """n modes spread over depth: in each chosen layer the strongest mode (largest s) of the strongest head.
    ``s``: (layer, head, mode) singular values.

    ``layers`` (first, last; inclusive) restricts the choice to that range (a gallery part, e.g. the first third
    of the layers): the n modes are then the strongest modes of the strongest heads of every layer of the range,
    ``ceil(n / layers in the range)`` heads per layer, in layer order, the last layer's surplus dropped."""
    n_layers = s.shape[0]
    if layers is None:
        chosen = sorted({round(float(x)) for x in np.linspace(1, n_layers - 2, n)}) if n_layers > 2 else [0]
        return [(layer, int(np.argmax(s[layer][:, 0])), 0, "+") for layer in chosen]
    first, last = check_layer_range(layers, n_layers)
    per_layer = -(-n // (last - first + 1))
    out = [
        (layer, int(head), 0, "+")
        for layer in range(first, last + 1)
        for head in np.argsort(-s[layer][:, 0], kind="stable")[:per_layer]
    ]
    return out[:n]


#: candidates per automatic mode: the strongest mode of this many of the layer's strongest heads
CANDIDATES = 3
#: a candidate head's largest singular value is at least this share of the layer's largest
STRONG = 0.5


def candidate_modes(s: np.ndarray, chosen: Sequence[Mode], per: int = CANDIDATES) -> list[list[Mode]]:
    """For each automatically chosen mode (the strongest mode of a strong head, :func:`spread_modes`), the modes it
    may be swapped for: itself first, then the strongest mode of the next strongest heads of its layer whose
    largest singular value is at least :data:`STRONG` of the layer's largest, not chosen already; ``per`` at
    most. ``s``: (layer, head, mode) singular values."""
    taken = {(m[0], m[1]) for m in chosen}
    out: list[list[Mode]] = []
    for m in chosen:
        layer = m[0]
        top = s[layer][:, 0]
        heads = [int(h) for h in np.argsort(-top, kind="stable") if top[h] >= STRONG * top.max()]
        others = [(layer, h, 0, "+") for h in heads if (layer, h) not in taken]
        out.append([m, *others[: per - 1]])
    return out


def map_coherence(maps: np.ndarray) -> float:
    """How concentrated (spatially coherent) maps (..., g_h, g_w) are: the mean over maps of the correlation of
    each map with its copy shifted by one patch (right and down, averaged). A map of one or a few compact regions
    is near 1; a noise-like map (values independent from patch to patch) near 0; a map peaking on a single patch
    near 0 too."""
    x = np.asarray(maps, dtype=np.float64)
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    var = (x * x).mean(axis=(-2, -1))

    def lag(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).mean(axis=(-2, -1))

    with np.errstate(invalid="ignore", divide="ignore"):
        r = 0.5 * (lag(x[..., :, 1:], x[..., :, :-1]) + lag(x[..., 1:, :], x[..., :-1, :])) / var
    return float(np.nanmean(np.where(var > 0, r, np.nan))) if r.size else float("nan")


def most_coherent(candidates: Sequence[Sequence[Mode]], coherence: Sequence[Sequence[float]]) -> list[Mode]:
    """Per slot, the candidate whose maps are most coherent (the first, the strongest, on ties and NaN); a mode
    already picked for an earlier slot is not picked again."""
    picked: list[Mode] = []
    for modes, values in zip(candidates, coherence, strict=True):
        order = sorted(range(len(modes)), key=lambda i: (-np.nan_to_num(values[i], nan=-np.inf), i))
        picked.append(next(modes[i] for i in order if modes[i] not in picked))
    return picked


def check_layer_range(layers: Sequence[int], n_layers: int) -> tuple[int, int]:
    """(first, last) of an inclusive layer range, refused unless 0 <= first <= last < n_layers."""
    first, last = (int(v) for v in layers)
    if not 0 <= first <= last < n_layers:
        raise ValueError(f"layer range [{first}, {last}] is not inside 0-{n_layers - 1} (first <= last, 0-based)")
    return first, last


def contrast_modes(s: np.ndarray, cosine: np.ndarray) -> list[Mode]:
    """Two illustrative modes (Fig. 1): among each layer's strong modes (top 10% of s), the most positive cosine
    at about 60% depth (grouping) and the most negative at about 85% (contextualisation)."""
    out: list[Mode] = []
    n_layers = s.shape[0]
    for frac, pick in ((0.6, np.argmax), (0.85, np.argmin)):
        layer = round(frac * (n_layers - 1))
        out.append(_strong_pick(s[layer], cosine[layer], layer, pick))
    return out


def _strong_pick(s: np.ndarray, cosine: np.ndarray, layer: int, pick: Any) -> Mode:
    """Among a layer's strong modes (top 10% of s), the one ``pick`` (argmax / argmin) chooses by cosine."""
    cos = np.where(s >= np.quantile(s, 0.9), cosine, np.nan)
    flat = pick(np.nan_to_num(cos, nan=-np.inf if pick is np.argmax else np.inf))
    head, mode = np.unravel_index(int(flat), s.shape)
    return (layer, int(head), int(mode), "+")


def text_modes(s: np.ndarray, cosine: np.ndarray, n_layers: int = 3) -> list[Mode]:
    """In the first, middle and last layer, among its strong modes (top 10% of s), the most positive cosine
    (grouping) and the most negative (contextualising)."""
    total = s.shape[0]
    layers = sorted({round(float(x)) for x in np.linspace(0, total - 1, n_layers)})
    return [_strong_pick(s[layer], cosine[layer], layer, pick) for layer in layers for pick in (np.argmax, np.argmin)]


def contributions(plus: np.ndarray, minus: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(layer, head, mode) contribution of every mode on one image: ``s_n * max(score+, score-)``, the largest
    rank-one logit term the mode can produce between two tokens of that image (ours: the paper does not define
    it). ``plus``/``minus``: the image's scores ``max q * max k`` and ``min q * min k``."""
    return np.maximum(plus, minus) * s


def best_sign(plus: np.ndarray, minus: np.ndarray, layer: int, head: int, mode: int) -> str:
    """The sign under which a mode acts on the image: "+" unless its min * min score is larger."""
    return "+" if plus[layer, head, mode] >= minus[layer, head, mode] else "-"


def image_layer_heads(contrib: np.ndarray, n: int = 3) -> list[tuple[int, int]]:
    """n layers spread over depth, each with the head whose strongest mode contributes most on the image."""
    n_layers = contrib.shape[0]
    layers = sorted({round(float(x)) for x in np.linspace(1, max(1, n_layers - 2), n)})
    return [(layer, int(np.argmax(contrib[layer].max(axis=-1)))) for layer in layers]


def image_depth_modes(contrib: np.ndarray, plus: np.ndarray, minus: np.ndarray, n: int = 6) -> list[Mode]:
    """n modes of one image spread over depth (S17-S19): n layers evenly from a quarter of the depth to the last
    layer, in each the mode (any head) contributing most on the image, with its sign. Early layers, where the
    largest contributions sit (colour, position), are left out so that the modes say something of the object."""
    n_layers = contrib.shape[0]
    start = round(0.25 * (n_layers - 1))
    layers = sorted({round(float(x)) for x in np.linspace(start, n_layers - 1, n)})
    out: list[Mode] = []
    for layer in layers:
        head, mode = (int(v) for v in np.unravel_index(int(np.argmax(contrib[layer])), contrib[layer].shape))
        out.append((layer, head, mode, best_sign(plus, minus, layer, head, mode)))
    return out


def degenerate_block(block: np.ndarray, mode: int) -> tuple[int, int] | None:
    """(first, last) mode of the block of near-equal singular values holding ``mode`` (``block``: the head's
    block ids), or None when the mode is alone: then its u and v are identifiable; inside a block only the
    block's sum ``sum_n s_n u_n v_n^T`` is (any rotation of its vectors is as valid)."""
    ids = np.asarray(block)
    members = np.flatnonzero(ids == ids[mode])
    return (int(members[0]), int(members[-1])) if members.size > 1 else None
