"""Prefix tokens (CLS, distillation, registers): every image adapter names each by its kind, from the model itself;
the projection pass counts, per mode and sign, the images whose query and key maps peak (over all tokens) on a
prefix token of each kind, as a brute force over every token finds them, while its patch-only statistics stay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    DeiTConfig,
    DeiTModel,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersForImageClassification,
    Dinov2WithRegistersModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTConfig,
    ViTModel,
)

from qkdissect.core.topk import count_kinds, extreme_on_prefix
from qkdissect.data.decoding import decode
from qkdissect.data.sources import image_source
from qkdissect.models import extract_qk, preprocess_for
from qkdissect.models.layout import PREFIX_KINDS, TokenLayout
from qkdissect.models.loading import in_memory
from qkdissect.passes.hooks import layer_token_hooks
from qkdissect.passes.projections import compute_projections
from qkdissect.passes.weights import compute_modes
from qkdissect.stores import open_store
from tests.helpers import randomise_, write_photos
from tests.helpers.logits import capture_logits

REG = ("register",) * 4
SMALL = dict(pretrained=False, num_classes=0, depth=1)
HF = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
MODELS = {
    # name: (builder, the kinds of its prefix tokens)
    "timm-vit": (lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, **SMALL), ("cls",)),
    "timm-deit-distilled": (
        lambda: timm.create_model("deit_tiny_distilled_patch16_224", img_size=32, **SMALL),
        ("cls", "distillation"),
    ),
    "timm-dinov2-reg4": (
        lambda: timm.create_model("vit_small_patch14_reg4_dinov2", img_size=28, **SMALL),
        ("cls", *REG),
    ),
    "timm-dinov3": (lambda: timm.create_model("vit_small_patch16_dinov3", img_size=32, **SMALL), ("cls", *REG)),
    "timm-no-class-token": (
        lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, class_token=False, global_pool="avg", **SMALL),
        (),
    ),
    "hf-vit": (lambda: ViTModel(ViTConfig(**HF)), ("cls",)),
    "hf-deit": (lambda: DeiTModel(DeiTConfig(**HF)), ("cls", "distillation")),
    "hf-dinov2-registers": (
        lambda: Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**HF, num_register_tokens=4)),
        ("cls", *REG),
    ),
    "hf-dinov2-registers-classifier": (  # a task wrapper: the adapter takes its backbone
        lambda: Dinov2WithRegistersForImageClassification(Dinov2WithRegistersConfig(**HF, num_register_tokens=4)),
        ("cls", *REG),
    ),
    "hf-clip-vision": (lambda: CLIPVisionModel(CLIPVisionConfig(**HF)), ("cls",)),
    "hf-siglip-vision": (lambda: SiglipVisionModel(SiglipVisionConfig(**HF)), ()),
}


@pytest.mark.parametrize("case", list(MODELS))
def test_every_prefix_token_is_named_by_its_kind(case: str) -> None:
    """The kinds read off the model, in sequence order, as many as the tokens the model puts before its patches."""
    build, kinds = MODELS[case]
    model = build().eval()
    qk = extract_qk(model, case)
    assert qk.layout.prefix_kinds == kinds and qk.layout.n_prefix == len(kinds)
    assert qk.describe()["prefix_tokens"] == list(kinds)
    grid, patch = qk.layout.grid or (0, 0), qk.layout.patch_size or (0, 0)
    x = torch.zeros(1, 3, grid[0] * patch[0], grid[1] * patch[1])
    got: dict[int, torch.Tensor] = {}
    with layer_token_hooks(qk, "post-norm", got.__setitem__), torch.no_grad():
        (qk.model or model)(x)
    assert got[0].shape[1] == len(kinds) + grid[0] * grid[1]  # the tokens the layers see


def test_a_layout_whose_kinds_do_not_add_up_is_refused() -> None:
    with pytest.raises(ValueError, match="5 prefix tokens named"):
        TokenLayout(5, (4, 4), prefix_kinds=("cls",))
    with pytest.raises(ValueError, match="name each one of cls"):
        TokenLayout(1, (4, 4), prefix_kinds=("sink",))


def test_a_tie_between_a_prefix_and_a_patch_token_counts_for_the_prefix() -> None:
    p = torch.tensor([[[1.0, -2.0], [0.0, 5.0], [1.0, -2.0], [-1.0, 0.0]]])  # 2 prefix tokens, 2 patches; C = 2
    top, bottom = p[:, 2:].amax(dim=1), p[:, 2:].amin(dim=1)
    at = extreme_on_prefix(p, 2, top, bottom)
    assert at.tolist() == [[[0, -1], [1, 0]]]  # (batch, C, sign): the ties at 1.0 and -2.0 go to prefix token 0
    counts = count_kinds(at, torch.tensor([0, 2]), 3)
    assert counts.tolist() == [[[1, 0, 0], [0, 0, 0]], [[0, 0, 1], [1, 0, 0]]]  # (C, sign, kind)


@pytest.fixture(scope="module")
def reg4(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A random DINOv2-with-registers stand-in (timm vit_small_patch14_reg4_dinov2, 2 layers, 56 px: 4 x 4 patches
    after a CLS and 4 registers), its modes, its projections store on six photographs."""
    root = tmp_path_factory.mktemp("reg4")
    model = randomise_(timm.create_model("vit_small_patch14_reg4_dinov2", img_size=56, **{**SMALL, "depth": 2}))
    compute_modes(model, root / "modes.zarr", device="cpu")
    write_photos(root / "photos", n=6)
    images = f"folder:{root / 'photos'}"
    proj = compute_projections(model, root / "modes.zarr", images, root / "proj.zarr", top_k=2, batch_size=4,
                               device="cpu", workers=0, progress=False, dedupe=0)  # fmt: skip
    return {"model": model, "modes": open_store(root / "modes.zarr"), "proj": proj, "images": images}


