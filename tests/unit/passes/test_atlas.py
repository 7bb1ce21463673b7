"""The mode atlas: the atlas pass stores every mode's top images with their query and key maps (equal, within the
8-bit quantisation, to the tokens' projections computed by hand, mode by mode); the audit and the RO-Crate cover
the page written from the stores (opened in a real headless Chromium: tests/browser/test_atlas.py); a bad input is
one line."""

# ruff: noqa: F811 (the fixtures tiny and atlas_page are imported from tests.helpers.atlas)
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qkdissect import api
from qkdissect.data.decoding import decode
from qkdissect.data.sources import image_source
from qkdissect.models import load_qk, preprocess_for
from qkdissect.passes.atlas import dequantise, quantise
from qkdissect.passes.hooks import layer_token_hooks
from qkdissect.provenance.audit import audit
from qkdissect.provenance.records import git_state
from qkdissect.stores import open_store
from tests.helpers.atlas import atlas_page, tiny  # noqa: F401 (fixtures)


def hand_tokens(tiny: dict, image_ids: list[str]) -> dict[int, np.ndarray]:
    """Per layer, the patch tokens W_q/W_k see of each image (image, token, d), float64, by hand."""
    qk, loaded = load_qk(tiny["spec"])
    pre = preprocess_for(loaded)
    items = {it.id: it for it in image_source(tiny["images"]).items}
    x = torch.stack([pre.tensor(decode(items[i], target=max(pre.crop))) for i in image_ids])
    got: dict[int, np.ndarray] = {}
    keep = lambda i, t: got.__setitem__(i, t.detach().double().numpy())  # noqa: E731
    with layer_token_hooks(qk, "post-norm", keep), torch.no_grad():
        loaded.model(x)
    return {layer: t[:, qk.layout.n_prefix :] for layer, t in got.items()}


