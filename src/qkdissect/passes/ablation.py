"""The ablation pass: what removing a mode does to its head and to the model.

For each selected (layer, head, mode) and each image, the mode's term ``(x_i . u_n) s_n (v_n . x_j)`` is taken out
of the head's attention logits, on exactly the tokens W_q and W_k see (the output of the block's norm; the bias
terms stay), as an additive attention bias ``-scale * term`` handed to the model's own attention call
(``scaled_dot_product_attention``'s ``attn_mask``, or added to the input of the softmax on the eager path):
the model's attention still runs, and nothing else changes. Mean-ablation (``mean=True``) replaces the term by
its mean over the image set instead: at every (query position, key position) pair, the mean over the set's
images of ``(x_i . u_n) s_n (v_n . x_j)`` (a first pass over the images computes it).

Measured (:data:`qkdissect.core.ablation.METRICS`): the head's attention change (KL and share of attention moved,
per query token, from the head's logits in float64 with and without the bias) and the model's output change
(classifiers: KL of the class distribution and top-1 flips; every model: 1 - cos of the pooled embedding).

Speed: one forward pass per image batch gives the model's outputs, the residual stream entering every ablated
layer and the tokens its attention sees; each ablation then runs from its layer onward only, many at once: rows
of (image, ablation) stacked along the batch, as many as fit in a memory budget, with one bias per row.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch.overrides import TorchFunctionMode

from ..core.ablation import METRICS, Outputs, attention_change, mode_projections, output_change
from ..errors import QKDissectError
from ..models import QKWeights
from ..models.qk import qk_from_weights
from ..requests import AblationRequest
from ..stores.schema import ablation_dataset
from ..util.clock import utc_now
from .hooks import layer_token_hooks
from .io import StoreLike, finish
from .loop import ImageModel, ImageStream, load_image_model, modes_of, pass_record, store_of

#: the strongest modes of every head that ``select="auto"`` ablates
AUTO_MODES = 4
#: the most (image, ablation) rows in one forward pass, and the memory their biases and activations may take
MAX_ROWS = 128
ROW_BUDGET = 1 << 30

_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax}


# ------------------------------------------------------------------------------------------- which modes
@dataclass(frozen=True)
class Selection:
    """The ablated modes, one per ablation, sorted by (layer, head, mode)."""

    layer: np.ndarray
    head: np.ndarray
    mode: np.ndarray

    def __len__(self) -> int:
        return len(self.layer)


def select_modes(select: str | Sequence[Any], shape: tuple[int, int, int]) -> Selection:
    """The modes ``select`` names in a (layer, head, mode) grid: ``auto`` (the :data:`AUTO_MODES` strongest of
    every head), ``top:N`` (the N strongest of every head), ``all``, or modes ``"L,H,M"`` / ``(L, H, M)``."""
    n_layers, n_heads, n_modes = shape
    items = [select] if isinstance(select, str) else list(select)
    chosen = np.zeros(shape, bool)
    for item in items:
        text = item if isinstance(item, str) else ",".join(map(str, item))
        if text in ("auto", "all") or text.startswith("top:"):
            n = {"auto": AUTO_MODES, "all": n_modes}.get(text) or _count(text[4:], text)
            chosen[..., : min(n, n_modes)] = True
            continue
        try:
            layer, head, mode = (int(p) for p in text.split(","))
        except ValueError:
            raise QKDissectError(f"ablate: mode {text!r} is not auto, all, top:N or L,H,M (e.g. 3,1,0)") from None
        if not (0 <= layer < n_layers and 0 <= head < n_heads and 0 <= mode < n_modes):
            raise QKDissectError(
                f"ablate: mode {text!r} is outside the modes store's (layer, head, mode) = {shape} (0-based)"
            )
        chosen[layer, head, mode] = True
    if not chosen.any():
        raise QKDissectError("ablate: no modes selected: give auto, all, top:N or L,H,M")
    return Selection(*np.nonzero(chosen))


def _count(text: str, item: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise QKDissectError(f"ablate: {item!r}: N of top:N must be a whole number >= 1 (e.g. top:4)")
    return int(text)


@dataclass
class Ablations:
    """What each ablation removes from which head: the k modes (``u``, ``v``: (ablation, d, k), ``s``:
    (ablation, k); a padding mode has s = 0) of head ``head`` of layer ``layer``; ``mean``: (ablation, token,
    token) the mean term over the image set that mean-ablation keeps (None: zero-ablation)."""

    layer: torch.Tensor
    head: torch.Tensor
    u: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor
    mean: torch.Tensor | None = None

    @classmethod
    def of_modes(cls, modes: xr.Dataset, sel: Selection) -> Ablations:
        """One ablation per selected mode of a modes store (float64)."""
        u, s, v = (torch.as_tensor(modes[n].values, dtype=torch.float64) for n in ("U", "S", "V"))
        at = (torch.as_tensor(sel.layer), torch.as_tensor(sel.head))
        m = torch.as_tensor(sel.mode)
        return cls(at[0], at[1], u[*at, :, m][..., None], s[*at, m][:, None], v[*at, :, m][..., None])

    def __len__(self) -> int:
        return len(self.layer)


# ------------------------------------------------------------------------------ a bias in the model's attention
class _AddBias(TorchFunctionMode):
    """Adds ``bias`` (batch, head, query, key) to the attention logits where the model hands them over: the
    ``attn_mask`` of ``scaled_dot_product_attention`` (added to one it already has) or the input of the softmax."""

    def __init__(self, bias: torch.Tensor) -> None:
        super().__init__()
        self.bias, self.calls = bias, 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if func is F.scaled_dot_product_attention:
            self.calls += 1
            args = tuple(args)
            given = args[3] if len(args) > 3 else kwargs.get("attn_mask")
            mask = self.bias if given is None else _as_additive(given, self.bias) + self.bias
            if len(args) > 3:
                args = (*args[:3], mask, *args[4:])
            else:
                kwargs["attn_mask"] = mask
        elif func in _SOFTMAX:
            self.calls += 1
            args = (args[0] + self.bias, *args[1:])
        return func(*args, **kwargs)


def _as_additive(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A boolean attention mask (True: attend) as the additive one it stands for."""
    if mask.dtype != torch.bool:
        return mask.to(like.dtype)
    return torch.zeros((), dtype=like.dtype, device=like.device).masked_fill(~mask, float("-inf"))


