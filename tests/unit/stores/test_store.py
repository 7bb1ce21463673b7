"""Zarr v3 stores: schema, provenance, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from qkdissect.passes.scores import compute_scores
from qkdissect.passes.weights import compute_modes
from qkdissect.stores import readwrite as store
from tests.helpers import TINY, randomise_


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import timm
    from safetensors.torch import save_file

    m = randomise_(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=3, **TINY))
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def modes_ds(tiny_file: Path) -> xr.Dataset:
    spec = f"timm:vit_tiny_patch16_224@{tiny_file}?img_size=32&patch_size=8&embed_dim=64&depth=3&num_heads=4"
    return compute_modes(spec, device="cpu", model_key="tiny")


def test_round_trip_and_schema(tmp_path: Path, modes_ds: xr.Dataset) -> None:
    out = store.write_store(modes_ds, tmp_path / "m.zarr")
    meta = json.loads((out / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    back = store.open_store(out, "modes")
    assert dict(back.sizes) == {"layer": 3, "head": 4, "dim": 64, "mode": 16}
    assert back.U.dims == ("layer", "head", "dim", "mode") and back.S.dims == ("layer", "head", "mode")
    assert back.U.dtype == np.float64
    np.testing.assert_array_equal(back.U.values, modes_ds.U.values)
    assert back.U.encoding["chunks"] == (1, 4, 64, 16)
    with pytest.raises(ValueError, match="expected a scores store"):
        store.open_store(out, "scores")


def test_provenance_attrs(modes_ds: xr.Dataset, tiny_file: Path) -> None:
    from qkdissect.util.hashing import sha256_file

    a = modes_ds.attrs
    for key in (
        "model_id",
        "adapter",
        "d_model",
        "d_head",
        "n_prefix_tokens",
        "grid",
        "dtype",
        "device",
        "weights_sha256",
        "provenance",
        "conventions",
    ):
        assert key in a, key
    assert a["weights_sha256"] == sha256_file(tiny_file)
    p = a["provenance"]
    assert p["weights"]["sha256"] == sha256_file(tiny_file)
    assert {"torch", "timm", "transformers", "numpy", "xarray", "zarr", "qkdissect"} <= set(p["code"]["packages"])
    assert "commit" in p["code"]["git"] and "dirty" in p["code"]["git"]
    assert p["parameters"]["dtype"] == "float64" and p["started"] <= p["finished"]
    json.dumps(dict(a))  # JSON-safe


def test_scores_store(tmp_path: Path, modes_ds: xr.Dataset) -> None:
    sc = compute_scores(modes_ds)
    out = store.write_store(sc, tmp_path / "s.zarr")
    back = store.open_store(out, "scores")
    assert back.layer_weighted.dims == ("layer",) and back.depth.values.tolist() == [0, 0.5, 1]
    assert back.attrs["null_high"] == pytest.approx(-back.attrs["null_low"])
    assert np.all(np.abs(back.cosine.values) <= 1)


def test_failed_write_leaves_nothing(tmp_path: Path, modes_ds: xr.Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "m.zarr"
    real = xr.Dataset.to_zarr

    def crash(self: xr.Dataset, path: Path, **kw: object) -> None:
        kw["encoding"] = {"S": kw["encoding"]["S"]}  # type: ignore[index]
        real(self[["S"]], path, **kw)  # something is on disk...
        raise KeyboardInterrupt("killed mid-write")  # ...then the process dies

    monkeypatch.setattr(xr.Dataset, "to_zarr", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write_store(modes_ds, target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_overwrite_is_atomic_replacement(tmp_path: Path, modes_ds: xr.Dataset, monkeypatch) -> None:
    target = store.write_store(modes_ds, tmp_path / "m.zarr")
    changed = modes_ds.copy()
    changed.attrs["model_id"] = "second"
    store.write_store(changed, target)
    assert store.open_store(target).attrs["model_id"] == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["m.zarr"]

    monkeypatch.setattr(xr.Dataset, "to_zarr", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        store.write_store(modes_ds, target)
    assert store.open_store(target).attrs["model_id"] == "second"  # the old store survives a failed rewrite


def test_a_store_records_its_content_and_refuses_to_open_with_a_chunk_gone(
    tmp_path: Path, modes_ds: xr.Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 13: a modes store with a chunk deleted opened, and `scores` printed +nan for that layer."""
    from qkdissect.cli import main
    from qkdissect.errors import DamagedStoreError
    from qkdissect.stores.content import CONTENT_ATTR, content_digests

    out = store.write_store(modes_ds, tmp_path / "m.zarr")
    recorded = store.open_store(out).attrs[CONTENT_ATTR]["files"]
    assert recorded == content_digests(out) and "U/c/1/0/0/0" in recorded and "zarr.json" not in recorded
    every = {f.relative_to(out).as_posix() for f in out.rglob("*") if f.is_file()}
    assert set(recorded) == every - {"zarr.json"}  # every chunk and array's metadata: all but the root's
    (out / "U/c/1/0/0/0").unlink()
    with pytest.raises(DamagedStoreError, match=r"m.zarr is damaged: its chunk U/c/1/0/0/0 is gone"):
        store.open_store(out)
    assert main(["scores", str(out), "-q", "-o", str(tmp_path / "s.zarr")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Delete the store and make it again" in err, err
    assert not (tmp_path / "s.zarr").exists()


def test_a_store_whose_root_attributes_were_edited_refuses_to_open(
    tmp_path: Path, modes_ds: xr.Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 26 item 9: `d_model` (or a scores store's `null_low`/`null_high`, which Fig. 3, S1 and the claims read)
    edited in a store's zarr.json opened as if nothing had happened: the content record covered the files only."""
    from qkdissect.cli import main
    from qkdissect.errors import DamagedStoreError
    from qkdissect.stores.content import CONTENT_ATTR

    out = store.write_store(modes_ds, tmp_path / "m.zarr")
    meta_path = out / "zarr.json"
    written = meta_path.read_text()
    rec = json.loads(written)["attributes"][CONTENT_ATTR]
    assert rec["version"] == 2 and "d_model" in rec["attributes"] and CONTENT_ATTR not in rec["attributes"]

    def edit(change: Any) -> None:
        meta = json.loads(written)
        change(meta["attributes"])
        meta_path.write_text(json.dumps(meta))

    edit(lambda a: a.__setitem__("d_model", a["d_model"] + 1))
    with pytest.raises(DamagedStoreError, match=r"m.zarr is damaged: its attribute d_model changed after it was"):
        store.open_store(out)
    assert main(["scores", str(out), "-q", "-o", str(tmp_path / "s.zarr")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Delete the store and make it again" in err, err
    assert "attribute d_model changed" in err and not (tmp_path / "s.zarr").exists()
    edit(lambda a: a.update(note="mine", dtype=None) or a.pop("spec"))  # added, changed and removed
    with pytest.raises(
        DamagedStoreError, match="attribute dtype changed and attribute spec removed and attribute note"
    ):
        store.open_store(out)
    # the same values written out again (another indentation, another key order) are the same attributes
    meta_path.write_text(json.dumps(dict(reversed(json.loads(written).items())), indent=7))
    assert store.open_store(out).attrs["d_model"] == modes_ds.attrs["d_model"]


def test_a_store_written_before_attributes_were_recorded_still_opens(tmp_path: Path, modes_ds: xr.Dataset) -> None:
    """A record of version 1 (the files' digests alone, a flat mapping) is read as such: its chunks are checked,
    its attributes cannot be."""
    from qkdissect.errors import DamagedStoreError
    from qkdissect.stores.content import CONTENT_ATTR

    out = store.write_store(modes_ds, tmp_path / "m.zarr")
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"][CONTENT_ATTR] = meta["attributes"][CONTENT_ATTR]["files"]  # as written before
    meta["attributes"]["d_model"] += 1
    (out / "zarr.json").write_text(json.dumps(meta))
    assert store.open_store(out).attrs["d_model"] == modes_ds.attrs["d_model"] + 1
    (out / "U/c/1/0/0/0").unlink()
    with pytest.raises(DamagedStoreError, match="its chunk U/c/1/0/0/0 is gone"):
        store.open_store(out)


def test_a_streamed_store_records_its_content(tmp_path: Path) -> None:
    from qkdissect.stores.content import CONTENT_ATTR, content_digests

    with store.StreamingStore(tmp_path / "p.zarr") as st:
        st.create("q", (5, 2), ("image", "mode"), (2, 2), "float32")
        for start in (0, 2, 4):
            st.write("q", start, np.full((min(2, 5 - start), 2), start, np.float32))
        st.finish(xr.Dataset({"top": ("mode", np.arange(2))}, attrs={"qkdissect_schema": "projections/v1"}))
    back = store.open_store(tmp_path / "p.zarr")
    assert back.attrs[CONTENT_ATTR]["files"] == content_digests(tmp_path / "p.zarr")
    assert {"q/c/0/0", "q/c/1/0", "q/c/2/0", "top/c/0"} <= back.attrs[CONTENT_ATTR]["files"].keys()
    assert set(back.attrs[CONTENT_ATTR]["attributes"]) == {"qkdissect_schema"}