def brute_force_maps(tiny: dict, atlas: object, pool: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every slot's query and key maps, mode by mode: the slot image's tokens onto the mode's u and v (times the
    sign), averaged over pool x pool patches; (layer, head, mode, sign, rank, gy, gx), NaN for empty slots."""
    ds = atlas  # an atlas dataset
    modes = open_store(tiny["modes"], "modes")
    tokens = hand_tokens(tiny, [str(i) for i in ds.image_id.values])  # type: ignore[attr-defined]
    slot = ds.slot_image.values  # type: ignore[attr-defined]
    gy, gx = ds.attrs["grid"]  # type: ignore[attr-defined]
    q = np.full((*slot.shape, gy // pool, gx // pool), np.nan)
    k = np.full_like(q, np.nan)
    for index in np.ndindex(*slot.shape):
        layer, head, mode, sign, _ = index
        if slot[index] < 0:
            continue
        s = 1.0 if sign == 0 else -1.0
        t = tokens[layer][slot[index]]
        for out, vec in ((q, modes.U.values), (k, modes.V.values)):
            m = (t @ (s * vec[layer, head, :, mode])).reshape(gy, gx)
            out[index] = m.reshape(gy // pool, pool, gx // pool, pool).mean(axis=(1, 3))
    return q, k


def test_the_maps_are_each_modes_projection_within_the_quantisation(tiny: dict) -> None:
    ds = api.atlas_maps(tiny["spec"], tiny["modes"], tiny["proj"], device="cpu", name="tiny", progress=False)
    proj = open_store(tiny["proj"], "projections")
    # every slot is the projections store's: the same images (each stored once) and scores
    np.testing.assert_array_equal(ds.top_image_id.values, proj.top_image_id.values)
    np.testing.assert_array_equal(ds.top_score.values, proj.top_score.values)
    assert sorted(ds.image_id.values) == sorted(set(proj.top_image_id.values.ravel()) - {""})
    q, k = brute_force_maps(tiny, ds)
    for side, want in (("q", q), ("k", k)):
        code, lo, step = (ds[f"{side}_{v}"].values for v in ("code", "lo", "step"))
        got = dequantise(code, lo, step)
        filled = ~np.isnan(want)
        assert filled.any() and np.isnan(lo).sum() == (~filled).sum() // np.prod(want.shape[-2:])
        err = np.abs(got - want)[filled]
        bound = step[..., None, None] / 2 + 1e-5 * (np.abs(lo) + 255 * step)[..., None, None]
        assert np.all(err <= np.broadcast_to(bound, want.shape)[filled]), err.max()
        np.testing.assert_allclose(got[filled], want[filled], atol=np.nanmax(step))
    # the thumbnails are the model-input crops (32 px: already smaller than the thumbnail size)
    items = {it.id: it for it in image_source(tiny["images"]).items}
    _, loaded = load_qk(tiny["spec"])
    pre = preprocess_for(loaded)
    for i, image_id in enumerate(ds.image_id.values):
        crop = np.asarray(pre.image(decode(items[str(image_id)], target=max(pre.crop))))
        np.testing.assert_array_equal(ds.thumbnail.values[i], crop)


def test_larger_grids_are_averaged_down(tiny: dict) -> None:
    ds = api.atlas_maps(tiny["spec"], tiny["modes"], tiny["proj"], grid=2, thumbnail=16, device="cpu",
                        name="tiny", progress=False)  # fmt: skip
    assert ds.attrs["map_grid"] == [2, 2] and ds.sizes["gy"] == ds.sizes["gx"] == 2
    assert ds.thumbnail.shape[1:] == (16, 16, 3)
    q, k = brute_force_maps(tiny, ds, pool=2)
    for side, want in (("q", q), ("k", k)):
        got = dequantise(*(ds[f"{side}_{v}"].values for v in ("code", "lo", "step")))
        filled = ~np.isnan(want)
        np.testing.assert_allclose(got[filled], want[filled], atol=np.nanmax(ds[f"{side}_step"].values) / 2 + 1e-5)


@settings(max_examples=60, deadline=None)
@example(np.array([[0.0, 2.17e-43]], dtype=np.float32))  # a subnormal range: its step would be subnormal too
@given(arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 40)),
              elements=st.floats(-1e4, 1e4, width=32)))  # fmt: skip
def test_quantisation_error_is_at_most_half_a_step(maps: np.ndarray) -> None:
    code, lo, step = quantise(torch.from_numpy(maps))
    assert code.dtype == torch.uint8
    back = lo.numpy()[:, None] + step.numpy()[:, None] * code.numpy().astype(np.float64)
    assert np.all(np.abs(back - maps) <= step.numpy()[:, None] / 2 * (1 + 1e-4) + 1e-3)
    assert np.all(code.numpy().min(axis=1) == 0) and np.all((code.numpy().max(axis=1) == 255) | (step.numpy() == 0))


def test_the_audit_and_the_crate_cover_the_atlas(tiny: dict, atlas_page: Path) -> None:
    results = tiny["results"]
    allow = bool(git_state().get("dirty"))
    arts = {str(a.path.relative_to(results)): a for a in audit(results, allow_dirty=allow)}
    atlas = arts["atlas/atlas.provenance.json"]
    assert atlas.kind == "atlas" and atlas.status == "ok", atlas.findings
    assert arts["atlas_maps/tiny/photos.zarr"].status == "ok"
    record = json.loads((results / "atlas/atlas.provenance.json").read_text())
    assert set(record["outputs"]) == {"index.html", "data"}
    assert {Path(i["path"]).name for i in record["inputs"]} == {"tiny.zarr", "photos.zarr"}
    # a thumbnail edited after the atlas was written; the atlas maps store it was made from changed
    thumb = next((results / "atlas/data/tiny/thumbs").glob("*.jpg"))
    original = thumb.read_bytes()
    thumb.write_bytes(original + b"\0")
    try:
        found = {str(a.path.relative_to(results)): a for a in audit(results, allow_dirty=allow)}
    finally:
        thumb.write_bytes(original)
    assert found["atlas/atlas.provenance.json"].status == "modified"
    assert "atlas/data was changed after it was made" in found["atlas/atlas.provenance.json"].findings[0].message
    # the crate lists the atlas with the action that made it
    from qkdissect.provenance.crate import write_crate

    crate = json.loads(write_crate(results).read_text())
    graph = {e["@id"]: e for e in crate["@graph"]}
    action = graph["#make-atlas/atlas.provenance.json"]
    assert {r["@id"] for r in action["result"]} >= {"atlas/index.html", "atlas/data/", "atlas/atlas.provenance.json"}
    assert "atlas_maps/tiny/photos.zarr/" in {o["@id"] for o in action["object"]}
    # the sidecar gone: the atlas is reported without provenance
    side = results / "atlas/atlas.provenance.json"
    side.rename(side.with_suffix(".moved"))
    try:
        found = {str(a.path.relative_to(results)): a for a in audit(results, allow_dirty=allow)}
    finally:
        side.with_suffix(".moved").rename(side)
    assert found["atlas/index.html"].kind == "atlas" and found["atlas/index.html"].status == "missing-input"


def test_bad_inputs_are_one_line_and_leave_no_atlas(tiny: dict, tmp_path: Path) -> None:
    def atlas(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "qkdissect", "atlas", *args], capture_output=True, text=True)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        return r.stderr

    assert "no image model is projected under" in atlas(str(tmp_path))
    assert "no projections store of nope" in atlas(str(tiny["results"]), "--models", "nope")
    # a model whose name cannot name a folder: its stores are refused before anything is written
    bad = tmp_path / "results"
    shutil.copytree(tiny["results"], bad, ignore=shutil.ignore_patterns("atlas", "atlas_maps"))
    (bad / "projections/tiny").rename(bad / "projections/ti ny")
    assert "'ti ny'" in atlas(str(bad), "--no-compute")
    (bad / "projections/ti ny").rename(bad / "projections/tiny")
    assert "is missing or older than" in atlas(str(bad), "--no-compute")
    assert not (bad / "atlas").exists() and not list(bad.glob("atlas.*"))


def test_the_configs_label_names_the_model_on_the_page(tiny: dict, atlas_page: Path, tmp_path: Path) -> None:
    """`--label MODEL=LABEL` (the workflow passes each model's config `label`): the page and its provenance show
    it; a label for a model the atlas does not show, or one without '=', is one line and writes nothing."""
    out = tmp_path / "labelled"
    label = "Tiny ViT (random) 'quoted'"
    r = subprocess.run([sys.executable, "-m", "qkdissect", "atlas", str(tiny["results"]), "--no-compute", "-q",
                        "--label", f"tiny={label}", "-o", str(out)], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    index = (out / "data/index.js").read_text()
    assert json.dumps(label) in index and json.dumps(label) in (out / "data/tiny/model.js").read_text()
    record = json.loads((out / "atlas.provenance.json").read_text())
    assert record["parameters"]["labels"] == {"tiny": label}
    assert "labels" not in json.loads((atlas_page.parent / "atlas.provenance.json").read_text())["parameters"]
    for bad, says in (("nope=X", "atlas labels for models it does not show: nope"), ("tiny", "expected MODEL=LABEL")):
        gone = tmp_path / "bad"
        r = subprocess.run([sys.executable, "-m", "qkdissect", "atlas", str(tiny["results"]), "--no-compute", "-q",
                            "--label", bad, "-o", str(gone)], capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and says in r.stderr, r.stderr
        assert not gone.exists()


def test_each_modes_ablation_effect_is_beside_its_top_images(tiny: dict, tmp_path: Path) -> None:
    """A results folder with an ablation store: the model's summary holds each mode's effect (the store's), each
    head's slots their top image's own effect (the store's per-image value, where the image was ablated)."""
    from qkdissect.passes.ablation import compute_ablation

    results = tmp_path / "results"
    shutil.copytree(tiny["results"], results, ignore=shutil.ignore_patterns("atlas", "atlas_maps"))
    store = results / "ablation/tiny/photos.zarr"
    ds = compute_ablation(tiny["spec"], tiny["modes"], tiny["images"], store, select=["top:2", "2,3,5"],
                          projections=tiny["proj"], limit=5, outputs=False, device="cpu", workers=0,
                          progress=False, model_key="tiny")  # fmt: skip
    page = api.atlas(results, device="cpu", progress=False)
    data = page.parent / "data/tiny"
    load = lambda p: json.loads(p.read_text().split("(", 1)[1].rsplit(")", 1)[0].split(",", 1)[-1])  # noqa: E731
    summary = json.loads((data / "model.js").read_text().split("(", 1)[1].rsplit(")", 1)[0])
    kl = ds.effect.sel(metric="attention_kl")
    for subset in ("all", "top"):
        want = kl.sel(subset=subset).values.ravel()
        got = np.array([np.nan if v is None else v for v in summary["ablation"][subset]])
        np.testing.assert_allclose(got, want, rtol=1e-3)  # 4 significant digits; NaN where not ablated
    assert summary["ablation"]["images"] == 5 and summary["stores"]["ablation"] == str(store)
    head = load(data / "heads/L2-H3.js")  # modes 0, 1 and 5 ablated
    maps = open_store(results / "atlas_maps/tiny/photos.zarr", "atlas").sel(layer=2, head=3)
    ablated_ids = [str(i) for i in ds.image_id.values]
    slots = maps.slot_image.values  # (mode, sign, rank)
    found = 0
    for (mode, sign, rank), img in np.ndenumerate(slots):
        effect = head["effect"][(mode * 2 + sign) * slots.shape[-1] + rank]
        image_id = str(maps.image_id.values[img]) if img >= 0 else None
        if img < 0 or mode not in (0, 1, 5) or image_id not in ablated_ids:
            assert effect is None, (mode, sign, rank)
            continue
        a = int(np.nonzero((ds.ablation_layer.values == 2) & (ds.ablation_head.values == 3)
                           & (ds.ablation_mode.values == mode))[0][0])  # fmt: skip
        want = float(ds.image_effect.sel(metric="attention_kl").values[ablated_ids.index(image_id), a])
        assert effect == pytest.approx(want, rel=1e-3)
        found += 1
    assert found > 0
    record = json.loads((page.parent / "atlas.provenance.json").read_text())
    assert any(d["path"].endswith("ablation/tiny/photos.zarr") for d in record["dependencies"])
