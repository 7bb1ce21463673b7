"""The paper's data as the paper used it: the ImageNet validation split from a Hugging Face hub cache (parquet)
gives the same ids, labels and image bytes as the ILSVRC folder; images carry ImageNet labels where the layout
knows them, and `class:` references pick an image by class; O3 and ADE20K are checked for their full counts; the
rehearsal builders lay real photographs out as those datasets."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import xarray as xr
from PIL import Image

from qkdissect.data import parquet
from qkdissect.data.dataset import ImageDataset, collate
from qkdissect.data.decoding import decode
from qkdissect.data.geometry import Preprocess
from qkdissect.data.labels import ClassRefError, imagenet_classes, parse_class_ref, pick
from qkdissect.data.masks import MaskDatasetError, ade20k_dataset, mask_dataset, o3_dataset
from qkdissect.data.parquet import ParquetSourceError
from qkdissect.data.sources import image_source, source_digests
from qkdissect.provenance.audit import _Hashes
from tests.helpers import REPO, make_tiny_vit

sys.path.insert(0, str(REPO))
from rehearsal.datasets import (
    ade20k_layout,
    imagenet_hub_cache,
    imagenet_images,
    imagenet_val_folder,
    o3_layout,
    voc_to_ade_classes,
)

N = 12  # rehearsal ImageNet images: 3 parquet files of 4 rows, row groups of 2 rows


@pytest.fixture(scope="module")
def layouts(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("imagenet")
    val = imagenet_val_folder(base / "kaggle", N, assets)
    snapshot = imagenet_hub_cache(base / "hub", N, assets, files=3, row_group_size=2)
    return {"val": val, "cache": base / "hub", "snapshot": snapshot, "base": base}


def test_both_imagenet_layouts_give_the_same_ids_labels_and_bytes(layouts: dict[str, Path], assets: Path) -> None:
    folder = image_source(f"imagenet-val:{layouts['val']}")
    hub = image_source(f"imagenet-hf:{layouts['cache']}")
    want = imagenet_images(N, assets)  # what was laid out: id, class, photograph
    assert [it.id for it in folder.items] == [it.id for it in hub.items] == [w.id for w in want]
    assert [it.label for it in folder.items] == [it.label for it in hub.items] == [w.label for w in want]
    assert [it.wnid for it in hub.items] == [w.wnid for w in want]
    assert len({w.label for w in want}) == N and [w.label for w in want] != sorted(w.label for w in want)
    photos = [hashlib.sha256(w.file.read_bytes()).hexdigest() for w in want]
    assert [d for _, d in source_digests(folder)] == [d for _, d in source_digests(hub)] == photos
    assert _Hashes().items("images", f"imagenet-hf:{layouts['cache']}", 5) == source_digests(  # what audit rehashes
        image_source(f"imagenet-val:{layouts['val']}", limit=5)
    )
    assert hub.describe()["revision"] == layouts["snapshot"].name and hub.kind == "imagenet-hf"
    assert [it.row for it in hub.items[:5]] == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 0)]  # 4 rows a file
    np.testing.assert_array_equal(np.asarray(decode(hub.items[7])), np.asarray(decode(folder.items[7])))
    assert [it.id for it in image_source(f"imagenet-hf:{layouts['cache']}", limit=5).items] == [w.id for w in want[:5]]


def test_a_dataloader_reads_each_row_group_once_and_keeps_few(
    layouts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = image_source(f"imagenet-hf:{layouts['cache']}")
    folder = image_source(f"imagenet-val:{layouts['val']}")
    reads: list[tuple[Path, int]] = []
    real = parquet._RowGroups._read
    monkeypatch.setattr(parquet, "_CACHE", parquet._RowGroups())

    def counted(self: parquet._RowGroups, f: Path, g: int) -> list[bytes | None]:
        reads.append((f, g))
        return real(self, f, g)

    monkeypatch.setattr(parquet._RowGroups, "_read", counted)
    pre = Preprocess((32, 32), 36, (0.5,) * 3, (0.5,) * 3)  # type: ignore[arg-type]
    got = [ImageDataset(hub, pre)[i] for i in range(N)]
    assert len(reads) == len(set(reads)) == N // 2  # every row group read once, in order
    assert len(parquet._CACHE.groups) == parquet.CACHED_GROUPS
    small = parquet._RowGroups(max_bytes=1)  # a bound in bytes keeps only the row group being read
    assert [small.get(it.path, *it.row) for it in hub.items[:4]] == [
        parquet.read_bytes(it.path, *it.row) for it in hub.items[:4]
    ]  # type: ignore[arg-type]
    assert list(small.groups) == [(hub.items[3].path, 1)]
    loaders = [torch.utils.data.DataLoader(ImageDataset(s, pre), batch_size=5, num_workers=2, collate_fn=collate)
               for s in (hub, folder)]  # fmt: skip
    for (ia, xa, _, da), (ib, xb, _, db) in zip(*loaders, strict=True):
        assert ia == ib and da == db
        torch.testing.assert_close(xa, xb)
    torch.testing.assert_close(got[3][1], ImageDataset(folder, pre)[3][1])


def test_the_hub_cache_is_found_as_huggingface_hub_finds_it(
    layouts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [it.id for it in image_source(f"imagenet-hf:{layouts['cache']}").items]
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "hub").symlink_to(layouts["cache"])
    assert [it.id for it in image_source("imagenet-hf").items] == ids
    monkeypatch.setenv("HF_HUB_CACHE", str(layouts["cache"]))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "nowhere"))
    rev = layouts["snapshot"].name
    for spec in ("imagenet-hf", f"imagenet-hf@{rev}", "imagenet-hf@main", f"imagenet-hf:{layouts['snapshot']}",
                 f"imagenet-hf:{layouts['cache'] / parquet.REPO_FOLDER}@{rev}"):  # fmt: skip
        src = image_source(spec)
        assert [it.id for it in src.items] == ids and src.revision == rev, spec
    with pytest.raises(ParquetSourceError, match=r"no revision 'v2'.*refs: \['main'\].*imagenet-hf:.*@COMMIT"):
        image_source("imagenet-hf@v2")
    with pytest.raises(ParquetSourceError, match=r"revision '\.\.': use a commit hash or a ref name"):
        image_source("imagenet-hf@..")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ParquetSourceError, match=r"empty does not exist.*hf download ILSVRC/imagenet-1k"):
        image_source("imagenet-hf")


def test_a_partial_or_broken_download_names_what_is_missing(layouts: dict[str, Path], tmp_path: Path) -> None:
    repo = tmp_path / parquet.REPO_FOLDER
    shutil.copytree(layouts["cache"] / parquet.REPO_FOLDER, repo, symlinks=True)
    data = next((repo / "snapshots").iterdir()) / "data"
    (data / "validation-00001-of-00003.parquet").unlink()
    with pytest.raises(ParquetSourceError, match=r"has 2 of the 3 validation files \(missing: validation-00001"):
        image_source(f"imagenet-hf:{tmp_path}")
    shutil.copyfile(layouts["snapshot"] / "data" / "validation-00001-of-00003.parquet", tmp_path / "outside.parquet")
    (data / "validation-00001-of-00003.parquet").symlink_to(tmp_path / "outside.parquet")  # leaves the repository
    with pytest.raises(ParquetSourceError, match=r"missing: validation-00001-of-00003"):
        image_source(f"imagenet-hf:{tmp_path}")
    (data / "validation-00001-of-00003.parquet").unlink()
    (data / "validation-00001-of-00003.parquet").symlink_to("../../../blobs/gone")  # a blob never downloaded
    with pytest.raises(ParquetSourceError, match=r"missing: validation-00001-of-00003.*leads nowhere"):
        image_source(f"imagenet-hf:{tmp_path}")


def _write_parquet(path: Path, paths: list[str | None], labels: list[int], names: list[str] | None = None) -> None:
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    meta = {"huggingface": json.dumps({"info": {"features": {"label": {"names": names}}}})} if names else None
    table = pa.table({"image": pa.array([{"bytes": b"x%d" % i, "path": p} for i, p in enumerate(paths)], struct),
                      "label": pa.array(labels, pa.int64())}).replace_schema_metadata(meta)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_parquet_ids_labels_and_label_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "plain" / "data" / "validation-00000-of-00001.parquet"
    _write_parquet(f, ["ILSVRC2012_val_00000007_n01440764.JPEG", None, "other.JPEG"], [0, -1, 999],
                   list(imagenet_classes().lemmas))  # fmt: skip
    src = image_source(f"imagenet-hf:{tmp_path / 'plain'}")  # a plain `hf download --local-dir` folder
    assert [(it.id, it.label) for it in src.items] == [
        ("ILSVRC2012_val_00000007", 0), ("other", 999), ("validation-00000-of-00001/000001", None)]  # fmt: skip
    with pytest.raises(ParquetSourceError, match=r"no hub cache.*@main"):
        image_source(f"imagenet-hf:{tmp_path / 'plain'}@main")
    h = tmp_path / "backwards" / "validation-00000-of-00001.parquet"
    _write_parquet(h, ["ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000001.JPEG"], [0, 1])
    with caplog.at_level("WARNING", logger="qkdissect.data.parquet"):
        assert [it.row for it in image_source(f"imagenet-hf:{h.parent}").items] == [(0, 1), (0, 0)]
    assert "not in id order (1 steps back)" in caplog.text
    g = tmp_path / "reordered" / "validation-00000-of-00001.parquet"
    _write_parquet(g, ["a.JPEG"], [0], sorted(imagenet_classes().lemmas))
    with pytest.raises(ParquetSourceError, match="not the ImageNet-1k sorted-wnid order"):
        image_source(f"imagenet-hf:{tmp_path / 'reordered'}")


def test_a_parquet_file_that_is_not_imagenet_or_not_parquet_is_named(tmp_path: Path) -> None:
    """A `label` column of strings gave a TypeError; a file that is not parquet, pyarrow's error naming no file."""
    f = tmp_path / "words" / "validation-00000-of-00001.parquet"
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"image": pa.array([{"bytes": b"x", "path": "a.JPEG"}], struct),
                             "label": pa.array(["tench"])}), f.parent.mkdir() or f)  # fmt: skip
    with pytest.raises(ParquetSourceError) as e:
        image_source(f"imagenet-hf:{f.parent}")
    assert str(e.value).startswith(f"{f}: its `label` column holds string, not ImageNet class indices (integers ")
    g = tmp_path / "text" / "validation-00000-of-00001.parquet"
    g.parent.mkdir()
    g.write_text("not a parquet file\n")
    with pytest.raises(ParquetSourceError) as e:
        image_source(f"imagenet-hf:{g.parent}")
    assert str(e.value).startswith(f"{g} is not a parquet file that can be read (ArrowInvalid: Parquet magic bytes")
    assert f"delete {g.resolve()} and download it again" in str(e.value)