@contextmanager
def attention_bias(attention: torch.nn.Module, bias: torch.Tensor | None) -> Iterator[None]:
    """While active, ``attention`` (an attention module) adds ``bias`` (batch, head, query, key) to its
    pre-softmax logits, after the logit scale; None: the module is left alone."""
    if bias is None:
        yield
        return
    own = attention.__dict__.get("forward")
    original = attention.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        with _AddBias(bias) as mode:
            out = original(*args, **kwargs)
        if mode.calls != 1:
            raise RuntimeError(
                f"{type(attention).__name__} made {mode.calls} attention calls (scaled_dot_product_attention or "
                "softmax), not one: the ablation bias cannot be placed"
            )
        return out

    attention.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own is None:
            del attention.forward
        else:
            attention.forward = own  # type: ignore[method-assign]


# ------------------------------------------------------------------------------------- running the model
@dataclass
class Baseline:
    """A batch as the model runs it: its outputs, and for each ablated layer the residual stream entering the
    block and the tokens the block's W_q and W_k see (batch, token, d)."""

    outputs: Outputs
    residual: dict[int, torch.Tensor]
    tokens: dict[int, torch.Tensor]


class TimmRunner:
    """A timm VisionTransformer in two parts: the whole forward pass (keeping what enters the ablated layers), and
    the pass from one layer onward, with a bias in that layer's attention. ``classifier``: its class logits are
    outputs too (default: when it has classes)."""

    def __init__(self, model: torch.nn.Module, qk: QKWeights, name: str, classifier: bool | None = None) -> None:
        blocks = getattr(model, "blocks", None)
        parts = all(hasattr(model, a) for a in ("forward_features", "forward_head", "norm"))
        if qk.adapter != "timm-vit" or blocks is None or not parts:
            raise QKDissectError(
                f"ablate: {name} is a {qk.adapter} model; the ablation pass runs timm vision transformers (timm "
                "VisionTransformer, as timm:... and imgfocus:... specs load them) for now"
            )
        if qk.rotary is not None:
            raise QKDissectError(f"ablate: {name} has rotary position embeddings: their modes are not ablated yet")
        if any(b.attn is not a.attention for b, a in zip(blocks, qk.layers, strict=True)):
            raise QKDissectError(f"ablate: {name}'s blocks are not the layers its query-key weights came from")
        self.model, self.qk, self.blocks = model, qk, list(blocks)
        has_classes = int(getattr(model, "num_classes", 0) or 0) > 0
        self.classifier = has_classes if classifier is None else classifier and has_classes

    def outputs(self, features: torch.Tensor) -> Outputs:
        """The class logits (classifiers) and the pooled embedding of the final features."""
        m: Any = self.model
        logits = m.forward_head(features) if self.classifier else None
        return Outputs(logits, m.forward_head(features, pre_logits=True))

    def baseline(self, x: torch.Tensor, layers: Sequence[int]) -> Baseline:
        """The whole forward pass of ``x``: the outputs (those of ``model(x)``, bit for bit) and what enters the
        ``layers``."""
        residual: dict[int, torch.Tensor] = {}
        tokens: dict[int, torch.Tensor] = {}
        handles = [
            self.blocks[i].register_forward_pre_hook(lambda _m, a, i=i: residual.__setitem__(i, a[0])) for i in layers
        ]
        try:
            with layer_token_hooks(self.qk, "post-norm", tokens.__setitem__, list(layers)):
                features = self.model.forward_features(x)  # type: ignore[operator]
        finally:
            for h in handles:
                h.remove()
        return Baseline(self.outputs(features), residual, tokens)

    def tail(self, h: torch.Tensor, layer: int, bias: torch.Tensor | None) -> Outputs:
        """The model from ``layer`` on: ``h`` (rows, token, d) enters the block, ``bias`` (rows, head, token, token)
        joins its attention logits."""
        with attention_bias(self.qk.layers[layer].attention, bias):
            for block in self.blocks[layer:]:
                h = block(h)
        return self.outputs(self.model.norm(h))  # type: ignore[operator]


