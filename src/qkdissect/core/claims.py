"""The paper's checkable claims (paper.md section 5), evaluated per model on the numbers a run computed.

The paper prints no number for any curve, so every claim is turned into a stated rule on per-layer values: a
layer is *early* at normalised depth <= 1/3 and *late* at depth >= 2/3; "about 0" means at or below the upper
end of the model's own 95% null interval of a single mode's cosine (a conservative bound for a layer average);
a *late rise* (the "concave" trend) is the last layer's value minus the minimum over the second half of the
depth, a rise when above :data:`RISE`; "most models" means more than half of those evaluated. Arrays in,
verdicts out; :mod:`qkdissect.provenance.claims` reads the stores and writes the page.

Beyond the paper, claims of our own (ids ``A``...), on what this tool measures that the paper does not: A1, that
the modes whose top images score highest are the ones whose removal changes their head's attention most on those
images (:func:`within_head_spearman`, from an ablation store).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

EARLY, LATE = 1 / 3, 2 / 3
#: the smallest rise over the last layers that counts as the "concave" trend
RISE = 0.05
#: claim A1's bootstrap over heads: resamples and the seed of its generator
BOOTSTRAP, SEED = 2000, 0
#: the models the paper names as concave (claim 3) and as not concave
CONCAVE = (
    "simmim-vit-b16-pretrain", "dino-vits16", "dino-vitb16", "deit-tiny-distilled-patch16-224",
    "deit-small-distilled-patch16-224", "deit-base-distilled-patch16-224", "vit-huge-patch14-224-in21k",
)  # fmt: skip
NOT_CONCAVE = (
    "simmim-vit-b16-finetune", "ijepa-vith14-encoder", "clip-vit-base-patch16", "clip-vit-base-patch32",
    "clip-vit-large-patch14", "vit-base-patch16-224", "vit-base-patch32-384", "vit-large-patch16-224",
    "vit-large-patch32-384",
)  # fmt: skip
SIMMIM = ("simmim-vit-b16-pretrain", "simmim-vit-b16-finetune")


@dataclass
class Curve:
    """One model's per-layer values at their normalised depths."""

    depth: np.ndarray
    values: np.ndarray

    def early(self) -> float:
        return float(np.nanmean(self.values[self.depth <= EARLY]))

    def late(self) -> float:
        return float(np.nanmean(self.values[self.depth >= LATE]))

    def mean(self) -> float:
        return float(np.nanmean(self.values))


@dataclass
class ModeEffects:
    """One model's ablated modes, (layer, head, mode) arrays with NaN where a mode was not ablated: the mean image
    score of its top images in the ablated set, its ablation's attention KL on those images, its singular value."""

    score: np.ndarray
    effect: np.ndarray
    singular_value: np.ndarray
    images: str = ""


@dataclass
class Inputs:
    """What the claims are evaluated on, per model (each part optional)."""

    weighted: Mapping[str, Curve] = field(default_factory=dict)  # Fig. 3: sigma-weighted layer cosine
    null_high: Mapping[str, float] = field(default_factory=dict)  # upper end of each model's 95% null interval
    anisotropy: Mapping[str, Curve] = field(default_factory=dict)  # Fig. S4 A
    preference: Mapping[str, Mapping[str, Curve]] = field(default_factory=dict)  # Fig. 2: same/different/background
    same_object: Mapping[str, Curve] = field(default_factory=dict)  # Fig. 6
    s3: tuple[Curve, Curve] | None = None  # Fig. S3: (encoder, predictor)
    datasets: Mapping[str, str] = field(default_factory=dict)  # "preference" / "same_object" -> dataset name
    ablation: Mapping[str, ModeEffects] = field(default_factory=dict)  # claim A1: each model's ablated modes


@dataclass
class Verdict:
    """One claim: the paper's words, the rule, per-model numbers and checks, and the overall verdict."""

    id: str
    figure: str
    claim: str
    rule: str
    models: dict[str, dict[str, Any]]
    holds: bool | None  # None: not evaluated (no model of the claim in this run)
    summary: str

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()}