def test_labels_come_from_class_folders_or_the_kaggle_solution(layouts: dict[str, Path], tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    shutil.copytree(layouts["val"], flat)  # no LOC_val_solution.csv above it
    src = image_source(f"imagenet-val:{flat}")
    assert all(it.label is None for it in src.items)
    with pytest.raises(ClassRefError, match=r"has no class labels; class references need imagenet-hf"):
        src.pick("class:0")
    labelled = image_source(f"imagenet-val:{layouts['val']}")  # LOC_val_solution.csv four folders up
    for it in labelled.items:
        (tmp_path / "classes" / str(it.wnid)).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(it.path, tmp_path / "classes" / str(it.wnid) / f"{it.id}.JPEG")  # type: ignore[arg-type]
    by_folder = image_source(f"imagenet-val:{tmp_path / 'classes'}")
    assert [(it.id, it.label) for it in by_folder.items] == [(it.id, it.label) for it in labelled.items]
    assert {it.label for it in image_source(f"folder:{tmp_path / 'classes'}").items} == {
        it.label for it in labelled.items
    }


def test_the_classes_are_timms_and_reading_them_imports_no_torch() -> None:
    """The 1000 classes equal timm.data.ImageNetInfo's (wnids in order, lemmas), and the workflow's check of a class
    reference (parse_class_ref when Snakemake starts) imports neither timm nor torch."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    classes = imagenet_classes()
    assert classes.wnids == tuple(info.label_names()) and len(classes.wnids) == 1000
    assert classes.lemmas == tuple(info.index_to_description(i) for i in range(1000))
    code = (
        "import sys; from qkdissect.data.labels import parse_class_ref; "
        "assert parse_class_ref('class:golden retriever') == (207, 0); "
        "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_class_references_pick_by_wnid_index_or_lemma(layouts: dict[str, Path]) -> None:
    src = image_source(f"imagenet-hf:{layouts['cache']}")
    it = src.items[5]
    assert it.label is not None
    lemma = imagenet_classes().lemmas[it.label]
    refs = [f"class:{it.wnid}", f"class:{it.label}", f"class:{lemma}", f"class:{lemma.split(',')[0].upper()}",
            f"class:{lemma.split(',')[0].replace(' ', '_')}", f"class:{it.wnid}#0"]  # fmt: skip
    assert {src.pick(r).id for r in refs} == {it.id}
    assert parse_class_ref("class:golden retriever") == parse_class_ref("class:n02099601") == (207, 0)
    assert parse_class_ref("class:maillot, tank suit#3") == (imagenet_classes().index("n03710721"), 3)
    assert pick("class:207#1", [("a", 207), ("b", 3), ("c", 207)], "x") == "c"
    bad = {
        "class:crane": r"names 2 classes \(n02012849 \(crane\), n03126707 \(crane\)\); use the wnid",
        "class:n99999999": "n99999999 is not one of the 1000 ImageNet-1k classes",
        "class:1000": "a class index is 0-999",
        "class:golden retreiver": r"no ImageNet-1k class is called 'golden retreiver' \(close: golden retriever",
        "class:207#x": "after '#' comes a position",
    }
    for ref, msg in bad.items():
        with pytest.raises(ClassRefError, match=msg):
            src.pick(ref)
    absent = next(i for i in range(1000) if i not in {x.label for x in src.items})
    with pytest.raises(ClassRefError, match=rf"no image of class {imagenet_classes().wnids[absent]} .* among the 12"):
        src.pick(f"class:{absent}")
    with pytest.raises(ClassRefError, match=r"only 1 images of class"):
        src.pick(f"class:{it.wnid}#1")
    with pytest.raises(ClassRefError, match="among the 3 images"):
        src.pick(f"class:{it.wnid}", among={x.id for x in src.items[:3]})


def test_both_layouts_give_the_same_store_and_a_maps_request_takes_a_class_reference(
    layouts: dict[str, Path], tmp_path: Path
) -> None:
    from qkdissect.passes.maps import compute_maps
    from qkdissect.passes.projections import compute_projections
    from qkdissect.passes.scores import compute_scores
    from qkdissect.passes.weights import compute_modes
    from qkdissect.stores import open_store

    spec = make_tiny_vit(tmp_path / "w", depth=2)
    modes = tmp_path / "modes.zarr"
    compute_modes(spec, modes, device="cpu")
    compute_scores(modes, tmp_path / "scores.zarr")
    images = f"imagenet-hf:{layouts['cache']}"
    proj = tmp_path / "proj.zarr"
    compute_projections(spec, modes, images, proj, batch_size=4, top_k=3, workers=0, device="cpu", progress=False)
    same = compute_projections(spec, modes, f"imagenet-val:{layouts['val']}", batch_size=4, top_k=3, workers=2,
                               device="cpu", progress=False)  # fmt: skip
    xr.testing.assert_equal(open_store(proj, "projections"), same)  # the two layouts give the same store
    target = image_source(images).items[6]
    request = {"kind": "image-top", "image": f"class:{target.wnid}", "k": 2}
    out = compute_maps(spec, modes, tmp_path / "scores.zarr", proj, request, tmp_path / "m.zarr", device="cpu")
    assert out.attrs["image"] == target.id and out.attrs["request"]["image"] == f"class:{target.wnid}"
    ds = open_store(tmp_path / "m.zarr", "maps")
    assert str(ds.image_id.values[ds.slot_image.values[0, 0]]) == target.id
    bad = {"kind": "image-modes", "image": "class:crane"}
    with pytest.raises(ClassRefError, match="names 2 classes"):  # before the model is loaded
        compute_maps("timm:vit_tiny_patch16_224@/nonexistent.safetensors", modes, tmp_path / "scores.zarr", proj, bad)


# ----------------------------------------------------------------------------------------- O3, ADE20K
def test_o3_and_ade20k_are_checked_for_their_counts(assets: Path, tmp_path: Path) -> None:
    o3 = o3_layout(tmp_path / "O3", 4, assets)
    ade = ade20k_layout(tmp_path / "ADE", 4, assets)
    assert len(o3_dataset(o3, expected=4)) == len(ade20k_dataset(ade, expected=4)) == 4
    with pytest.raises(MaskDatasetError, match=rf"O3 folder {o3}: 4 complete items, expected 2001\. Every images/X"):
        mask_dataset(f"o3:{o3}")
    with pytest.raises(MaskDatasetError, match=rf"ADE20K folder {ade}: 4 complete items, expected 2000\."):
        mask_dataset(f"ade20k:{ade}")
    assert [len(mask_dataset(f"{k}:{p}", limit=3)) for k, p in (("o3", o3), ("ade20k", ade))] == [3, 3]
    names = sorted(p.stem for p in (o3 / "images").iterdir())
    (o3 / "dist_labels" / f"{names[1]}.png").unlink()
    (o3 / "targ_labels" / f"{names[1]}.png").unlink()
    with pytest.raises(MaskDatasetError, match=rf"3 complete items, expected 4; missing: {names[1]} \(no targ_labels, "
                       "dist_labels\\)"):  # fmt: skip
        o3_dataset(o3, expected=4)
    assert [it.id for it in mask_dataset(f"o3:{o3}", limit=1).items] == names[:1]
    with pytest.raises(MaskDatasetError, match=r"1 complete items among the first 2 names \(limit 2\), expected 2"):
        mask_dataset(f"o3:{o3}", limit=2)
    (ade / "images" / "validation" / "ADE_val_00000002.jpg").unlink()
    with pytest.raises(MaskDatasetError, match=r"missing: ADE_val_00000002 \(no images/validation\)"):
        mask_dataset(f"ade20k:{ade}", limit=3)


def test_rehearsal_masks_are_real_photographs_with_painted_and_real_objects(assets: Path, tmp_path: Path) -> None:
    o3 = o3_dataset(o3_layout(tmp_path / "O3", 3, assets), expected=3)
    for item in o3.items:
        img, m = item.load()
        t, d = m["target"] > 0.5, m["distractor"] > 0.5
        assert t.any() and d.sum() >= 2.5 * t.sum() and not (t & d).any()
        rgb = np.asarray(img, dtype=np.float64)
        assert np.abs(rgb[t].mean(axis=0) - rgb[d].mean(axis=0)).max() > 40  # the odd one out differs in colour
        assert rgb[~(t | d)].std() > 20  # a photograph around them
    ade = ade20k_dataset(ade20k_layout(tmp_path / "ADE", 14, assets), expected=14)
    voc = sorted(Path(assets / "images/voc2012_seg_samples").glob("*_target.png"), key=lambda p: (len(p.name), p.name))
    for item, mask_file in zip(ade.items, voc, strict=True):
        img, masks = item.load()
        classes = {int(k.removeprefix("object:class")) for k in masks}
        whole = set(np.unique(voc_to_ade_classes(np.asarray(Image.open(mask_file).convert("RGB"))))) - {0}
        assert classes and classes <= whole <= set(range(1, 22))  # VOC background 1, its classes 2-21: real segments
        assert 256 <= min(img.size) <= 512 and next(iter(masks.values())).shape == img.size[::-1]


def test_an_incomplete_mask_dataset_fails_before_the_model_loads(tmp_path: Path) -> None:
    from qkdissect.passes.preference import compute_preference

    for d in ("images", "targ_labels", "dist_labels"):
        (tmp_path / d).mkdir()
    with pytest.raises(MaskDatasetError, match="0 complete items, expected 2001"):
        compute_preference("timm:vit_tiny_patch16_224@/nonexistent.safetensors", f"o3:{tmp_path}")
