"""Token projections: the mode decomposition reproduces the model's logits on real weights and photographs, the
batched projection equals explicit per-mode maps, the streaming top-k equals the top-k of the whole array, the
anisotropy sums equal the pairwise mean, and a corrupt image is skipped, counted and named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdissect.core.topk import StreamingTopK, anisotropy, both_wrong_side, image_scores
from qkdissect.models import load_qk
from qkdissect.passes.hooks import layer_tokens, mode_maps
from qkdissect.passes.projections import Projector, compute_projections
from qkdissect.passes.weights import compute_modes
from qkdissect.stores import open_store, write_store
from tests.helpers.logits import capture_logits


@pytest.fixture(scope="module")
def dinov2_224(dinov2_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The real DINOv2-S/14 at 224 px (16 x 16 patches) and its modes store."""
    spec = f"timm:vit_small_patch14_dinov2@{dinov2_file}?img_size=224"
    path = tmp_path_factory.mktemp("modes") / "dinov2.zarr"
    write_store(compute_modes(spec, device="cpu"), path)
    return spec, path


@pytest.mark.assets
def test_modes_and_biases_rebuild_the_models_logits(dinov2_224: tuple[str, Path], photos: torch.Tensor) -> None:
    """sum_n s_n (x_i.u_n)(v_n.x_j) + x_i.W_q^T b_k + b_q^T W_k x_j + b_q.b_k equals the model's own pre-softmax
    logit times sqrt(d_head), for every layer and head, on real photographs."""
    spec, path = dinov2_224
    qk, loaded = load_qk(spec)
    modes = open_store(path, "modes")
    tokens, logits = capture_logits(loaded.model, qk, photos)
    u, s, v = (torch.as_tensor(modes[n].values) for n in ("U", "S", "V"))
    worst = 0.0
    for layer in range(qk.n_layers):
        x = tokens[layer].double()  # (b, t, d), all tokens incl. CLS
        a = qk.layers[layer]
        p = torch.einsum("btd,hdm->bhtm", x, u[layer])
        k = torch.einsum("btd,hdm->bhtm", x, v[layer])
        bilinear = torch.einsum("bhim,hm,bhjm->bhij", p, s[layer], k)
        wq, wk, bq, bk = a.w_q.double(), a.w_k.double(), a.b_q.double(), a.b_k.double()
        query_bias = torch.einsum("btd,hed,he->bht", x, wq, bk)[..., :, None]  # x_i . W_q^T b_k
        key_bias = torch.einsum("he,hed,btd->bht", bq, wk, x)[..., None, :]  # b_q^T W_k x_j
        const = torch.einsum("he,he->h", bq, bk)[None, :, None, None]
        ours = bilinear + query_bias + key_bias + const
        ref = logits[layer] / a.scale  # the model's logit times sqrt(d_head)
        worst = max(worst, float(torch.linalg.norm(ours - ref) / torch.linalg.norm(ref)))
    assert worst < 1e-4, worst