#: each claim: the figure, the paper's words, and the rule it is checked by here
TEXTS: dict[str, tuple[str, str, str]] = {
    "1": ("Fig. 3", "The weighted average cosine is high in early layers and decreases in deeper layers in most "
          "models.", "early mean > the model's null upper bound, and early mean > late mean; holds when true for "
          "more than half of the models"),
    "2": ("Fig. 3", "In some models the averaged cosine drops to about 0 in some middle layers.", "minimum over "
          "layers at depth 0.2-0.8 <= the model's null upper bound; holds when true for at least one model"),
    "3": ("Fig. 3", "A concave trend (a rise in the last layers) in SimMIM-pretrain, the DINO and DeiT models and "
          "ViT-huge; not in SimMIM-finetune, the I-JEPA encoder, CLIP and ViT base/large.", f"late rise (last "
          f"layer minus the minimum over depth >= 0.5) > {RISE} exactly for the models the paper calls concave"),
    "4": ("Fig. S3", "The I-JEPA predictor's cosine is overall high.", "mean over layers of the predictor's "
          "weighted cosine > the encoder's"),
    "5a": ("Fig. S4 A", "The mean cosine between centre tokens of different images is > 0 in all models and "
           "layers.", "minimum over layers > 0 in every model"),
    "5b": ("Fig. S4 B", "After subtracting the anisotropy, the early-to-late trend persists.", "early mean > late "
           "mean of (weighted cosine - anisotropy); more than half of the models"),
    "6a": ("Fig. 2", "Same-object attention is dominant in early layers for most models.", "same-object "
           "attention: early mean > late mean, and > different-object attention early; more than half of the "
           "models"),
    "6b": ("Fig. 2", "Attention to the background and to different objects grows with depth.", "late mean > early "
           "mean for both; more than half of the models"),
    "6c": ("Fig. 2", "SimMIM-pretrain has more same-object attention in later layers; this disappears after "
           "fine-tuning (SimMIM-finetune).", "late same-object attention: pretrain > finetune, and pretrain > the "
           "median of the other models"),
    "7": ("Fig. 6", "P(same object) is higher in early layers than late ones, with large variability between "
          "models.", "early mean > late mean; more than half of the models"),
    "A1": ("Ablation (ours)", "The modes whose top images score highest are the ones whose removal changes their "
           "head's attention most on those images.", "per head, the Spearman correlation rho across its ablated "
           "modes (3 or more) between a mode's top-image score (the paper's image score, max q * max k, mean over "
           "its top images in the ablated set) and the attention KL of its zero-ablation on those images; a model "
           f"holds when the mean rho over heads is > 0 with its 95% bootstrap interval over heads ({BOOTSTRAP} "
           f"resamples, seed {SEED}) above 0; holds when true for more than half of the models. For comparison: "
           "the same rho with the singular value s_n in place of the score"),
}  # fmt: skip


def _verdict(cid: str, models: dict[str, dict[str, Any]], holds: bool | None, summary: str, data: str = "") -> Verdict:
    figure, claim, rule = TEXTS[cid]
    return Verdict(cid, figure + (f" ({data})" if data else ""), claim, rule, models, holds, summary)


def _most(models: Mapping[str, Mapping[str, Any]]) -> tuple[bool | None, str]:
    n = len(models)
    ok = sum(bool(m["holds"]) for m in models.values())
    return (None, "no model evaluated") if n == 0 else (ok > n / 2, f"{ok} of {n} models")


def _r(x: float) -> float:
    return round(float(x), 4)


def _high_early(inp: Inputs) -> Verdict:
    per = {}
    for name, c in inp.weighted.items():
        nh = inp.null_high.get(name, 0.0)
        holds = c.early() > nh and c.early() > c.late()
        per[name] = {"early": _r(c.early()), "late": _r(c.late()), "null_high": _r(nh), "holds": holds}
    return _verdict("1", per, *_most(per))


