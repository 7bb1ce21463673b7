"""A pass over an image set split into shards (``projections: {shards: N}``, ``qkdissect project --shard K/N``) and
the merge of the shards' stores into the store one job writes, without torch.

A shard is a contiguous share of the set (after its dedupe, decided on the whole set by every shard alike) made of
whole batches: shard K of N holds batches ``floor((K-1) B / N)`` to ``floor(K B / N)`` of the set's B batches, so
every batch, and so every number computed from it, is the one a single job computes (a shard may hold no image
when there are fewer batches than shards). A shard writes an ordinary store of its images (its top images indexed
on its own image dim) plus what the merge needs and the store omits: the both-negative flag of each top image, the
centre unit vectors' sum in fixed point and the singular values (:data:`SHARD_EXTRAS`), and ``attrs["shard"]``.

:func:`merge_projections` checks that the shards are the N of one pass (same model, weights, modes, parameters,
image set and dedupe; positions that tile the set), and writes the merged store: per-image rows and image ids
concatenated, the top-k of the shards' top-k lists with global indices in the single job's order
(:func:`qkdissect.core.topk.merge_top`), the fixed-point sums added, the image set's digest computed over every
image listed again in order; its provenance is the shards' (timings of each kept under ``shards``) and lists the
shard stores as inputs, so that `qkdissect audit` follows the chain.

The atlas pass shards the same way over its top images (:func:`merge_atlas`): each slot's maps come from the one
shard that holds its image, the thumbnails and image ids are concatenated. The mask-dataset passes shard their
dataset (:func:`merge_preference`, :func:`merge_same_object`): each shard keeps the per-image arrays the single
job's results are computed from (the preference table in float64; the same-object image scores and flags), and
the merge computes them with the single job's own functions. :func:`merge_shards` merges the shards of any of
these passes, by the kind of their stores.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from ..core.merging import anisotropy, from_fixed_point, merge_top
from ..errors import QKDissectError
from ..provenance.records import dependency, items_sha256
from ..stores import open_store
from ..stores.readwrite import StreamingStore
from ..stores.schema import PROJECTION_STATS, atlas_dataset, labels, projections_dataset
from ..util.clock import utc_now
from .io import finish

if TYPE_CHECKING:
    from ..data.masks import MaskDataset

#: variables a shard's projections store adds for the merge
SHARD_EXTRAS = ("top_both_negative_flag", "centre_unit_sum_fixed", "singular_value")


#: the most shards a pass is split into (the workflow's ``shards``)
MAX_SHARDS = 10000


@dataclass(frozen=True)
class Shard:
    """Shard ``number`` (1-based) of ``count``."""

    number: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``K/N`` (or ``K-of-N``), 1 <= K <= N."""
        m = re.fullmatch(r"\s*(\d+)\s*(?:/|-of-)\s*(\d+)\s*", text)
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)) <= MAX_SHARDS:
            raise QKDissectError(f"shard {text!r}: give K/N with 1 <= K <= N <= {MAX_SHARDS}, e.g. --shard 2/4")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def of(cls, shard: Shard | str | None) -> Shard | None:
        """A request's shard: as it is, parsed from ``K/N``, or None (the whole set)."""
        return cls.parse(shard) if isinstance(shard, str) else shard

    @property
    def name(self) -> str:
        """``K-of-N``: the shard store's name (without .zarr)."""
        return f"{self.number}-of-{self.count}"

    def span(self, n_images: int, batch_size: int) -> tuple[int, int]:
        """(first image, the one after the last) of this shard of ``n_images``, in whole batches."""
        batches = -(-n_images // batch_size)
        first, end = ((k * batches) // self.count for k in (self.number - 1, self.number))
        return min(n_images, first * batch_size), min(n_images, end * batch_size)

    def describe(self) -> dict[str, Any]:
        return {"number": self.number, "count": self.count}


def shard_of_dataset(data: MaskDataset, shard: Shard | None, batch_size: int) -> tuple[MaskDataset, dict[str, Any]]:
    """A mask dataset's share for ``shard`` (whole batches; the whole of it without one), and where it lies
    (``attrs["shard"]`` of the shard's store; ``{"start": 0}`` without one)."""
    if shard is None:
        return data, {"start": 0}
    start, stop = shard.span(len(data), batch_size)
    where = {**shard.describe(), "start": start, "stop": stop, "images": len(data)}
    return dataclasses.replace(data, items=data.items[start:stop]), where


def shard_store(
    ds: xr.Dataset, extras: dict[str, tuple[tuple[str, ...], Any, str]], where: dict[str, Any]
) -> xr.Dataset:
    """A shard's store: the store of its images plus what the merge needs (``extras``: name -> (dims, values,
    description), each labelled as every store variable is) and where the shard lies (``attrs["shard"]``)."""
    out = ds.assign({k: (dims, v, {"description": d, **labels(k)}) for k, (dims, v, d) in extras.items()})
    out.attrs["shard"] = where
    return out


def shard_paths(folder: str | Path, count: int) -> list[Path]:
    """The stores of the ``count`` shards of a pass, by the workflow's layout: ``FOLDER/K-of-N.zarr``."""
    return [Path(folder) / f"{Shard(k, count).name}.zarr" for k in range(1, count + 1)]


# ----------------------------------------------------------------------------------------- checks
#: how a merge writes its store's provenance: (shard stores, their paths, seconds) -> record
RecordFn = Callable[[Sequence[xr.Dataset], Sequence[Path], float], dict[str, Any]]
#: store attributes every shard of one pass has alike
_SAME_ATTRS = ("qkdissect_schema", "model_id", "spec", "token_source", "n_prefix_tokens", "prefix_tokens", "grid",
               "centre_token", "preprocess", "top_k", "image_score", "weights_sha256")  # fmt: skip
#: provenance fields every shard of one pass has alike
_SAME_RECORD = ("kind", "parameters", "model", "weights")


def _not_images(record: dict[str, Any]) -> list[dict[str, Any]]:
    return _same_input([d for d in record.get("dependencies", []) if d.get("role") != "images"])


def _same_input(dependencies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Inputs as the shards of one pass must share them: a file or store by its content (its sha256) where it was
    recorded, else by its resolved path, never by the path as given (``modes.zarr`` and ``/abs/modes.zarr``, or a
    link to it, are the same store)."""
    out = []
    for d in dependencies:
        same = {k: v for k, v in d.items() if k != "path"}
        if d.get("sha256") is None and d.get("path") is not None:
            same["path"] = str(Path(d["path"]).resolve())
        out.append(same)
    return out


def _images_dep(record: dict[str, Any]) -> dict[str, Any]:
    return next(d for d in record["dependencies"] if d.get("role") == "images")


def _check_tiling(shards: Sequence[dict[str, Any]], paths: Sequence[Path]) -> None:
    """The shards are 1..N of N, in order, and together hold every one of the set's images."""
    count, expect_start = int(shards[0]["count"]), 0
    for k, (s, path) in enumerate(zip(shards, paths, strict=True), start=1):
        if (s["number"], s["count"]) != (k, count) or s["start"] != expect_start:
            raise QKDissectError(
                f"{path} is shard {s['number']} of {s['count']} (images {s['start']}-{s['stop']}), expected shard "
                f"{k} of {count} from image {expect_start}: give all {count} shards of the pass, in order"
            )
        expect_start = s["stop"]
    if len(shards) != count:
        raise QKDissectError(f"shard {len(shards) + 1} of {count} is missing: give all {count} shards, in order")
    if expect_start != shards[0]["images"]:
        raise QKDissectError(f"the shards hold {expect_start} of the set's {shards[0]['images']} images")


def check_shards(stores: Sequence[xr.Dataset], paths: Sequence[Path]) -> None:
    """Refuse shards that are not the N shards of one pass, in order (one line naming the first difference)."""
    if not stores:
        raise QKDissectError("no shard stores to merge")
    first = stores[0]
    ref = first.attrs["provenance"]
    for ds, path in zip(stores, paths, strict=True):
        shard = ds.attrs.get("shard")
        if not shard:
            raise QKDissectError(f"{path} is no shard store (written without --shard)")
        rec = ds.attrs["provenance"]
        diff = [k for k in _SAME_ATTRS if ds.attrs.get(k) != first.attrs.get(k)]
        diff += [f"provenance {k}" for k in _SAME_RECORD if rec.get(k) != ref.get(k)]
        diff += ["inputs"] if _not_images(rec) != _not_images(ref) else []
        mine, theirs = _images_dep(rec), _images_dep(ref)
        diff += [f"image set {k}" for k in ("spec", "limit", "dedupe") if mine.get(k) != theirs.get(k)]
        diff += ["code"] if rec["code"].get("source_sha256") != ref["code"].get("source_sha256") else []
        if diff:
            raise QKDissectError(f"{path} is not a shard of the same pass as {paths[0]}: its {diff[0]} differs")
    _check_tiling([ds.attrs["shard"] for ds in stores], paths)


# ----------------------------------------------------------------------------------------- merge
def _top(stores: Sequence[xr.Dataset]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-k of the shards' top-k lists (global image indices), and each top image's both-negative flag."""
    scores, index, flags = [], [], []
    for ds in stores:
        local = ds.top_image.values
        index.append(np.where(local >= 0, local + ds.attrs["shard"]["start"], -1))
        scores.append(ds.top_score.values)
        flags.append(ds.top_both_negative_flag.values)
    k = int(stores[0].attrs["top_k"])
    both = [np.concatenate(flags, axis=-1)]
    score, idx, (flag,) = merge_top(np.concatenate(scores, axis=-1), np.concatenate(index, axis=-1), k, both)
    return score.astype(np.float32), idx.astype(np.int64), flag


def listed_digest(stores: Sequence[xr.Dataset]) -> tuple[int, str]:
    """Count and digest of the image set as listed (:meth:`ImageStream.dependency`): every image in the set's
    order with its sha256 as read, the duplicates the dedupe dropped put back where they were listed."""
    pairs: list[tuple[str, str | None]] = [
        (str(i), str(d)) for ds in stores for i, d in zip(ds.image_id.values, ds.image_sha256.values, strict=True)
    ]
    dedupe = _images_dep(stores[0].attrs["provenance"]).get("dedupe")
    at = stores[0].attrs["shard"].get("dropped_at")
    if dedupe is not None and at is not None:
        for pos, d in zip(at, dedupe["dropped"], strict=True):
            pairs.insert(pos, (d["id"], d.get("sha256")))
    return len(pairs), items_sha256(pairs)


def _held(stores: Sequence[xr.Dataset]) -> list[xr.Dataset]:
    """The shards that hold images (an empty one's arrays read back without their dtype), or the first."""
    return [ds for ds in stores if ds.sizes["image"]] or [stores[0]]


def _image_coords(stores: Sequence[xr.Dataset]) -> dict[str, Any]:
    return {c: (("image",), np.concatenate([ds[c].values.astype(object) for ds in _held(stores)]))
            for c in ("image_id", "image_sha256")}  # fmt: skip


def _merged_record(stores: Sequence[xr.Dataset], paths: Sequence[Path], seconds: float) -> dict[str, Any]:
    """A merged store's provenance: the first shard's, the shard stores added as inputs, the earliest start, the
    batches as one job's, and each shard's timings and device under ``shards``."""
    recs = [ds.attrs["provenance"] for ds in stores]
    record = dict(recs[0])
    record["dependencies"] = [*record["dependencies"], *(dependency(f"shard {p.stem}", p) for p in paths)]
    record["started"], record["finished"] = min(r["started"] for r in recs), utc_now()
    if "batch" in record:
        record["batch"] = merged_batches([r["batch"] for r in recs])
    record["timings_s"] = {"merge": round(seconds, 3)}
    record["shards"] = [{"path": str(p), **{k: r.get(k) for k in ("started", "finished", "device", "batch",
                         "timings_s", "host")}} for p, r in zip(paths, recs, strict=True)]  # fmt: skip
    return record


def merged_batches(batches: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The batches of N shards as one job's: the largest requested, the smallest used after out of memory."""
    requested = max(b["requested"] for b in batches)
    after_oom = [b["used"] for b in batches if b["oom_retries"]]
    return {"requested": requested, "used": min(after_oom, default=requested),
            "oom_retries": sum(b["oom_retries"] for b in batches)}  # fmt: skip


def _record(stores: Sequence[xr.Dataset], paths: Sequence[Path], seconds: float) -> dict[str, Any]:
    """The merged projections store's provenance (:func:`_merged_record`), with the whole image set as its images
    input: every image listed again, in order (:func:`listed_digest`)."""
    record = _merged_record(stores, paths, seconds)
    images = {k: v for k, v in _images_dep(record).items() if k != "shard"}
    images["count"], images["sha256"] = listed_digest(stores)
    record["inputs"] = {**record["inputs"], "images": {k: v for k, v in images.items() if k != "role"}}
    record["dependencies"] = [d if d.get("role") != "images" else images for d in record["dependencies"]]
    return record


def _merged_attrs(
    stores: Sequence[xr.Dataset], shards: Sequence[str | Path], t0: float, record: RecordFn = _merged_record
) -> dict[str, Any]:
    """The first shard's attributes without its shard, with the merged provenance (made by ``record``)."""
    attrs = {k: v for k, v in stores[0].attrs.items() if k not in ("shard", "qkdissect_schema", "qkdissect_content")}
    attrs["provenance"] = record(stores, [Path(p) for p in shards], time.perf_counter() - t0)
    return attrs


def _copy_rows(st: StreamingStore, stores: Sequence[xr.Dataset], n: int, chunk: int) -> None:
    """The per-image rows of every shard, at its place in the whole set, ``chunk`` images at a time."""
    shape = stores[0].q_max.shape[1:]
    for var, what in PROJECTION_STATS.items():
        desc = f"{what} over the image's patch tokens (NaN: image skipped)"
        dims = ("image", "layer", "head", "mode")
        st.create(var, (n, *shape), dims, (chunk, *shape), "float32", description=desc, **labels(var))
    for ds in stores:
        start, size = ds.attrs["shard"]["start"], ds.sizes["image"]
        for a in range(0, size, chunk):
            for var in PROJECTION_STATS:
                st.write(var, start + a, ds[var][a : a + chunk].values)


def merge_projections(shards: Sequence[str | Path], output: str | Path) -> xr.Dataset:
    """Merge the stores of the N shards of a projection pass (in order) into the store one job writes, at
    ``output`` (atomically); returns it opened."""
    t0 = time.perf_counter()
    paths = [Path(p) for p in shards]
    stores = [open_store(p, "projections") for p in paths]
    check_shards(stores, paths)
    first = stores[0]
    n = first.attrs["shard"]["images"]
    valid = np.concatenate([ds.valid.values for ds in stores])
    if not valid.any():
        raise QKDissectError(f"none of the {n} images of {first.attrs['images']['root']} could be decoded")
    top_score, top_image, flag = _top(stores)
    both_negative = ((flag == 1) & (top_image >= 0)).sum(axis=-1)
    limbs = np.sum([ds.centre_unit_sum_fixed.values for ds in stores], axis=0)
    on_prefix = np.sum([[ds[f"{side}_top_on_prefix"].values for side in ("query", "key")] for ds in stores], axis=0)
    unit_sum = from_fixed_point(limbs)
    batch = int(first.attrs["provenance"]["parameters"]["batch_size"])
    chunk = batch * max(1, round(256 / batch))  # as the single job chunks its rows
    with StreamingStore(output) as st:
        _copy_rows(st, stores, n, chunk)
        attrs = _merged_attrs(stores, paths, t0, _record)
        attrs["images"] = {**first.attrs["images"], "count": n, "valid": int(valid.sum()),
                           "skipped": sum(ds.attrs["images"]["skipped"] for ds in stores)}  # fmt: skip
        attrs["skipped"] = [s for ds in stores for s in ds.attrs["skipped"]][:1000]
        s = first.singular_value.values.astype(np.float32)
        small = projections_dataset(valid, top_score, top_image, both_negative, s, unit_sum,
                                    anisotropy(unit_sum, int(valid.sum())), _image_coords(stores), attrs,
                                    on_prefix=on_prefix)  # fmt: skip
        st.finish(small)
    return open_store(output)


# ----------------------------------------------------------------------------------------- the atlas pass
#: an atlas store's arrays of maps, per slot, with the value of an empty slot
_ATLAS_CODES = {"q_code": 0, "k_code": 0, "q_lo": np.nan, "q_step": np.nan, "k_lo": np.nan, "k_step": np.nan}

#: attributes that differ between the shards of one pass (the shard, its provenance, what its images hold)
_OWN_ATTRS = ("shard", "provenance", "qkdissect_content", "eligible_images")


def check_pass_shards(stores: Sequence[xr.Dataset], paths: Sequence[Path], same_vars: Sequence[str] = ()) -> None:
    """Refuse shards that are not the N shards of one pass of the atlas or a mask dataset, in order (one line: the
    first difference): the same attributes, model, parameters, inputs and code, the same ``same_vars``."""
    first, ref = stores[0], stores[0].attrs["provenance"]
    for ds, path in zip(stores, paths, strict=True):
        if not ds.attrs.get("shard"):
            raise QKDissectError(f"{path} is no shard store (written without --shard)")
        rec = ds.attrs["provenance"]
        keys = sorted(set(ds.attrs) | set(first.attrs))
        diff = [k for k in keys if k not in _OWN_ATTRS and ds.attrs.get(k) != first.attrs.get(k)]
        diff += [f"provenance {k}" for k in ("kind", "parameters", "model", "weights") if rec.get(k) != ref.get(k)]
        diff += ["inputs"] if _same_input(rec["dependencies"]) != _same_input(ref["dependencies"]) else []
        diff += ["code"] if rec["code"].get("source_sha256") != ref["code"].get("source_sha256") else []
        diff += [v for v in same_vars if not np.array_equal(ds[v].values, first[v].values, equal_nan=True)]
        if diff:
            raise QKDissectError(f"{path} is not a shard of the same pass as {paths[0]}: its {diff[0]} differs")
    _check_tiling([ds.attrs["shard"] for ds in stores], paths)


def _open_shards(shards: Sequence[str | Path], kind: str, same_vars: Sequence[str] = ()) -> list[xr.Dataset]:
    if not shards:
        raise QKDissectError("no shard stores to merge")
    paths = [Path(p) for p in shards]
    stores = [open_store(p, kind) for p in paths]
    check_pass_shards(stores, paths, same_vars)
    return stores


def merge_atlas(shards: Sequence[str | Path], output: str | Path) -> xr.Dataset:
    """Merge the stores of the N shards of an atlas pass (in order) into the store one job writes, at ``output``
    (atomically): each slot from the shard that holds its image; returns it opened."""
    t0 = time.perf_counter()
    stores = _open_shards(shards, "atlas", ["top_score"])
    first = stores[0]
    slot_image = np.full(first.slot_image.shape, -1, np.int64)
    codes = {k: np.full(first[k].shape, fill, first[k].dtype) for k, fill in _ATLAS_CODES.items()}
    for ds in stores:
        local = ds.slot_image.values
        own = local >= 0
        slot_image[own] = local[own] + ds.attrs["shard"]["start"]
        for k, arr in codes.items():
            arr[own] = ds[k].values[own]
    thumbnails = np.concatenate([ds.thumbnail.values for ds in _held(stores)])
    attrs = _merged_attrs(stores, shards, t0)
    on_prefix = first.get("key_top_on_prefix")  # copied from the one projections store all shards read
    ds = atlas_dataset(codes, first.top_score.values, slot_image, thumbnails, _image_coords(stores), attrs, on_prefix)
    return finish(ds, output)


def _joined(stores: Sequence[xr.Dataset], name: str) -> np.ndarray:
    return np.concatenate([ds[name].values for ds in _held(stores)])


def merge_preference(shards: Sequence[str | Path], output: str | Path) -> xr.Dataset:
    """Merge the N shards of a preference pass into the store one job writes (the groups computed from the
    float64 tables, the example crop from the shard that holds the example)."""
    from ..core.preference import REGIONS, SOURCES, grouped
    from ..stores.schema import preference_dataset

    t0 = time.perf_counter()
    stores = _open_shards(shards, "preference")
    table, rows = _joined(stores, "table_fp64"), _joined(stores, "query_token")
    example = int(stores[0].attrs["example"])
    crop = next(
        ds.example_crop.values for ds in stores if ds.attrs["shard"]["start"] <= example < ds.attrs["shard"]["stop"]
    )
    attrs = _merged_attrs(stores, shards, t0)
    out = preference_dataset(table, rows, _joined(stores, "token_masks"), grouped(table, rows >= 0), crop, SOURCES,
                             REGIONS, _image_coords(stores), attrs)  # fmt: skip
    return finish(out, output)


def merge_same_object(shards: Sequence[str | Path], output: str | Path) -> xr.Dataset:
    """Merge the N shards of a same-object pass into the store one job writes (its top images, p and chance
    computed from every image's scores and flags, as the single job computes them)."""
    from ..core.same_object import same_object_values
    from ..stores.schema import same_object_dataset

    t0 = time.perf_counter()
    stores = _open_shards(shards, "same_object", ["singular_value"])
    scores, same = _joined(stores, "per_image_score"), _joined(stores, "per_image_same")
    n_objects, s = _joined(stores, "n_objects"), stores[0].singular_value.values
    values, order = same_object_values(scores, same, n_objects, s, int(stores[0].attrs["top"]))
    attrs = _merged_attrs(stores, shards, t0)
    attrs["eligible_images"] = int((n_objects >= 2).sum())
    return finish(same_object_dataset(values, order, n_objects, _image_coords(stores), attrs), output)


def merge_shards(shards: Sequence[str | Path], output: str | Path) -> xr.Dataset:
    """Merge the N shard stores of a projection, atlas, preference or same-object pass (by their kind) into the
    store one job writes."""
    if not shards:
        raise QKDissectError("no shard stores to merge")
    kind = str(open_store(shards[0]).attrs.get("qkdissect_schema", "")).split("/")[0]
    merge = {"atlas": merge_atlas, "preference": merge_preference, "same_object": merge_same_object}
    return merge.get(kind, merge_projections)(shards, output)
