"""Attention preference and same-object on real weights: known answers with the real DINOv2-S/14's tokens, and a
Fig. 2-style curve on VOC masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qkdissect.data.masks import mask_dataset


@pytest.mark.assets
def test_same_object_known_answers_with_real_tokens(dinov2_file: Path, tmp_path: Path) -> None:
    """With V = U every mode's query and key maps are the same map, so both sides always pick the same object
    (p = 1); with V = -U the key side's best object is the query side's worst (p = 0)."""
    from qkdissect.passes.same_object import compute_same_object
    from qkdissect.passes.weights import compute_modes
    from qkdissect.stores import open_store, write_store

    spec = f"timm:vit_small_patch14_dinov2@{dinov2_file}?img_size=224"
    modes = compute_modes(spec, device="cpu")
    for flip, expected in ((1.0, 1.0), (-1.0, 0.0)):
        m = modes.copy()
        m["V"] = flip * m["U"]
        write_store(m, tmp_path / "m.zarr")
        compute_same_object(spec, tmp_path / "m.zarr", "synthetic:6", tmp_path / "s.zarr", device="cpu", progress=False)
        s = open_store(tmp_path / "s.zarr", "same_object")
        assert s.attrs["eligible_images"] == 6
        np.testing.assert_allclose(s.p.values, expected)
        np.testing.assert_allclose(s.layer_p.values, expected)
        # every synthetic scene has the same objects, so the chance level is 1 / n_objects everywhere
        np.testing.assert_allclose(s.layer_chance.values, 1 / s.n_objects.values[0])


@pytest.mark.assets
def test_voc_preference_curve_on_real_dinov2(dinov2_file: Path, assets: Path, tmp_path: Path) -> None:
    from qkdissect.passes.preference import compute_preference
    from qkdissect.stores import open_store

    voc = assets / "images/voc2012_seg_samples"
    ds = mask_dataset(f"voc:{voc}")
    assert len(ds) == 14
    out = tmp_path / "pref.zarr"
    spec = f"timm:vit_small_patch14_dinov2@{dinov2_file}?img_size=224"
    compute_preference(spec, f"voc:{voc}", out, device="cpu", progress=False)
    p = open_store(out, "preference")
    assert p.sizes["image"] == 14 and p.sizes["layer"] == 12
    np.testing.assert_allclose(p.table.sum("region").values, 1.0, atol=1e-5)
    np.testing.assert_allclose(p.token_masks.sum("region").values, 1.0, atol=1e-5)
    same = p.layer_same.values
    # the trained model prefers its own object far beyond the object's share of the image, in every layer
    share = float(p.token_masks.sel(region="target").mean())
    assert np.all(same > share)
