"""Token projections (on real weights and photographs: tests/integration/test_projections.py): the streaming top-k
equals the top-k of the whole array, the anisotropy sums equal the pairwise mean, and a corrupt image is skipped,
counted and named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdissect.core.topk import StreamingTopK, anisotropy, both_wrong_side, image_scores
from qkdissect.passes.projections import compute_projections
from qkdissect.passes.weights import compute_modes


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
