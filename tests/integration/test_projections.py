"""Token projections on the real DINOv2-S/14 and real photographs: the modes and biases rebuild the model's logits, the
batched projection equals explicit per-mode maps, and the projection store streams, skips and ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from qkdissect.models import load_qk
from qkdissect.passes.hooks import layer_tokens, mode_maps
from qkdissect.passes.projections import Projector, compute_projections
from qkdissect.passes.weights import compute_modes
from qkdissect.stores import open_store, write_store
from tests.helpers.logits import capture_logits


def _write_images(folder: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (60 + 10 * i, 80, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    (folder / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (50, 50), dtype=np.uint8)).save(folder / "sub" / "grey.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


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
