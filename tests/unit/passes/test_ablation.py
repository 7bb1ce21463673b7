"""The ablation pass: exactness on the real DINOv2-S/14 (its own attention call gets the bias; nothing ablated is the
model bit for bit; all modes of a head leave its bias terms; one mode is the difference of two explicit forward
computations), the strongest mode against the weakest, and the store, API and command line on a tiny model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from qkdissect.cli import main
from qkdissect.core.modes import qk_modes
from qkdissect.errors import QKDissectError
from qkdissect.models import extract_qk, load_qk
from qkdissect.passes.ablation import Ablations, Ablator, TimmRunner, select_modes
from qkdissect.passes.hooks import layer_token_hooks
from qkdissect.stores import open_store
from tests.helpers import make_tiny_vit, write_photos

LAYER, HEAD = 9, 2  # the pass from the ablated layer onward runs 3 blocks


class _Logits(TorchFunctionMode):
    """The pre-softmax logits of every attention call given a mask (q.k * scale + mask) and every softmax's input."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[torch.Tensor] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and kwargs.get("attn_mask") is not None:
            q, k = args[0].double(), args[1].double()
            self.found.append(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + kwargs["attn_mask"].double())
        elif func is torch.Tensor.softmax:
            self.found.append(args[0].double())
        return func(*args, **kwargs)


@pytest.fixture(scope="module")
def dinov2(dinov2_file: Path) -> tuple[Any, Any]:
    qk, loaded = load_qk(f"timm:vit_small_patch14_dinov2@{dinov2_file}?img_size=224")
    return qk, loaded.model


def _head_modes(qk: Any, layer: int, head: int, modes: list[int]) -> Ablations:
    """One ablation of the given modes of one head (float64)."""
    m = qk_modes(qk.w_q[layer, head], qk.w_k[layer, head], dtype="float64", device="cpu")
    idx = torch.tensor(modes)
    t = torch.tensor
    return Ablations(t([layer]), t([head]), m.U[None, :, idx], m.S[None, idx], m.V[None, :, idx])


def _bias_terms(qk: Any, layer: int, head: int, x: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
    """scale * (x W_q^T + b_q)(W_k x + b_k) computed directly in float64, W_q^T W_k minus ``drop`` (d, d) when
    given, the full product when not; ``drop = W_q^T W_k`` leaves the bias terms."""
    a = qk.layers[layer]
    wq, wk, bq, bk = (t[head].double() for t in (a.w_q, a.w_k, a.b_q, a.b_k))
    x = x.double()
    core = wq.T @ wk - (drop if drop is not None else 0)
    return a.scale * (x @ core @ x.transpose(-1, -2) + (x @ wq.T @ bk)[..., :, None] + (x @ wk.T @ bq)[..., None, :]
                      + bq @ bk)  # fmt: skip


def test_nothing_ablated_is_the_model_bit_for_bit(dinov2: tuple[Any, Any], photos: torch.Tensor) -> None:
    qk, model = dinov2
    runner = TimmRunner(model, qk, "dinov2")
    x = photos[:1]
    with torch.inference_mode():
        ref = model(x)
        base = runner.baseline(x, [0, 11])
        zero = torch.zeros(1, qk.n_heads, 257, 257)
        assert torch.equal(base.outputs.embedding, ref)
        assert torch.equal(runner.tail(base.residual[0], 0, zero).embedding, ref)  # a zero bias in the attention
        assert torch.equal(runner.tail(base.residual[11], 11, None).embedding, ref)


@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "eager"])
def test_all_modes_of_a_head_leave_its_bias_terms(dinov2: tuple[Any, Any], photos: torch.Tensor, fused: bool) -> None:
    qk, model = dinov2
    photos = photos[:1]
    attn = model.blocks[LAYER].attn
    attn.fused_attn = fused
    try:
        ablator = Ablator(TimmRunner(model, qk, "dinov2"), _head_modes(qk, LAYER, HEAD, list(range(qk.d_head))))
        rec, seen = _Logits(), []
        with torch.inference_mode(), layer_token_hooks(qk, "post-norm", lambda _, t: seen.append(t), [LAYER]), rec:
            ablator(photos)
        tokens = seen[0]  # what the layer's W_q and W_k see (the same again in the pass from the layer onward)
    finally:
        attn.fused_attn = True
    a = qk.layers[LAYER]
    got = rec.found[-1]  # the ablated layer's logits in the pass from it onward (eager: the softmax's input)
    terms = _bias_terms(qk, LAYER, HEAD, tokens, drop=a.w_q[HEAD].double().T @ a.w_k[HEAD].double())
    err = (got[:, HEAD] - terms).norm() / _bias_terms(qk, LAYER, HEAD, tokens).norm()
    others = [h for h in range(qk.n_heads) if h != HEAD]
    full = torch.stack([_bias_terms(qk, LAYER, h, tokens) for h in others], dim=1)
    assert err < 1e-6, err  # measured 1.6e-7 (sdpa), 2.1e-7 (eager)
    assert (got[:, others] - full).norm() / full.norm() < 1e-6  # the other heads untouched (9e-8, 1.6e-7)


