"""Sharded passes: N shard stores merge into exactly the store one job writes (values, top-k order and ties,
per-image rows, image ids and digests, dedupe, skipped images, provenance but for timings and shard bookkeeping);
the merge's top-k rule is StreamingTopK's; shards that do not belong together are refused; the audit follows the
chain from the merged store to its shards."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import qkdissect as qk
from qkdissect.cli import main as cli
from qkdissect.core.topk import StreamingTopK, fixed_point, from_fixed_point, merge_top
from qkdissect.errors import QKDissectError
from qkdissect.passes.atlas import compute_atlas_maps
from qkdissect.passes.preference import compute_preference
from qkdissect.passes.projections import compute_projections
from qkdissect.passes.same_object import compute_same_object
from qkdissect.passes.shards import Shard, merge_atlas, merge_projections, shard_paths
from qkdissect.passes.weights import compute_modes
from qkdissect.provenance.audit import audit
from qkdissect.stores import open_store
from tests.helpers import make_tiny_vit, write_photos

#: provenance fields that say when and how fast, not what: they may differ between a single job and its shards
VOLATILE = ("started", "finished", "timings_s", "shards")


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in VOLATILE}
    out["dependencies"] = [d for d in record["dependencies"] if not d["role"].startswith("shard ")]
    return out


def assert_same_store(merged: xr.Dataset, single: xr.Dataset) -> None:
    """Every variable and coordinate bit for bit, and every attribute but the provenance's timings and shards."""
    assert set(merged.variables) == set(single.variables)
    for name in single.variables:
        a, b = merged[name].values, single[name].values
        assert a.dtype == b.dtype and a.shape == b.shape, name
        if a.dtype.kind == "f":
            assert np.array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}")), name  # the same bits
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)
        assert merged[name].attrs == single[name].attrs, name
    skip = ("provenance", "qkdissect_content")
    assert {k: v for k, v in merged.attrs.items() if k not in skip} == {
        k: v for k, v in single.attrs.items() if k not in skip
    }
    assert _comparable(merged.attrs["provenance"]) == _comparable(single.attrs["provenance"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny random ViT, its modes, and 7 photographs + a copy of one (dropped by the dedupe) + a broken file."""
    root = tmp_path_factory.mktemp("shards")
    spec = make_tiny_vit(root / "w", depth=2)
    compute_modes(spec, root / "modes.zarr", device="cpu")
    photos = write_photos(root / "photos", n=7)
    shutil.copy(photos[2], root / "photos" / "photo02_copy.png")
    (root / "photos" / "photo04b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return {"root": root, "spec": spec, "modes": root / "modes.zarr", "images": f"folder:{root / 'photos'}"}


def _run(tiny: dict[str, Any], out: Path, shard: Shard | None = None, **kw: Any) -> xr.Dataset:
    args: dict[str, Any] = dict(top_k=4, device="cpu", workers=0, progress=False, batch_size=2, dedupe=0)
    return compute_projections(tiny["spec"], tiny["modes"], tiny["images"], out, shard=shard, **{**args, **kw})


def test_three_uneven_shards_merge_into_the_single_jobs_store(tiny: dict[str, Any], tmp_path: Path) -> None:
    """8 images after the dedupe (one broken), batches of 2, 3 shards: 2 + 2 + 4 images. The clipped score
    gives many ties (0 where a map never turns positive), which rank by image index in both."""
    score = "clipped"
    single = _run(tiny, tmp_path / "single.zarr", score=score)
    folder = tmp_path / "set.shards"
    for path in shard_paths(folder, 3):
        _run(tiny, path, Shard.parse(path.stem), score=score)
    sizes = [open_store(p).sizes["image"] for p in shard_paths(folder, 3)]
    assert sizes == [2, 2, 4]
    merged = qk.merge_shards(shard_paths(folder, 3), tmp_path / "merged.zarr")  # by the kind of the stores
    assert_same_store(merged, single)
    # the set is what it should be: the copy dropped, the broken file skipped, and ties ranked alike
    assert single.attrs["images"]["dedupe"]["dropped"][0]["id"] == "photo02_copy.png"
    assert single.attrs["images"]["skipped"] == 1 and not single.valid.values.all()
    assert merged.attrs["provenance"]["inputs"]["images"]["count"] == 9
    roles = [d["role"] for d in merged.attrs["provenance"]["dependencies"]]
    assert roles[-3:] == [f"shard {k}-of-3" for k in (1, 2, 3)]
    s, top = merged.top_score.values, merged.top_image.values
    tied = (s[..., 1:] == s[..., :-1]) & (top[..., 1:] >= 0)
    assert tied.sum() > 10 and (top[..., 1:][tied] > top[..., :-1][tied]).all()  # ties: the smaller index first
    assert len(np.unique(top[..., 0])) > 2  # the top images differ between modes: not a degenerate set
    on_cls = [open_store(p).key_top_on_prefix.sel(prefix_kind="cls").values for p in shard_paths(folder, 3)]
    assert all(c.sum() > 0 for c in on_cls)  # each shard counts key maps peaking on the CLS token: the merge sums them


def test_more_shards_than_batches_leave_empty_shards(tiny: dict[str, Any], tmp_path: Path) -> None:
    """10 shards of 2 batches: eight shards hold no image, the merge is still the single job's store (top 8 of 7 valid
    images: an empty rank); a shard given twice or left out is refused."""
    single = _run(tiny, tmp_path / "single.zarr", batch_size=4, top_k=8)
    paths = shard_paths(tmp_path / "s", 10)
    for path in paths:
        _run(tiny, path, Shard.parse(path.stem), batch_size=4, top_k=8)
    assert sum(open_store(p).sizes["image"] == 0 for p in paths) == 8
    assert_same_store(merge_projections(paths, tmp_path / "merged.zarr"), single)
    with pytest.raises(QKDissectError, match="expected shard 3 of 10"):
        merge_projections([*paths[:2], *paths[3:]], tmp_path / "bad.zarr")
    other = _run(tiny, tmp_path / "other.zarr", Shard(1, 10), batch_size=4, top_k=3)
    assert other.attrs["shard"]["stop"] == 0
    with pytest.raises(QKDissectError, match="top_k differs"):
        merge_projections([tmp_path / "other.zarr", *paths[1:]], tmp_path / "bad.zarr")
    with pytest.raises(QKDissectError, match="no shard store"):
        merge_projections([tmp_path / "single.zarr", *paths[1:]], tmp_path / "bad.zarr")
    assert not (tmp_path / "bad.zarr").exists()


def test_the_same_modes_store_given_two_ways_is_the_same_pass(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards given the modes store as a relative path, an absolute one and a link to it are one pass (they were
    refused: "its inputs differs"); a modes store of other content is still another pass."""
    monkeypatch.chdir(tiny["root"])
    (tmp_path / "link.zarr").symlink_to(tiny["modes"])
    paths = shard_paths(tmp_path / "s", 3)
    for path, modes in zip(paths, ["modes.zarr", tiny["modes"], tmp_path / "link.zarr"], strict=True):
        _run({**tiny, "modes": modes}, path, Shard.parse(path.stem))
    assert open_store(paths[0]).attrs["provenance"]["inputs"]["modes store"]["path"] == "modes.zarr"
    single = _run({**tiny, "modes": "modes.zarr"}, tmp_path / "single.zarr")  # as the first shard was given it
    assert_same_store(merge_projections(paths, tmp_path / "merged.zarr"), single)
    other = tmp_path / "other_modes.zarr"
    compute_modes(tiny["spec"], other, device="cpu", block_rtol=1e-3)  # the same weights, another store
    _run({**tiny, "modes": other}, tmp_path / "other.zarr", Shard(2, 3))
    with pytest.raises(QKDissectError, match=r"is not a shard of the same pass as .*: its inputs differs"):
        merge_projections([paths[0], tmp_path / "other.zarr", paths[2]], tmp_path / "bad.zarr")


def test_audit_follows_the_merged_store_to_its_shards(tiny: dict[str, Any], tmp_path: Path) -> None:
    results = tmp_path / "results"
    paths = shard_paths(results / "projections/tiny/set.shards", 2)
    for path in paths:
        _run(tiny, path, Shard.parse(path.stem))
    merge_projections(paths, results / "projections/tiny/set.zarr")
    arts = audit(results, allow_dirty=True)
    assert len(arts) == 3 and {a.status for a in arts} <= {"ok", "different-code"}, [a.as_dict() for a in arts]
    # an image of the second shard changes: that shard and the merged store are out of date, the first is not
    photos = Path(tiny["root"], "photos")
    (photos / "photo06.png").write_bytes((photos / "photo00.png").read_bytes())
    try:
        status = {a.path.name: a.status for a in audit(results, allow_dirty=True)}
    finally:
        write_photos(photos, n=7)
    assert status == {"1-of-2.zarr": status["1-of-2.zarr"], "2-of-2.zarr": "changed-input", "set.zarr": "changed-input"}
    assert status["1-of-2.zarr"] in ("ok", "different-code")


def test_atlas_shards_merge_into_the_single_jobs_atlas_store(tiny: dict[str, Any], tmp_path: Path) -> None:
    """The atlas pass over 7 top images in batches of 2, as 3 shards (2 + 2 + 3 images) and as one job: the
    merged store (by `qkdissect merge-shards`) is the single job's, bit for bit; the audit follows it to its
    shards; a shard of another pass or a missing shard is refused."""
    results = tmp_path / "results"
    proj = _run(tiny, results / "projections/tiny/set.zarr", top_k=3)
    args: dict[str, Any] = dict(device="cpu", batch_size=2, progress=False, grid=3)
    single = compute_atlas_maps(tiny["spec"], tiny["modes"], results / "projections/tiny/set.zarr",
                                tmp_path / "single.zarr", **args)  # fmt: skip
    paths = shard_paths(results / "atlas_maps/tiny/set.shards", 3)
    shards = [compute_atlas_maps(tiny["spec"], tiny["modes"], results / "projections/tiny/set.zarr", path,
                                 shard=Shard.parse(path.stem), **args) for path in paths]  # fmt: skip
    held = [ds.sizes["image"] for ds in shards]
    assert sum(held) == single.sizes["image"] >= 5 and held[:2] == [2, 2]
    assert all((ds.slot_image.values >= 0).sum() < (single.slot_image.values >= 0).sum() for ds in shards)
    merged_path = results / "atlas_maps/tiny/set.zarr"
    assert cli(["merge-shards", *map(str, paths), "-o", str(merged_path)]) == 0
    merged = open_store(merged_path)
    assert_same_store(merged, single)
    assert (merged.slot_image.values >= 0).all() and np.isfinite(merged.q_lo.values).all()
    roles = [d["role"] for d in merged.attrs["provenance"]["dependencies"]]
    assert roles[-3:] == [f"shard {k}-of-3" for k in (1, 2, 3)]
    arts = audit(results, allow_dirty=True)
    assert len(arts) == 5 and {a.status for a in arts} <= {"ok", "different-code"}, [a.as_dict() for a in arts]
    with pytest.raises(QKDissectError, match="shard 3 of 3 is missing"):
        merge_atlas(paths[:2], tmp_path / "bad.zarr")
    other = compute_atlas_maps(tiny["spec"], tiny["modes"], proj, tmp_path / "other.zarr", shard=Shard(2, 3),
                               **{**args, "grid": 2})  # fmt: skip
    assert other.attrs["shard"]["start"] == 2
    with pytest.raises(QKDissectError, match="map_grid differs"):
        merge_atlas([paths[0], tmp_path / "other.zarr", paths[2]], tmp_path / "bad.zarr")
    assert not (tmp_path / "bad.zarr").exists()


def _mask_pass(kind: str, tiny: dict[str, Any], voc: str, out: Path, shard: Shard | None = None) -> xr.Dataset:
    """The preference (example image 5) or same-object pass over the 14 VOC photographs, in batches of 2."""
    args: dict[str, Any] = dict(batch_size=2, device="cpu", progress=False, shard=shard)
    if kind == "preference":
        return compute_preference(tiny["spec"], voc, out, example=5, **args)
    return compute_same_object(tiny["spec"], tiny["modes"], voc, out, top=3, **args)


@pytest.mark.assets
@pytest.mark.parametrize("kind", ["preference", "same_object"])
def test_mask_dataset_shards_merge_into_the_single_jobs_store(
    kind: str, tiny: dict[str, Any], assets: Path, tmp_path: Path
) -> None:
    """The preference and same-object passes over VOC photographs as 3 shards (4 + 4 + 6 images) merged by
    `qkdissect merge-shards`: the single job's store bit for bit (the groups from the float64 tables, the example
    crop from shard 2; the top images, p and chance from every image's scores); a missing shard, or one of other
    parameters, is refused."""
    voc = f"voc:{assets / 'images/voc2012_seg_samples'}"
    single = _mask_pass(kind, tiny, voc, tmp_path / "single.zarr")
    paths = shard_paths(tmp_path / "set.shards", 3)
    held = [_mask_pass(kind, tiny, voc, path, Shard.parse(path.stem)).sizes["image"] for path in paths]
    assert held == [4, 4, 6]
    assert cli(["merge-shards", *map(str, paths), "-o", str(tmp_path / "merged.zarr")]) == 0
    assert_same_store(open_store(tmp_path / "merged.zarr"), single)
    if kind == "preference":
        assert single.example_crop.size > 0 and np.isfinite(single.layer_same.values).all()
    else:
        assert single.attrs["eligible_images"] >= 3 and np.isfinite(single.p.values).all()
        assert len(np.unique(single.top_image.values[..., 0])) > 1  # the top images differ between modes
    with pytest.raises(QKDissectError, match="shard 3 of 3 is missing"):
        qk.merge_shards(paths[:2], tmp_path / "bad.zarr")
    other = tmp_path / "other.zarr"
    if kind == "preference":
        compute_preference(tiny["spec"], voc, other, example=4, batch_size=2, device="cpu", progress=False,
                           shard=Shard(2, 3))  # fmt: skip
    else:
        compute_same_object(tiny["spec"], tiny["modes"], voc, other, top=2, batch_size=2, device="cpu",
                            progress=False, shard=Shard(2, 3))  # fmt: skip
    with pytest.raises(QKDissectError, match="is not a shard of the same pass"):
        qk.merge_shards([paths[0], other, paths[2]], tmp_path / "bad.zarr")
    assert not (tmp_path / "bad.zarr").exists()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), k=st.integers(1, 6), cuts=st.lists(st.integers(0, 30), max_size=4), seed=st.integers(0, 9))