class Ablator:
    """Measures every ablation on a batch of images: :data:`METRICS` per (image, ablation)."""

    def __init__(self, runner: TimmRunner, ablations: Ablations, *, outputs: bool = True) -> None:
        self.runner, self.ab, self.outputs = runner, ablations, outputs
        self.layers = sorted({int(i) for i in ablations.layer})
        qk = runner.qk
        self.scale = torch.tensor([a.scale for a in qk.layers], dtype=torch.float64)
        self.metrics = ["attention_kl", "attention_moved"]
        if outputs:
            self.metrics += ["output_kl", "top1_flipped"] if runner.classifier else []
            self.metrics.append("embedding_distance")

    def _projections(self, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer's ablations (their indices) and the tokens projected onto their modes, ``x.u * s`` and ``x.v``
        (batch, ablation, token, k), float64."""
        idx = torch.nonzero(self.ab.layer == layer).flatten()
        x = x.double()
        return idx, *mode_projections(x, self.ab.u[idx].to(x), self.ab.s[idx].to(x), self.ab.v[idx].to(x))

    def term_sums(self, x: torch.Tensor) -> torch.Tensor:
        """(ablation, token, token): each ablation's term summed over the images of a batch (for the mean)."""
        base = self.runner.baseline(x, self.layers)
        parts = []
        for layer in self.layers:
            _, q, k = self._projections(layer, base.tokens[layer])
            parts.append(torch.einsum("batk,bask->ats", q, k))
        return torch.cat(parts)

    def _rows(self, n_images: int, n_ablations: int, n_tokens: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(image, ablation) index pairs in chunks that fit :data:`ROW_BUDGET`."""
        qk = self.runner.qk
        per_row = n_tokens * n_tokens * (48 + (4 * qk.n_heads if self.outputs else 0))
        per_row += 48 * n_tokens * qk.d_model if self.outputs else 0
        size = max(1, min(MAX_ROWS, ROW_BUDGET // per_row))
        b, a = torch.meshgrid(torch.arange(n_images), torch.arange(n_ablations), indexing="ij")
        b, a = b.flatten(), a.flatten()
        for start in range(0, len(b), size):
            yield b[start : start + size], a[start : start + size]

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, ablation, metric) float64 for the images ``x``."""
        base = self.runner.baseline(x, self.layers)
        out = torch.full((x.shape[0], len(self.ab), len(self.metrics)), float("nan"), dtype=torch.float64)
        for layer in self.layers:
            tokens = base.tokens[layer]
            idx, pq, pk = self._projections(layer, tokens)
            q, k = qk_from_weights(self.runner.qk, layer, tokens)
            for b, a in self._rows(x.shape[0], len(idx), tokens.shape[1]):
                found = self._measure(layer, base, b, idx[a], pq[b, a] @ pk[b, a].transpose(-1, -2), q, k)
                out[b, idx[a]] = torch.stack([found[m].cpu() for m in self.metrics], dim=-1)
        return out

    def _measure(
        self, layer: int, base: Baseline, b: torch.Tensor, a: torch.Tensor, term: torch.Tensor, q: torch.Tensor,
        k: torch.Tensor,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """The metrics of rows (image ``b``, ablation ``a``) whose removed term is ``term`` (row, token, token)."""
        if self.ab.mean is not None:
            term = term - self.ab.mean[a].to(term)
        bias = -self.scale[layer] * term
        head = self.ab.head[a]
        logits = (q[b, head] @ k[b, head].transpose(-1, -2)) * self.scale[layer]
        found = attention_change(logits, bias)
        if self.outputs:
            h = base.residual[layer][b]
            n_heads, t = self.runner.qk.n_heads, term.shape[-1]
            mask = torch.zeros(len(b), n_heads, t, t, dtype=h.dtype, device=h.device)
            mask[torch.arange(len(b)), head.to(h.device)] = bias.to(h)
            found.update(output_change(base.outputs[b], self.runner.tail(h, layer, mask)))
        return found


# ------------------------------------------------------------------------------------------------ the pass
def _top_images(proj: xr.Dataset, sel: Selection, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image, ablation) True where the image is one of the ablated mode's top images (either sign, every rank)
    in the projections store; its top images outside this image set count nowhere. And (ablation,) the mean of
    the image score of the mode's top-image slots (sign, rank) that lie in this set (NaN: none does)."""
    ids = _text(proj.top_image_id.values[sel.layer, sel.head, sel.mode]).reshape(len(sel), -1)
    scores = np.asarray(proj.top_score.values[sel.layer, sel.head, sel.mode], np.float64).reshape(len(sel), -1)
    mine = _text(image_ids)
    order = np.argsort(mine)
    at = np.minimum(np.searchsorted(mine[order], ids), len(mine) - 1)  # (ablation, sign * rank)
    found = mine[order][at] == ids
    top = np.zeros((len(mine), len(sel)), bool)
    top[order[at][found], np.nonzero(found)[0]] = True
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(found, scores, 0.0).sum(axis=1) / found.sum(axis=1)
    return top, score


def _text(ids: Any) -> np.ndarray:
    """Ids (object or numpy string arrays, as a store gives them back) as a fixed-width unicode array."""
    flat = np.asarray(ids, dtype=object).ravel()
    return np.array([str(i) for i in flat], dtype=str).reshape(np.shape(ids))


def _projections_of(projections: StoreLike, im: ImageModel, shape: tuple[int, ...]) -> tuple[xr.Dataset, list]:
    proj, deps = store_of(projections, "projections", im, "project again")
    if proj.top_image.shape[:3] != shape:
        raise QKDissectError(
            f"ablate: {projections} ranks images for (layer, head, mode) = {proj.top_image.shape[:3]}, the modes "
            f"store has {shape}: give the projections made from these modes"
        )
    return proj, deps


def _checked_modes(modes: StoreLike, im: ImageModel) -> tuple[xr.Dataset, list]:
    ds, deps = modes_of(modes, im)
    if ds.attrs.get("folding", "raw") != "raw":
        raise QKDissectError(
            f"ablate: the modes store is of {ds.attrs['folding']} weights; ablation needs the modes of the raw "
            "W_q^T W_k (qkdissect modes --folding raw)"
        )
    return ds, deps


def compute_ablation(*args: Any, **kw: Any) -> xr.Dataset:
    """:func:`run_ablation` of ``AblationRequest.build(spec, modes, images, output, select=..., ...)``."""
    return run_ablation(AblationRequest.build(*args, **kw))


def run_ablation(r: AblationRequest) -> xr.Dataset:
    """Ablate the modes ``select`` names (:func:`select_modes`) one at a time on every image of ``images`` ->
    an ablation dataset (written to ``output`` when given): per (layer, head, mode) the mean of each metric over
    the image set (subset ``all``) and over the mode's own top images in ``projections`` (subset ``top``), and
    each image's values. ``mean``: mean-ablation instead of zero-ablation; ``outputs=False``: the head's attention
    change only (no pass through the rest of the model)."""
    started, t0 = utc_now(), time.perf_counter()
    im = load_image_model(r.model)
    modes_ds, deps = _checked_modes(r.modes, im)
    shape = tuple(modes_ds.S.shape)
    sel = select_modes(r.select, shape)  # type: ignore[arg-type]
    proj = None
    if r.projections is not None:
        proj, pdeps = _projections_of(r.projections, im, shape)
        deps += pdeps
    # a timm checkpoint read from a file leaves the classifier as built (its head.* keys are not loaded): only the
    # hub's pretrained models and models given in memory have a trained head to measure
    trained_head = im.source.origin == "timm hub" or im.source.origin.startswith("in memory")
    runner = TimmRunner(im.model, im.qk, im.name, classifier=trained_head)
    ab = Ablations.of_modes(modes_ds, sel)
    ablator = Ablator(runner, ab, outputs=r.outputs)
    t_load = time.perf_counter() - t0
    if r.mean:
        ab.mean = _mean_terms(ablator, r.images, r.limit, im, r.dedupe, r.batch_size, r.workers, r.progress)
    stream = ImageStream.open(r.images, r.limit, im.preprocess, r.dedupe)
    per_image = np.full((len(stream), len(sel), len(ablator.metrics)), np.nan)
    for _, _, ok, x in stream.batches(r.batch_size, r.workers, f"ablate {im.name}", r.progress):
        if x is not None:
            per_image[np.asarray(ok)] = ablator(x.to(im.device)).numpy()
    coords = stream.coords()
    top, top_score = _top_images(proj, sel, coords["image_id"][1]) if proj is not None else (None, None)
    items = [r.select] if isinstance(r.select, str) else list(r.select)
    given = [m if isinstance(m, str) else ",".join(map(str, m)) for m in items]
    parameters = {"select": given, "mean": r.mean, "outputs": r.outputs, "batch_size": r.batch_size,
                  "device_requested": r.model.device, "limit": r.limit, "dedupe": r.dedupe}  # fmt: skip
    timings = {"load": round(t_load, 3), **stream.rate(), "total": round(time.perf_counter() - t0, 3)}
    record = pass_record("ablation", parameters, im, [*deps, stream.dependency()], r.model.device, started,
                         timings_s=timings)  # fmt: skip
    attrs = {
        "model_id": im.name,
        "spec": str(im.source.spec),
        "ablation": "mean" if r.mean else "zero",
        "output": "classifier" if runner.classifier else "embedding",
        "metrics": {m: METRICS[m] for m in ablator.metrics},
        "token_source": "post-norm",
        "prefix_tokens": list(im.qk.layout.prefix_kinds),
        "grid": list(im.grid),
        "preprocess": im.preprocess.describe(),
        "images": stream.describe(),
        "skipped": stream.skipped[:1000],
        "top_images": None if proj is None else {"top_k": int(proj.sizes["rank"]), "signs": ["+", "-"],
                                                 "image_score": proj.attrs.get("image_score", "released")},
        "weights_sha256": im.source.weights_sha256,
        "provenance": record,
    }  # fmt: skip
    cos = (modes_ds.U * modes_ds.V).sum("dim").values
    ds = ablation_dataset(per_image, sel, ablator.metrics, top, modes_ds.S.values, cos, coords, attrs, top_score)
    return finish(ds, r.output)


def _mean_terms(
    ablator: Ablator, images: str, limit: int | None, im: ImageModel, dedupe: int | None, batch_size: int,
    workers: int | None, progress: bool,
) -> torch.Tensor:  # fmt: skip
    """Mean-ablation: each ablation's term averaged over the image set, (ablation, token, token) float64."""
    stream = ImageStream.open(images, limit, im.preprocess, dedupe)
    total: torch.Tensor | None = None
    with torch.inference_mode():
        for *_, x in stream.batches(batch_size, workers, f"mean terms {im.name}", progress):
            if x is not None:
                part = ablator.term_sums(x.to(im.device))
                total = part if total is None else total + part
    assert total is not None  # the stream refuses a set with no decodable image
    return total / stream.n_valid