def test_one_mode_is_the_difference_of_two_explicit_forwards(dinov2: tuple[Any, Any], photos: torch.Tensor) -> None:
    """In float64: the pass's head metrics and output change against the model run by hand, with the head's logits
    x^T (W_q^T W_k - s u v^T) x + bias terms computed explicitly."""
    _, model32 = dinov2
    model = copy.deepcopy(model32).double()
    qk = extract_qk(model, "dinov2-f64")
    x = photos[:1].double()
    ab = _head_modes(qk, LAYER, HEAD, [0])
    ablator = Ablator(TimmRunner(model, qk, "dinov2"), ab)
    with torch.inference_mode():
        got = dict(zip(ablator.metrics, ablator(x)[:, 0].T, strict=True))
        base = ablator.runner.baseline(x, [LAYER])
        tokens = base.tokens[LAYER]
        drop = ab.s[0, 0] * ab.u[0] @ ab.v[0].T
        before, after = _bias_terms(qk, LAYER, HEAD, tokens), _bias_terms(qk, LAYER, HEAD, tokens, drop)
        p, logq = before.softmax(-1), after.log_softmax(-1)
        kl = (p * (p.log() - logq)).sum(-1).mean(-1)
        moved = 0.5 * (p - logq.exp()).abs().sum(-1).mean(-1)
        e0, e1 = base.outputs.embedding, _explicit_forward(model, base.residual[LAYER], after)
    cos = F.cosine_similarity(e0, e1, dim=-1)
    for name, want in (("attention_kl", kl), ("attention_moved", moved), ("embedding_distance", 1 - cos)):
        assert torch.allclose(got[name], want, rtol=1e-6, atol=0), (name, got[name], want)  # measured: 5e-13
    assert (got["embedding_distance"] > 1e-7).all()  # a change far above float64 noise


def _explicit_forward(model: Any, h: torch.Tensor, head_logits: torch.Tensor) -> torch.Tensor:
    """The model's embedding from ``h``, the residual stream entering layer LAYER, with head HEAD of that layer
    attending by ``head_logits`` (batch, token, token), its block written out by hand."""
    for i, blk in enumerate(model.blocks[LAYER:], start=LAYER):
        if i != LAYER:
            h = blk(h)
            continue
        a = blk.attn
        b, n, c = h.shape
        q, k, v = a.qkv(blk.norm1(h)).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        logits = q @ k.transpose(-1, -2) * a.scale
        logits[:, HEAD] = head_logits
        o = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        h = h + blk.ls1(a.proj(o))
        h = h + blk.ls2(blk.mlp(blk.norm2(h)))
    return model.forward_head(model.norm(h), pre_logits=True)


def test_the_strongest_mode_moves_attention_more_than_the_weakest(
    dinov2: tuple[Any, Any], photos: torch.Tensor
) -> None:
    """Every head of every layer, its mode 0 and its mode 63, on two photographs: the head's attention only."""
    qk, model = dinov2
    m = qk_modes(qk.w_q, qk.w_k, dtype="float64", device="cpu")
    sel = select_modes(["0,0,0"], (qk.n_layers, qk.n_heads, qk.d_head))
    grid = np.stack(np.meshgrid(np.arange(qk.n_layers), np.arange(qk.n_heads), [0, qk.d_head - 1], indexing="ij"))
    sel = type(sel)(*grid.reshape(3, -1))
    t = [torch.as_tensor(a) for a in (sel.layer, sel.head, sel.mode)]
    ab = Ablations(
        t[0], t[1], m.U[t[0], t[1], :, t[2]][..., None], m.S[*t][:, None], m.V[t[0], t[1], :, t[2]][..., None]
    )
    ablator = Ablator(TimmRunner(model, qk, "dinov2"), ab, outputs=False)
    kl = ablator(photos)[..., 0].mean(0).reshape(qk.n_layers, qk.n_heads, 2)
    strongest, weakest = kl[..., 0], kl[..., 1]
    print(f"attention KL, mean over heads: strongest {strongest.mean():.3g}, weakest {weakest.mean():.3g}; "
          f"strongest > weakest in {(strongest > weakest).float().mean():.0%} of heads")  # fmt: skip
    assert strongest.mean() > 10 * weakest.mean()  # measured: 0.057 against 0.00093 nats
    assert (strongest > weakest).float().mean() > 0.9  # measured: 71 of 72 heads


def test_select_modes() -> None:
    shape = (2, 3, 8)
    auto = select_modes("auto", shape)
    assert len(auto) == 2 * 3 * 4 and set(auto.mode) == {0, 1, 2, 3}
    assert len(select_modes(["top:2", "1,2,7"], shape)) == 2 * 3 * 2 + 1
    assert len(select_modes("all", shape)) == 48
    assert list(select_modes([(1, 0, 5)], shape).mode) == [5]
    for bad, says in (("2,0,0", "outside"), ("top:0", "top:N"), ("first", "is not auto")):
        with pytest.raises(QKDissectError, match=says):
            select_modes(bad, shape)


