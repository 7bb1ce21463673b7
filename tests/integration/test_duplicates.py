"""Duplicates among real photographs: copies (byte-identical, resized and re-encoded) are dropped and named, distinct
photographs are kept, and every pass over a de-duplicated set sees the same ids."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qkdissect.data.duplicates import deduplicate, hamming, hash_items
from qkdissect.data.sources import image_source, source_digests
from qkdissect.options import DEDUPE_DISTANCE
from qkdissect.provenance.records import items_sha256
from tests.helpers import make_tiny_vit


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