def _about_zero(inp: Inputs) -> Verdict:
    per = {}
    for name, c in inp.weighted.items():
        middle = (c.depth > 0.2) & (c.depth < 0.8)
        low = float(np.nanmin(c.values[middle])) if middle.any() else float("nan")
        nh = inp.null_high.get(name, 0.0)
        per[name] = {"middle_min": _r(low), "null_high": _r(nh), "holds": bool(low <= nh)}
    n_ok = sum(m["holds"] for m in per.values())
    return _verdict("2", per, None if not per else n_ok > 0, f"{n_ok} of {len(per)} models")


def late_rise(c: Curve) -> float:
    """The last layer's value minus the minimum over the second half of the depth."""
    return float(c.values[-1] - np.nanmin(c.values[c.depth >= 0.5]))


def _concave(inp: Inputs) -> Verdict:
    per: dict[str, dict[str, Any]] = {}
    for name, c in inp.weighted.items():
        rise = late_rise(c)
        if name not in CONCAVE + NOT_CONCAVE:
            per[name] = {"rise": _r(rise), "paper": "not named", "holds": None}
        else:
            expected = name in CONCAVE
            paper = "concave" if expected else "not concave"
            per[name] = {"rise": _r(rise), "paper": paper, "holds": (rise > RISE) == expected}
    named = {k: v for k, v in per.items() if v["holds"] is not None}
    ok = sum(bool(v["holds"]) for v in named.values())
    summary = f"{ok} of {len(named)} named models as the paper says" if named else "no named model in this run"
    return _verdict("3", per, None if not named else ok == len(named), summary)


def _predictor(inp: Inputs) -> Verdict:
    if inp.s3 is None:
        return _verdict("4", {}, None, "no I-JEPA predictor in this run")
    enc, pred = inp.s3
    holds = pred.mean() > enc.mean()
    per = {"predictor": {"mean": _r(pred.mean()), "encoder_mean": _r(enc.mean()), "holds": holds}}
    return _verdict("4", per, bool(holds), f"predictor {pred.mean():+.3f}, encoder {enc.mean():+.3f}")


def _anisotropy(inp: Inputs) -> list[Verdict]:
    pos, rel = {}, {}
    for name, a in inp.anisotropy.items():
        pos[name] = {"min": _r(np.nanmin(a.values)), "holds": bool(np.nanmin(a.values) > 0)}
        if name in inp.weighted:
            r = Curve(a.depth, inp.weighted[name].values - a.values)
            rel[name] = {"early": _r(r.early()), "late": _r(r.late()), "holds": r.early() > r.late()}
    n_pos = sum(bool(v["holds"]) for v in pos.values())
    all_pos = None if not pos else n_pos == len(pos)
    return [_verdict("5a", pos, all_pos, f"{n_pos} of {len(pos)} models"), _verdict("5b", rel, *_most(rel))]


def _o3(inp: Inputs) -> list[Verdict]:
    data = inp.datasets.get("preference", "")
    early, grow = {}, {}
    for name, g in inp.preference.items():
        same, diff, back = g["same"], g["different"], g["background"]
        early[name] = {
            "same_early": _r(same.early()),
            "same_late": _r(same.late()),
            "different_early": _r(diff.early()),
            "holds": same.early() > same.late() and same.early() > diff.early(),
        }
        grow[name] = {
            "background": [_r(back.early()), _r(back.late())],
            "different": [_r(diff.early()), _r(diff.late())],
            "holds": back.late() > back.early() and diff.late() > diff.early(),
        }
    return [_verdict("6a", early, *_most(early), data), _verdict("6b", grow, *_most(grow), data), _simmim(inp, data)]


def _simmim(inp: Inputs, data: str) -> Verdict:
    pre, fine = (inp.preference.get(m) for m in SIMMIM)
    if pre is None or fine is None:
        return _verdict("6c", {}, None, "the SimMIM models are not in this run", data)
    others = [g["same"].late() for n, g in inp.preference.items() if n not in SIMMIM]
    median = float(np.median(others)) if others else float("nan")
    holds = pre["same"].late() > fine["same"].late() and (not others or pre["same"].late() > median)
    per = {
        "simmim-vit-b16-pretrain": {"same_late": _r(pre["same"].late())},
        "simmim-vit-b16-finetune": {"same_late": _r(fine["same"].late())},
        "the others (median)": {"same_late": _r(median)},
    }
    return _verdict("6c", per, bool(holds), "pretrain vs finetune vs the others", data)


