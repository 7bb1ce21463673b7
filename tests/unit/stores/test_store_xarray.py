"""Every kind of store as an xarray user meets it: a plain ``xr.open_zarr(path)`` opens it without a warning
(consolidated metadata, nothing foreign inside), every variable and coordinate has ``long_name`` and ``units``,
and the top images of a projections or same-object store are addressable by id."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from qkdissect.stores import open_store, write_store
from qkdissect.stores.schema import VARIABLE_ATTRS
from tests.helpers import make_tiny_vit, write_photos
from tests.helpers.text import TEXT, make_tiny_text_model

#: a store of every kind (text maps hold other variables than image maps)
KINDS = {
    k: k
    for k in ("modes", "scores", "projections", "logits", "preference", "same_object", "text_projections", "atlas",
              "ablation")
}  # fmt: skip
KINDS |= {"image_maps": "maps", "text_maps": "maps"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One store of every kind, written by the passes from a tiny ViT (and a tiny BERT for text)."""
    from qkdissect.passes.ablation import compute_ablation
    from qkdissect.passes.atlas import compute_atlas_maps
    from qkdissect.passes.logits import compute_logit_stats
    from qkdissect.passes.maps import compute_maps
    from qkdissect.passes.preference import compute_preference
    from qkdissect.passes.projections import compute_projections
    from qkdissect.passes.same_object import compute_same_object
    from qkdissect.passes.scores import compute_scores
    from qkdissect.passes.text import compute_text_projections
    from qkdissect.passes.weights import compute_modes

    base = tmp_path_factory.mktemp("kinds")
    spec = make_tiny_vit(base / "w", depth=2)
    write_photos(base / "photos", n=5)
    images = f"folder:{base / 'photos'}"
    out = {k: base / f"{k}.zarr" for k in KINDS}
    write_store(compute_modes(spec, device="cpu"), out["modes"])
    compute_scores(out["modes"], out["scores"])
    common = {"device": "cpu", "progress": False}
    compute_projections(spec, out["modes"], images, out["projections"], top_k=3, workers=0, **common)
    compute_logit_stats(spec, out["modes"], images, out["logits"], workers=0, limit=3, **common)
    compute_preference(spec, "synthetic:3", out["preference"], **common)
    compute_same_object(spec, out["modes"], "synthetic:3", out["same_object"], top=2, **common)
    request = {"kind": "top", "modes": [[1, 2, 0]], "k": 2}
    compute_maps(spec, out["modes"], out["scores"], out["projections"], request, out["image_maps"], device="cpu")
    compute_atlas_maps(spec, out["modes"], out["projections"], out["atlas"], **common)
    compute_ablation(spec, out["modes"], images, out["ablation"], select="top:1", projections=out["projections"],
                     workers=0, **common)  # fmt: skip
    text_spec = make_tiny_text_model(base / "bert", "bert")
    (base / "texts.txt").write_text(TEXT)
    text_modes = write_store(compute_modes(text_spec, device="cpu"), base / "text_modes.zarr")
    text_scores = base / "text_scores.zarr"
    compute_scores(text_modes, text_scores)
    compute_text_projections(text_spec, text_modes, f"file:{base / 'texts.txt'}", out["text_projections"],
                             top_k=2, progress=False)  # fmt: skip
    request = {"kind": "text-top", "modes": [[1, 2, 3, "-"]], "k": 2}
    compute_maps(text_spec, text_modes, text_scores, out["text_projections"], request, out["text_maps"])
    return out


@pytest.mark.parametrize("name", KINDS)
def test_a_plain_open_zarr_gives_no_warning_and_labels_everything(stores: dict[str, Path], name: str) -> None:
    path, kind = stores[name], KINDS[name]
    assert (path / "zarr.json").read_text().count('"consolidated_metadata"') == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path)
    assert ds.attrs["qkdissect_schema"].startswith(kind + "/")
    unlabelled = [n for n, v in ds.variables.items() if not (v.attrs.get("long_name") and "units" in v.attrs)]
    assert not unlabelled, f"{kind}: no long_name or units on {unlabelled}"
    for name, var in ds.variables.items():
        assert (var.attrs["long_name"], var.attrs["units"]) == VARIABLE_ATTRS[str(name)], name
    xr.testing.assert_identical(ds.load(), open_store(path, kind).load())  # the consolidated copy is the store


def test_a_plain_open_zarr_in_a_fresh_interpreter_with_warnings_as_errors(stores: dict[str, Path]) -> None:
    """The issue's own check, as a user types it."""
    code = "import sys, xarray as xr\nfor p in sys.argv[1:]: xr.open_zarr(p).load()"
    r = subprocess.run([sys.executable, "-W", "error", "-c", code, *map(str, stores.values())],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("kind", ["projections", "same_object"])
def test_top_images_are_addressable_by_id(stores: dict[str, Path], kind: str) -> None:
    ds = xr.open_zarr(stores[kind])
    pos = ds.top_image.values
    ids = ds.top_image_id.values
    assert ids.shape == pos.shape and (pos >= 0).any()
    np.testing.assert_array_equal(ids[pos >= 0], ds.image_id.values[pos[pos >= 0]])
    assert (ids[pos < 0] == "").all()
    # one mode's top images, by id, with their scores beside them
    one = ds.sel(layer=1, head=2, mode=0, sign="+")
    assert list(one.top_image_id.values[:2]) == [ds.image_id.values[i] for i in one.top_image.values[:2]]