def _brute_force(reg4: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Every image's query and key maps over all tokens, mode by mode in float64 -> per side the counts
    (layer, head, mode, sign, prefix_kind); the key maps' max over the patch tokens (image, layer, head, mode); and
    where a prefix and a patch extreme are within float32 rounding of each other (layer, head, mode, sign)."""
    model, modes, proj = reg4["model"], reg4["modes"], reg4["proj"]
    qk, loaded = extract_qk(model), in_memory(model)
    pre = preprocess_for(loaded)
    items = {it.id: it for it in image_source(reg4["images"]).items}
    x = torch.stack([pre.tensor(decode(items[str(i)], target=max(pre.crop))) for i in proj.image_id.values])
    tokens, _ = capture_logits(model, qk, x)
    kind = np.array([PREFIX_KINDS.index(k) for k in qk.layout.prefix_kinds])
    n = len(kind)
    counts = {side: np.zeros(proj.key_top_on_prefix.shape, np.int64) for side in ("query", "key")}
    near = np.zeros(proj.key_top_on_prefix.shape[:4], bool)
    key_patch_max = np.zeros(proj.k_max.shape)
    for side, vecs in (("query", modes.U.values), ("key", modes.V.values)):
        for layer, t in enumerate(tokens):
            p = np.einsum("btd,hdm->bhmt", t.double().numpy(), vecs[layer])  # (image, head, mode, token)
            for s, signed in enumerate((p, -p)):
                at = signed.argmax(-1)  # the token with the largest value, over all tokens
                on = np.where(at < n, kind[np.minimum(at, n - 1)], -1)
                for k in range(len(PREFIX_KINDS)):
                    counts[side][layer, :, :, s, k] = (on == k).sum(0)
                gap = np.abs(signed[..., :n].max(-1) - signed[..., n:].max(-1)) / np.abs(signed).max(-1)
                near[layer, :, :, s] |= (gap < 1e-5).any(0)
            if side == "key":
                key_patch_max[:, layer] = p[..., n:].max(-1)
    return counts, key_patch_max, near


def test_counts_of_extremes_on_registers_and_cls_are_the_brute_forces(reg4: dict[str, Any]) -> None:
    proj = reg4["proj"]
    assert proj.attrs["prefix_tokens"] == ["cls", *REG] and proj.attrs["n_prefix_tokens"] == 5
    assert list(proj.prefix_kind.values) == list(PREFIX_KINDS)
    counts, patch_max, near = _brute_force(reg4)
    assert near.mean() < 0.01  # float32 and float64 disagree only where two extremes nearly tie
    for side in ("query", "key"):
        got = proj[f"{side}_top_on_prefix"].values
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got[~near], counts[side][~near], err_msg=side)
        assert got.sum(-1).max() <= int(proj.valid.sum())
    key = proj.key_top_on_prefix.values
    assert key[..., 0].sum() > 0 and key[..., 2].sum() > 0 and key[..., 1].sum() == 0  # CLS, registers; no distillation
    assert (key.sum(-1) < int(proj.valid.sum())).any()  # and patches
    # the per-image statistics stay the patch tokens' only
    np.testing.assert_allclose(proj.k_max.values, patch_max, rtol=1e-4, atol=1e-4)


def test_the_modes_store_names_the_prefix_tokens(reg4: dict[str, Any]) -> None:
    assert reg4["modes"].attrs["prefix_tokens"] == ["cls", *REG]


def test_a_model_without_prefix_tokens_counts_none(tmp_path: Path) -> None:
    """No prefix tokens: every count 0, the store as for any model."""
    model = randomise_(timm.create_model("vit_tiny_patch16_224", img_size=32, class_token=False, global_pool="avg",
                                         **SMALL))  # fmt: skip
    compute_modes(model, tmp_path / "modes.zarr", device="cpu")
    write_photos(tmp_path / "photos", n=2)
    proj = compute_projections(model, tmp_path / "modes.zarr", f"folder:{tmp_path / 'photos'}", tmp_path / "p.zarr",
                               top_k=1, device="cpu", workers=0, progress=False, dedupe=0)  # fmt: skip
    assert proj.attrs["prefix_tokens"] == [] and int(proj.key_top_on_prefix.sum()) == 0
