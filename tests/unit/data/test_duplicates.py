"""Exact and near-duplicate images: copies of real photographs (byte-identical, resized and re-encoded) are
dropped and named, distinct photographs are kept, the greedy rule equals a brute force on random hashes and
commutes with a limit, and every pass over a de-duplicated set sees the same ids."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from qkdissect.data.duplicates import deduplicate, duplicate_of, hamming, hash_items
from qkdissect.data.sources import image_source, source_digests
from qkdissect.options import DEDUPE_DISTANCE, dedupe_distance
from qkdissect.provenance.records import items_sha256
from tests.helpers import make_tiny_vit


def brute_force(hashes: list[int | None], t: int) -> list[int]:
    """The rule read literally: walk the set in order; an image is dropped when some image kept before it is
    within t bits (the first such one is named)."""
    kept: list[int] = []
    of = []
    for h in hashes:
        near = [j for j in kept if h is not None and _bits(h, hashes[j]) <= t]
        of.append(near[0] if near else -1)
        if not near:
            kept.append(len(of) - 1)
    return of


def _bits(a: int, b: int | None) -> int:
    return 65 if b is None else bin(a ^ b).count("1")


@settings(max_examples=60, deadline=None)
@given(
    base=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=6),
    picks=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2**64 - 1), st.integers(0, 4)), max_size=25),
    t=st.integers(0, 12),
    limit=st.integers(1, 31),
)
def test_greedy_rule_equals_brute_force_and_commutes_with_a_limit(
    base: list[int], picks: list[tuple[int, int, int]], t: int, limit: int
) -> None:
    # near copies of a few base hashes (a few random bits flipped), so that chains and ties occur
    hashes: list[int | None] = list(base)
    for b, noise, n_bits in picks:
        flips = 0
        for k in range(n_bits):
            flips ^= 1 << ((noise >> (6 * k)) & 63)
        hashes.append(base[b % len(base)] ^ flips if noise % 7 else None)
    of, dist = duplicate_of(hashes, t)
    assert of.tolist() == brute_force(hashes, t)
    for i in np.flatnonzero(of >= 0):
        assert dist[i] == _bits(hashes[i], hashes[of[i]]) <= t  # type: ignore[arg-type]
    head, _ = duplicate_of(hashes[:limit], t)
    np.testing.assert_array_equal(head, of[:limit])  # the first N's share of the whole set's outcome


def test_hamming_counts_bits() -> None:
    a = np.array([0b1011, 2**64 - 1], dtype=np.uint64)
    assert hamming(a[:, None], np.array([0, 0b1000], dtype=np.uint64)).tolist() == [[3, 2], [64, 63]]


def test_the_option_as_the_passes_take_it() -> None:
    assert dedupe_distance(None) is None and dedupe_distance(False) is None
    assert dedupe_distance(True) == DEDUPE_DISTANCE and dedupe_distance(0) == 0
    with pytest.raises(ValueError, match="dedupe must be <= 64"):
        dedupe_distance(65)


def _copies(folder: Path, photos: list[Path]) -> dict[str, str]:
    """The photos, and copies of the first three: byte-identical, half size re-encoded as JPEG quality 75, and
    re-encoded as PNG under a name that sorts *before* the original (which then is the one dropped).
    -> {dropped id: the id it duplicates}."""
    folder.mkdir()
    for p in photos:
        shutil.copy(p, folder / p.name)
    a, b, c = photos[:3]
    shutil.copy(a, folder / f"zz_copy_{a.name}")
    img = Image.open(b).convert("RGB")
    img.resize((img.width // 2, img.height // 2), Image.Resampling.BICUBIC).save(folder / "zz_small.jpg", quality=75)
    Image.open(c).convert("RGB").save(folder / "aa_first.png")
    return {f"zz_copy_{a.name}": a.name, "zz_small.jpg": b.name, c.name: "aa_first.png"}


@pytest.mark.assets
def test_copies_of_real_photographs_are_dropped_and_distinct_ones_kept(assets: Path, tmp_path: Path) -> None:
    photos = sorted((assets / "images/imagenet_sample_1000").glob("*.jpg"))[::50]  # 20 classes
    expected = _copies(tmp_path / "set", photos)
    found = deduplicate(image_source(f"folder:{tmp_path / 'set'}"), DEDUPE_DISTANCE)
    assert {d["id"]: d["duplicate_of"] for d in found.dropped} == expected
    assert [d["distance"] for d in found.dropped if d["id"].startswith("zz_copy")] == [0]
    assert len(found.kept) == len(photos) and len(found.listed) == len(photos) + 3
    assert all(d["sha256"] for d in found.dropped)
    # every photo of the 1000 differs from every other in more than the default distance
    hashes = np.array(hash_items(image_source(f"folder:{assets / 'images/imagenet_sample_1000'}").items).hashes,
                      dtype=np.uint64)  # fmt: skip
    d = hamming(hashes[:, None], hashes[None, :])
    assert d[~np.eye(len(hashes), dtype=bool)].min() > DEDUPE_DISTANCE


def test_the_stereo_pair_of_the_offline_default_is_one_image() -> None:
    found = deduplicate(image_source("skimage"), DEDUPE_DISTANCE)
    assert [(d["id"], d["duplicate_of"]) for d in found.dropped] == [
        ("skimage:motorcycle_right", "skimage:motorcycle_left")
    ]


@pytest.mark.assets
def test_passes_see_the_same_ids_and_the_store_names_the_dropped(assets: Path, tmp_path: Path) -> None:
    """The projections and logits stores of a de-duplicated set: the copies are not among the images, they are
    named in attrs and provenance, and the recorded digest is the one listing the set again gives (audit)."""
    from qkdissect.cli import main
    from qkdissect.passes.logits import compute_logit_stats
    from qkdissect.passes.weights import compute_modes
    from qkdissect.stores import open_store

    photos = sorted((assets / "images/imagenet_sample_1000").glob("*.jpg"))[::200]  # 5 classes
    expected = _copies(tmp_path / "set", photos)
    spec = make_tiny_vit(tmp_path / "w", depth=2)
    compute_modes(spec, tmp_path / "m.zarr", device="cpu")
    images = f"folder:{tmp_path / 'set'}"
    out = tmp_path / "p.zarr"
    assert main(["project", spec, "--modes", str(tmp_path / "m.zarr"), "--images", images, "--dedupe",
                 "--workers", "0", "--device", "cpu", "-q", "-o", str(out)]) == 0  # fmt: skip
    p = open_store(out, "projections")
    ids = [str(i) for i in p.image_id.values]
    assert not set(ids) & set(expected) and len(ids) == len(photos)
    dd = p.attrs["images"]["dedupe"]
    assert dd["max_distance"] == DEDUPE_DISTANCE and {d["id"] for d in dd["dropped"]} == set(expected)
    dep = p.attrs["provenance"]["inputs"]["images"]
    assert dep["dedupe"]["dropped"] == dd["dropped"] and p.attrs["provenance"]["parameters"]["dedupe"] == 6
    assert dep["sha256"] == items_sha256(source_digests(image_source(images)))  # what `qkdissect audit` lists
    lg = compute_logit_stats(spec, tmp_path / "m.zarr", images, device="cpu", workers=0, dedupe=6, limit=4,
                             progress=False)  # fmt: skip
    first4 = [(d["id"], d["duplicate_of"]) for d in lg.attrs["images"]["dedupe"]["dropped"]]
    assert lg.attrs["images"]["count"] == 3 and first4 == [(photos[2].name, "aa_first.png")]
    from qkdissect.provenance.audit import audit

    results = tmp_path / "results"
    results.mkdir()
    shutil.move(out, results / "p.zarr")
    assert [a.status for a in audit(results, allow_dirty=True)] == ["ok"]
    shutil.copy(photos[3], tmp_path / "set" / "zz_small.jpg")  # a dropped duplicate replaced by another photo
    (art,) = audit(results, allow_dirty=True)
    assert art.status != "ok" and any("1 changed (zz_small.jpg)" in f.message for f in art.findings), art.findings
    off = tmp_path / "off.zarr"
    assert main(["project", spec, "--modes", str(tmp_path / "m.zarr"), "--images", images,
                 "--workers", "0", "--device", "cpu", "-q", "-o", str(off)]) == 0  # fmt: skip
    full = open_store(off, "projections")
    assert full.sizes["image"] == len(photos) + 3 and full.attrs["images"]["dedupe"] is None