@pytest.mark.assets
@pytest.mark.parametrize("source", ["post-norm", "pre-norm"])
def test_batched_projection_equals_explicit_maps(
    dinov2_224: tuple[str, Path], photos: torch.Tensor, source: str
) -> None:
    spec, path = dinov2_224
    qk, loaded = load_qk(spec)
    modes = open_store(path, "modes")
    u, v = modes.U.values, modes.V.values
    stats = Projector(qk, u, v, source=source)(loaded.model, photos)  # type: ignore[arg-type]
    layers = [0, 5, 11]
    toks = layer_tokens(loaded.model, qk, photos, layers, source)  # type: ignore[arg-type]
    for layer in layers:
        for head, mode in [(0, 0), (3, 17), (5, 63)]:
            q, k = mode_maps(toks[layer], u[layer, head, :, mode], v[layer, head, :, mode], qk.layout.grid or (0, 0))
            np.testing.assert_allclose(stats.q_max[:, layer, head, mode], q.max(axis=(1, 2)), rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(stats.k_min[:, layer, head, mode], k.min(axis=(1, 2)), rtol=1e-4, atol=1e-4)
    other = Projector(qk, u, v, source="pre-norm" if source == "post-norm" else "post-norm")(loaded.model, photos)
    assert not torch.allclose(other.q_max, stats.q_max)  # the two token sources are different things


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 6),
    batch=st.integers(1, 9),
    seed=st.integers(0, 2**31 - 1),
)
def test_streaming_topk_equals_topk_of_everything(n: int, k: int, batch: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, 3, 2, 2, generator=g)
    top = StreamingTopK((3, 2, 2), k)
    order = torch.randperm(n, generator=g)  # batches may come in any order of image indices
    for b in range(0, n, batch):
        idx = order[b : b + batch]
        top.update(scores[idx], idx)
    ref_s, ref_i = torch.topk(scores.movedim(0, -1), min(k, n), dim=-1)
    torch.testing.assert_close(top.score, ref_s)
    torch.testing.assert_close(top.index, ref_i)


def test_anisotropy_from_sums_equals_pairwise_mean() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3, 5)) + 0.5  # (image, layer, d)
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    pairwise = np.array(
        [np.mean([unit[i, ll] @ unit[j, ll] for i in range(7) for j in range(7) if i != j]) for ll in range(3)]
    )
    np.testing.assert_allclose(anisotropy(unit.sum(axis=0), 7), pairwise)