def test_merge_top_of_shards_equals_the_streaming_top_k(n: int, k: int, cuts: list[int], seed: int) -> None:
    """Scores with many ties, zeros of both signs and NaNs: the top-k of each shard's top-k merged in numpy is the
    StreamingTopK of the whole stream, places and payloads alike."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(-2, 3, (n, 3, 2), generator=g).float() * 0.5
    scores[torch.rand(n, 3, 2, generator=g) < 0.1] = float("nan")
    scores[torch.rand(n, 3, 2, generator=g) < 0.2] = -0.0
    flags = torch.randint(0, 2, (n, 3, 2), generator=g)
    whole = StreamingTopK((3, 2), k, n_payload=1)
    whole.update(scores, torch.arange(n), [flags])
    parts = []
    for a, b in zip([0, *sorted(c % (n + 1) for c in cuts)], [*sorted(c % (n + 1) for c in cuts), n], strict=True):
        part = StreamingTopK((3, 2), k, n_payload=1)
        part.update(scores[a:b], torch.arange(b - a), [flags[a:b]])  # local indices, as a shard store has them
        parts.append((part.score.numpy(), part.index.numpy() + a, part.payload[0].numpy()))
    s, i, (f,) = merge_top(*(np.concatenate(x, axis=-1) for x in list(zip(*parts, strict=True))[:2]), k,
                           [np.concatenate([p[2] for p in parts], axis=-1)])  # fmt: skip
    have = whole.score.shape[-1]
    np.testing.assert_array_equal(i[..., :have], whole.index.numpy())
    np.testing.assert_array_equal(s[..., :have], whole.score.numpy())
    np.testing.assert_array_equal(f[..., :have], whole.payload[0].numpy())
    assert (i[..., have:] == -1).all() and np.isneginf(s[..., have:]).all()


def test_fixed_point_sums_do_not_depend_on_the_split() -> None:
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(101, 3, 7)))
    x = x / x.norm(dim=-1, keepdim=True)
    whole = fixed_point(x).sum(dim=1).numpy()
    parts = sum(fixed_point(x[a:b]).sum(dim=1).numpy() for a, b in ((0, 13), (13, 14), (14, 101)))
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_allclose(from_fixed_point(whole), x.sum(dim=0).numpy(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(from_fixed_point(fixed_point(x).numpy()), x.numpy(), rtol=0, atol=2.0**-62)


def test_shard_numbers_are_checked() -> None:
    assert Shard.parse("2/4") == Shard.parse("2-of-4") == Shard(2, 4)
    for bad in ("0/4", "5/4", "2", "a/b"):
        with pytest.raises(QKDissectError, match="K/N"):
            Shard.parse(bad)
    spans = [Shard(k, 3).span(7, 2) for k in (1, 2, 3)]
    assert spans == [(0, 2), (2, 4), (4, 7)]