# ------------------------------------------------------------------------------- the store, API and command line
def test_ablate_command_writes_an_ablation_store(tmp_path: Path) -> None:
    spec = make_tiny_vit(tmp_path / "weights")
    write_photos(tmp_path / "photos", n=4)
    images, modes, proj, out = (
        f"folder:{tmp_path / 'photos'}",
        tmp_path / "m.zarr",
        tmp_path / "p.zarr",
        tmp_path / "a.zarr",
    )
    quiet = ["--device", "cpu", "-q"]
    assert main(["modes", spec, "-o", str(modes), *quiet]) == 0
    run = ["--images", images, "--workers", "0", *quiet]
    assert main(["project", spec, "--modes", str(modes), "--top-k", "1", "-o", str(proj), *run]) == 0
    select = ["--select", "top:2", "2,3,15"]
    assert main(["ablate", spec, "--modes", str(modes), "--projections", str(proj), *select, "-o", str(out), *run]) == 0
    ds = open_store(out, "ablation")
    assert list(ds.metric.values) == ["attention_kl", "attention_moved", "embedding_distance"]  # no classifier
    assert list(ds.subset.values) == ["all", "top"] and ds.attrs["ablation"] == "zero"
    assert int(ds.ablated.sum()) == ds.sizes["ablation"] == 3 * 4 * 2 + 1
    assert bool(ds.ablated.sel(layer=2, head=3, mode=15)) and not bool(ds.ablated.sel(layer=2, head=3, mode=14))
    every = ds.effect.sel(subset="all").values
    assert np.isnan(every[~ds.ablated.values]).all() and not np.isnan(every[ds.ablated.values]).any()
    assert (ds.n_images.sel(subset="all").where(ds.ablated, 4) == 4).all()
    top = ds.n_images.sel(subset="top").values[ds.ablated.values]
    assert ((top >= 1) & (top <= 2)).all()  # a mode's top image of each sign, in the set
    a = 5  # the store's "top" mean is the mean of its per-image values over the mode's top images
    where = (int(ds.ablation_layer[a]), int(ds.ablation_head[a]), int(ds.ablation_mode[a]))
    mine = ds.image_effect[:, a].values[ds.in_top[:, a].values].mean(axis=0)
    np.testing.assert_allclose(ds.effect.sel(subset="top").values[where], mine, rtol=1e-6)
    assert (ds.effect.fillna(0) >= 0).all() and ds.attrs["provenance"]["kind"] == "ablation"
    assert main(["ablate", spec, "--modes", str(modes), "--images", images, "-o", str(modes), *quiet]) == 2  # an input


def test_mean_ablation_keeps_the_mean_term(tmp_path: Path) -> None:
    """Mean-ablation against brute force on a tiny classifier and two images: the term becomes its mean over the
    two, so each image's logits move by scale * (its term - the other's) / 2; on one image nothing moves."""
    import timm

    from qkdissect import api
    from tests.helpers import TINY, randomise_

    model = randomise_(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, depth=2, **TINY))
    write_photos(tmp_path / "photos", n=2)
    images = f"folder:{tmp_path / 'photos'}"
    modes = api.modes(model, device="cpu")
    one = api.ablate(model, modes, images, select="all", mean=True, limit=1, device="cpu", progress=False)
    assert list(one.metric.values) == ["attention_kl", "attention_moved", "output_kl", "top1_flipped",
                                       "embedding_distance"]  # fmt: skip
    assert float(abs(one.image_effect).max()) < 1e-12  # the term minus its mean over one image: rounding only
    two = api.ablate(model, modes, images, select=["1,2,0"], mean=True, device="cpu", progress=False)
    qk = extract_qk(model, "tiny")
    x = torch.stack([api.preprocess(model)(p) for p in sorted((tmp_path / "photos").iterdir())])
    with torch.inference_mode():
        t = TimmRunner(model, qk, "tiny").baseline(x, [1]).tokens[1].double()
    u, s, v = (torch.as_tensor(modes[n].sel(layer=1, head=2).values) for n in ("U", "S", "V"))
    term = s[0] * (t @ u[:, 0])[:, :, None] * (t @ v[:, 0])[:, None, :]
    logits = _bias_terms(qk, 1, 2, t)
    moved = logits - qk.layers[1].scale * (term - term.mean(0))
    p, logq = logits.softmax(-1), moved.log_softmax(-1)
    kl = (p * (p.log() - logq)).sum(-1).mean(-1)
    np.testing.assert_allclose(two.image_effect.sel(metric="attention_kl").values[:, 0], kl.numpy(), rtol=1e-5)
    assert two.attrs["ablation"] == "mean" and (kl > 0).all()