def _ade20k(inp: Inputs) -> Verdict:
    per = {}
    for name, c in inp.same_object.items():
        per[name] = {"early": _r(c.early()), "late": _r(c.late()), "holds": c.early() > c.late()}
    holds, summary = _most(per)
    spread = float(np.std([c.mean() for c in inp.same_object.values()])) if len(per) > 1 else float("nan")
    summary += f"; spread between models (std of their means) {spread:.3f}"
    return _verdict("7", per, holds, summary, inp.datasets.get("same_object", ""))


def within_head_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(layer, head, mode) -> (layer, head): the Spearman rank correlation of ``x`` and ``y`` across the modes of
    each head where both are finite (ties ranked by their mean rank); NaN for a head with fewer than 3 such modes or
    a constant ranking."""
    ok = np.isfinite(x) & np.isfinite(y)
    rx, ry = (rankdata(np.where(ok, a, np.nan), axis=-1, nan_policy="omit") for a in (x, y))
    n = ok.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = np.where(ok, rx - np.nanmean(np.where(ok, rx, np.nan), axis=-1, keepdims=True), 0.0)
        dy = np.where(ok, ry - np.nanmean(np.where(ok, ry, np.nan), axis=-1, keepdims=True), 0.0)
        rho = (dx * dy).sum(-1) / np.sqrt((dx * dx).sum(-1) * (dy * dy).sum(-1))
    return np.where(n >= 3, rho, np.nan)


def bootstrap_mean(
    values: np.ndarray, n: int = BOOTSTRAP, seed: int = SEED, level: float = 0.95
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``values`` (finite ones; NaN, NaN for none)."""
    v = values[np.isfinite(values)]
    if not len(v):
        return float("nan"), float("nan")
    means = v[np.random.default_rng(seed).integers(0, len(v), (n, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _mean(values: np.ndarray, axis: int | None = None) -> Any:
    """The mean of the finite values (along ``axis``), None where there are none; rounded (:func:`_r`)."""
    ok = np.isfinite(values)
    n, total = ok.sum(axis=axis), np.where(ok, values, 0.0).sum(axis=axis)
    means = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return [None if np.isnan(m) else _r(m) for m in means] if axis is not None else (_r(float(means)) if n else None)


def _ablation(inp: Inputs) -> Verdict:
    per = {}
    for name, m in inp.ablation.items():
        rho = within_head_spearman(m.score, m.effect)
        lo, hi = bootstrap_mean(rho.ravel())
        per[name] = {
            "mean_rho": _mean(rho),
            "interval": [_r(lo), _r(hi)],
            "heads": int(np.isfinite(rho).sum()),
            "heads_positive": int((rho > 0).sum()),
            "rho_by_layer": _mean(rho, axis=1),
            "mean_rho_singular_value": _mean(within_head_spearman(m.singular_value, m.effect)),
            "holds": bool(lo > 0),
        }
    images = next((m.images for m in inp.ablation.values() if m.images), "")
    return _verdict("A1", per, *_most(per), images)


#: the claims, in the paper's order (8 and 9, the semantics of named modes, are for the eye: Fig. 1, 4, S5-S19),
#: then our own
CLAIMS: tuple[Callable[[Inputs], Verdict | list[Verdict]], ...] = (
    _high_early,
    _about_zero,
    _concave,
    _predictor,
    _anisotropy,
    _o3,
    _ade20k,
    _ablation,
)


def evaluate(inp: Inputs) -> list[Verdict]:
    """Every checkable claim of the paper on these numbers, in the paper's order."""
    out: list[Verdict] = []
    for claim in CLAIMS:
        v = claim(inp)
        out.extend(v if isinstance(v, list) else [v])
    return out