def _write_images(folder: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (60 + 10 * i, 80, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    (folder / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (50, 50), dtype=np.uint8)).save(folder / "sub" / "grey.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


@pytest.mark.assets
def test_projection_store_streams_skips_and_ranks(dinov2_224: tuple[str, Path], tmp_path: Path) -> None:
    spec, modes_path = dinov2_224
    folder = tmp_path / "imgs"
    _write_images(folder)
    out = tmp_path / "proj.zarr"
    compute_projections(
        spec, modes_path, f"folder:{folder}", out, batch_size=3, top_k=4, device="cpu", workers=0, progress=False
    )
    ds = open_store(out, "projections")
    ids = list(ds.image_id.values)
    assert (
        ids == sorted(ids) == ["broken.jpg", "img0.png", "img1.png", "img2.png", "img3.png", "img4.png", "sub/grey.jpg"]
    )
    assert ds.valid.values.tolist() == [False] + [True] * 6
    assert ds.attrs["images"]["skipped"] == 1 and "broken.jpg" in ds.attrs["skipped"][0]["error"]
    assert np.isnan(ds.q_max.values[0]).all() and np.isfinite(ds.q_max.values[1:]).all()
    # the streamed top-k equals the top-k over the stored per-image scores
    plus = (ds.q_max * ds.k_max).values[1:]  # valid images only
    full = np.argsort(-plus, axis=0, kind="stable")[:4] + 1
    np.testing.assert_array_equal(ds.top_image.sel(sign="+").values, np.moveaxis(full, 0, -1))
    minus = (ds.q_min * ds.k_min).values[1:]
    np.testing.assert_allclose(ds.top_score.sel(sign="-").values[..., 0], minus.max(axis=0), rtol=1e-6)
    assert ds.attrs["provenance"]["inputs"]["images"]["count"] == 7
    assert ds.anisotropy.shape == (12,) and np.all(np.abs(ds.anisotropy.values) <= 1)


def test_clipped_score_drops_an_image_whose_two_extremes_are_on_the_wrong_side() -> None:
    """Three images, one mode. A: max q and max k both negative (released score+ = 6); B: an ordinary image
    (score+ = 2); C: min q and min k both positive (released score- = 6). Released, A is among the top two of
    sign + and C of sign -; clipped, both give way to B. The both-negative payload counts them."""
    q_max, q_min = torch.tensor([-2.0, 1.0, 4.0]), torch.tensor([-5.0, -1.0, 2.0])
    k_max, k_min = torch.tensor([-3.0, 2.0, 5.0]), torch.tensor([-4.0, -3.0, 3.0])
    ext = [t[:, None] for t in (q_max, q_min, k_max, k_min)]  # (image, mode)
    flags = both_wrong_side(*ext).long()
    for rule, plus, minus, wrong in (("released", [2, 0], [0, 2], [1, 1]), ("clipped", [2, 1], [0, 1], [0, 0])):
        top = StreamingTopK((1, 2), 2, n_payload=1)
        top.update(image_scores(*ext, rule), torch.arange(3), [flags])
        assert top.index[0].tolist() == [plus, minus], rule
        assert (top.payload[0][0] == 1).sum(-1).tolist() == wrong, rule
    torch.testing.assert_close(
        image_scores(*ext, "clipped")[:, 0], torch.tensor([[0.0, 20.0], [2.0, 3.0], [20.0, 0.0]])
    )
    with pytest.raises(ValueError, match="released or clipped"):
        image_scores(*ext, "clip")


def _brute_scores(ds: xr.Dataset, rule: str) -> np.ndarray:
    """(image, layer, head, mode, sign) image scores straight from a store's per-image extremes (numpy)."""
    q_max, q_min, k_max, k_min = (ds[v].values for v in ("q_max", "q_min", "k_max", "k_min"))
    if rule == "clipped":
        q_max, k_max, q_min, k_min = (
            np.maximum(q_max, 0),
            np.maximum(k_max, 0),
            np.minimum(q_min, 0),
            np.minimum(k_min, 0),
        )
    return np.stack([q_max * k_max, q_min * k_min], axis=-1)


def test_score_option_of_the_projection_store(tmp_path: Path) -> None:
    """The default store is the released score's, variable for variable; each store's top images and scores are
    the top-k of its rule computed from the stored per-image extremes, and the both-negative count of its top
    images is the count from those extremes."""
    from tests.helpers import make_tiny_vit, write_photos

    spec = make_tiny_vit(tmp_path / "w", depth=2)
    compute_modes(spec, tmp_path / "m.zarr", device="cpu")
    write_photos(tmp_path / "photos", n=9)
    run = dict(images=f"folder:{tmp_path / 'photos'}", top_k=4, device="cpu", workers=0, progress=False)
    stores = {
        name: compute_projections(spec, tmp_path / "m.zarr", output=tmp_path / f"{name}.zarr", **kw, **run)  # type: ignore[arg-type]
        for name, kw in (("default", {}), ("released", {"score": "released"}), ("clipped", {"score": "clipped"}))
    }
    for var in stores["default"].data_vars:
        np.testing.assert_array_equal(stores["default"][var].values, stores["released"][var].values, err_msg=var)
    for rule in ("released", "clipped"):
        ds = stores[rule]
        assert ds.attrs["image_score"] == rule == ds.attrs["provenance"]["parameters"]["score"]
        brute = np.moveaxis(_brute_scores(ds, rule), 0, -1)  # (layer, head, mode, sign, image)
        order = np.argsort(-brute, axis=-1, kind="stable")[..., :4]
        np.testing.assert_array_equal(ds.top_image.values, order, err_msg=rule)
        np.testing.assert_allclose(ds.top_score.values, np.take_along_axis(brute, order, -1), rtol=1e-6)
        wrong = np.moveaxis(_brute_scores(ds, "released") > 0, 0, -1) & (
            np.moveaxis(_brute_scores(ds, "clipped"), 0, -1) == 0
        )
        np.testing.assert_array_equal(ds.top_both_negative.values, np.take_along_axis(wrong, order, -1).sum(-1))
    assert "[max q]_+" in stores["clipped"].top_score.attrs["description"]
    assert int(stores["released"].top_both_negative.sum()) > int(stores["clipped"].top_both_negative.sum())
