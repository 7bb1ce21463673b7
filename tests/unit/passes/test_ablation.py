"""The ablation pass on a tiny model: the modes it selects, the mean ablation's kept mean term, and the store, API and
command line (its exactness on the real DINOv2-S/14: tests/integration/test_ablation.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from qkdissect.cli import main
from qkdissect.errors import QKDissectError
from qkdissect.models import extract_qk
from qkdissect.passes.ablation import TimmRunner, select_modes
from qkdissect.provenance.claims import write_claims
from qkdissect.stores import open_store
from tests.helpers import make_tiny_vit, write_photos
from tests.helpers.logits import bias_terms


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
    slots = open_store(proj, "projections").sel(layer=where[0], head=where[1], mode=where[2])
    in_set = np.isin([str(i) for i in slots.top_image_id.values.ravel()], [str(i) for i in ds.image_id.values])
    assert in_set.any()  # the mean image score of its top-image slots in the set
    want = slots.top_score.values.ravel()[in_set].mean()
    np.testing.assert_allclose(float(ds.top_image_score[where]), want, rtol=1e-12)
    assert np.isnan(ds.top_image_score.values[~ds.ablated.values]).all()
    assert (ds.effect.fillna(0) >= 0).all() and ds.attrs["provenance"]["kind"] == "ablation"
    assert main(["ablate", spec, "--modes", str(modes), "--images", images, "-o", str(modes), *quiet]) == 2  # an input
    claim = {v.id: v for v in write_claims({"ablation": [out]}, tmp_path / "claims.json")}["A1"]  # our own claim
    assert claim.models[ds.attrs["model_id"]]["heads"] == 1 and claim.holds is not None  # L2 H3: 3 modes, the rest 2


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
    logits = bias_terms(qk, 1, 2, t)
    moved = logits - qk.layers[1].scale * (term - term.mean(0))
    p, logq = logits.softmax(-1), moved.log_softmax(-1)
    kl = (p * (p.log() - logq)).sum(-1).mean(-1)
    np.testing.assert_allclose(two.image_effect.sel(metric="attention_kl").values[:, 0], kl.numpy(), rtol=1e-5)
    assert two.attrs["ablation"] == "mean" and (kl > 0).all()
