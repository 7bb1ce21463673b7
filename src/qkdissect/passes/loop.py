"""What every pass shares: the model (loaded with its own preprocessing onto a device, its weights checked
against the resolved manifest), its modes (a store, refused when computed from other weights, or a Dataset in
memory), the one batch loop over an image set or a mask dataset (decoding, digests of every item as read, the
images that could not be decoded, a progress bar), the provenance record, and how a result is returned.

Every ``compute_*`` of :mod:`qkdissect.passes` returns an xarray Dataset; given ``output``, it first writes the
store there (atomically) and returns the store opened.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..core.device import device_record, resolve_device
from ..data.dataset import ImageDataset, collate
from ..data.decoding import max_pixels
from ..data.duplicates import Dedupe, deduplicate
from ..data.geometry import Preprocess
from ..data.masks import MaskDataset, MaskedItem
from ..data.sources import ImageSource, default_workers, image_source
from ..errors import QKDissectError
from ..models import (
    LoadedModel,
    QKWeights,
    describe_loaded,
    load_qk,
    preprocess_for,
)
from ..provenance.records import items_sha256
from ..requests import ModelContext
from ..stores import open_store
from .io import StoreLike, model_record, store_input, weights_checked
from .shards import Shard

log = logging.getLogger("qkdissect")


@dataclass
class PassModel:
    """A model ready for a pass: the module that runs (on its device, in eval mode; for a CLIP model its image
    tower), its query-key weights, its ``source`` (the whole model as loaded, with its spec, weights file and
    digest), its name in the stores, and its checked manifest with the inputs the weights add to an artefact."""

    model: torch.nn.Module
    qk: QKWeights
    source: LoadedModel
    name: str
    device: torch.device
    manifest: dict[str, Any] | None
    dependencies: list[dict[str, Any]]


@dataclass
class ImageModel(PassModel):
    """An image model: also its own preprocessing and its patch grid."""

    preprocess: Preprocess = field(default=None)  # type: ignore[assignment]
    grid: tuple[int, int] = (0, 0)


def load(model: ModelContext) -> PassModel:
    """Load a model (or take one in memory) onto its device and check its weights."""
    spec, key = model.spec, model.name
    log.info("loading %s%s …", key or spec, "" if key in (None, spec) else f" ({spec})")
    qk, loaded = load_qk(spec)
    name = key or str(loaded.spec)
    manifest, deps = weights_checked(loaded.weights_path, loaded.weights_sha256, name, model.manifest)
    dev = resolve_device(model.device)
    # the module the adapter found the layers in: the image tower of a CLIPModel (whose own forward wants text
    # too), the encoder inside a task wrapper, or the model itself
    runner = qk.model if qk.model is not None else loaded.model
    return PassModel(runner.to(dev).eval(), qk, loaded, name, dev, manifest, deps)


def load_image_model(model: ModelContext) -> ImageModel:
    """:func:`load` for passes over images: the model needs a patch grid, and brings its own preprocessing. The
    pixel limit of decoding ($QKDISSECT_MAX_PIXELS) is checked first, before the model loads and in this process
    (a data loader's worker would report it with its traceback)."""
    max_pixels()
    m = load(model)
    if m.qk.layout.grid is None:
        raise QKDissectError(f"{m.name} has no patch grid: image passes need an image model")
    return ImageModel(**vars(m), preprocess=preprocess_for(m.source), grid=m.qk.layout.grid)


def modes_of(modes: StoreLike, m: PassModel) -> tuple[xr.Dataset, list[dict[str, Any]]]:
    """The modes of a model, refused when they were computed from other weights than the ones loaded."""
    return store_of(modes, "modes", m, "recompute the modes")


def store_of(store: StoreLike, kind: str, m: PassModel, redo: str) -> tuple[xr.Dataset, list[dict[str, Any]]]:
    """A ``kind`` store a pass of ``m`` reads, and its dependency record; refused in one line, saying what to
    ``redo``, when it was computed from other weights than the ones loaded."""
    ds, deps = store_input(store, kind, f"{kind} store")
    recorded = ds.attrs.get("weights_sha256")
    now = m.source.weights_sha256
    if recorded and now and recorded != now:
        where = store if not isinstance(store, xr.Dataset) else f"the {kind} dataset"
        raise QKDissectError(
            f"{where} was computed from other weights (sha256 {str(recorded)[:12]}…) than {m.name} has now "
            f"({now[:12]}…): {redo}"
        )
    return ds, deps


def pass_record(
    kind: str, parameters: dict[str, Any], m: PassModel, dependencies: Sequence[dict[str, Any]], device: str,
    started: str, **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """The provenance of a pass's store: what made it (kind, parameters, code, config), from which model and
    weights (with its manifest), from which inputs, on which device, when; ``extra`` adds fields (batch, timings)."""
    model = {"key": m.name, **m.qk.describe()}
    weights = {**describe_loaded(m.source), "manifest": m.manifest}
    inputs = (m.dependencies, list(dependencies))
    return model_record(kind, parameters, model, weights, inputs, device_record(device, m.device), started, **extra)


@contextmanager
def stream_target(output: str | Path | None) -> Iterator[Path]:
    """Where a streaming pass writes: ``output``, or a temporary store that is loaded and removed after."""
    if output is not None:
        yield Path(output)
        return
    with tempfile.TemporaryDirectory(prefix="qkdissect-") as tmp:
        yield Path(tmp) / "store.zarr"


def streamed(path: Path, output: str | Path | None) -> xr.Dataset:
    """The store a streaming pass wrote: opened (at ``output``), or loaded into memory (from a temporary one)."""
    ds = open_store(path)
    return ds if output is not None else ds.load()


# ----------------------------------------------------------------------------------------- the batch loop
def image_bar(total: int, desc: str, progress: bool, unit: str = "image") -> tqdm:
    """The progress bar of a pass: items (not batches) done of ``total``, with the rate, labelled ``desc`` (the
    pass and the model's name); a batch's items count once the batch is done."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)


def depth(n_layers: int) -> np.ndarray:
    """Normalised depth l / (L - 1) of every layer (a single layer sits at 0)."""
    return np.arange(n_layers) / max(1, n_layers - 1)


@dataclass
class ImageStream:
    """One pass over an image set: batches of decoded, preprocessed images in id order, each image's sha256 as
    read, and the images that could not be decoded (skipped: counted on the progress bar, named in the store);
    ``dedupe``: the duplicates left out of the set (named in the store's ``images`` attrs and its provenance);
    ``shard``: only that shard's share of the set (:mod:`.shards`), which starts at ``offset``."""

    spec: str
    limit: int | None
    source: ImageSource
    preprocess: Preprocess
    digests: list[str | None] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    valid: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    seconds: float = 0.0

    dedupe: Dedupe | None = None
    shard: Shard | None = None
    offset: int = 0
    total: int = 0  # images in the whole set (after the dedupe)

    @classmethod
    def open(
        cls, spec: str, limit: int | None, preprocess: Preprocess, dedupe: int | None = None,
        shard: Shard | None = None, batch_size: int = 1,
    ) -> ImageStream:  # fmt: skip
        """The image set ``spec`` (its first ``limit`` ids), without its duplicates when ``dedupe`` (a Hamming
        distance, :mod:`qkdissect.data.duplicates`) is given: every pass over a set sees the same ids. A
        ``shard`` keeps its share of the de-duplicated set, whole batches of ``batch_size``."""
        source = image_source(spec, limit=limit)
        found = None
        if dedupe is not None:
            found = deduplicate(source, dedupe)
            source = dataclasses.replace(source, items=found.kept)
        total, (start, stop) = len(source), (0, len(source))
        if shard is not None:
            start, stop = shard.span(total, batch_size)
            source = dataclasses.replace(source, items=source.items[start:stop])
        n = len(source)
        return cls(spec, limit, source, preprocess, [None] * n, [], np.zeros(n, bool), dedupe=found, shard=shard,
                   offset=start, total=total)  # fmt: skip

    def __len__(self) -> int:
        return len(self.source)

    def batches(
        self, batch_size: int, workers: int | None, desc: str, progress: bool = True
    ) -> Iterator[tuple[int, int, list[int], torch.Tensor | None]]:
        """(start, size, indices of the decoded images, their tensor or None) per batch of ``batch_size`` ids."""
        loader = DataLoader(
            ImageDataset(self.source, self.preprocess),
            batch_size=batch_size,
            shuffle=False,
            num_workers=default_workers() if workers is None else workers,
            collate_fn=collate,
        )
        t0 = time.perf_counter()
        n = len(self.source)
        with image_bar(n, desc, progress) as bar:
            for start, (ok, x, bad, digests) in zip(range(0, n, batch_size), loader, strict=True):
                for i, d in digests:
                    self.digests[i] = d
                self.skipped += [{"id": self.source.items[i].id, "error": err} for i, err in bad]
                self.valid[ok] = True
                yield start, min(batch_size, n - start), ok, x
                bar.update(min(batch_size, n - start))
                bar.set_postfix(skipped=len(self.skipped), refresh=False)
        self.seconds = time.perf_counter() - t0
        if not self.valid.any() and self.shard is None:  # a shard may hold none: the merge checks the whole set
            first = self.skipped[0]["error"] if self.skipped else "no images"
            raise QKDissectError(f"none of the {n} images in {self.source.root} could be decoded (first: {first})")

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())

    def dependency(self) -> dict[str, Any]:
        """The image set as an input: its spec and limit (to list it again) and one digest of its images as read
        (every image listed, the duplicates dropped too: what listing the set again gives), and the dedupe."""
        pairs = [(it.id, d) for it, d in zip(self.source.items, self.digests, strict=True)]
        if self.shard is not None:  # its own images (the merge joins the shards' into the set's)
            dep = {"role": "images", "spec": self.spec, "limit": self.limit, "count": len(pairs),
                   "sha256": items_sha256(pairs), "shard": self.shard_record()}  # fmt: skip
            return {**dep, "dedupe": self.dedupe.describe()} if self.dedupe is not None else dep
        if self.dedupe is not None:
            read = dict(pairs)
            pairs = [(it.id, read.get(it.id, d)) for it, d in zip(self.dedupe.listed, self.dedupe.digests, strict=True)]
        dep = {"role": "images", "spec": self.spec, "limit": self.limit, "count": len(pairs),
               "sha256": items_sha256(pairs)}  # fmt: skip
        return {**dep, "dedupe": self.dedupe.describe()} if self.dedupe is not None else dep

    def shard_record(self) -> dict[str, Any]:
        """Where a shard's images lie in the whole set: its number of how many, its first image and the one after
        its last (positions in the de-duplicated set of ``images`` images), and, with a dedupe, the positions in
        the listed set of the images it dropped (so that the merge can list the set again in its order)."""
        assert self.shard is not None
        dropped_at = None
        if self.dedupe is not None:
            kept = {it.id for it in self.dedupe.kept}
            dropped_at = [i for i, it in enumerate(self.dedupe.listed) if it.id not in kept]
        return {**self.shard.describe(), "start": self.offset, "stop": self.offset + len(self), "images": self.total,
                "dropped_at": dropped_at}  # fmt: skip

    def describe(self) -> dict[str, Any]:
        out = {**self.source.describe(), "spec": self.spec, "valid": self.n_valid, "skipped": len(self.skipped)}
        out["dedupe"] = self.dedupe.describe() if self.dedupe is not None else None
        return out

    def coords(self) -> dict[str, Any]:
        """The image dim's coordinates: stable ids and each image's sha256 as read."""
        return {
            "image_id": (("image",), np.array([it.id for it in self.source.items], dtype=object)),
            "image_sha256": (("image",), np.array([d or "" for d in self.digests], dtype=object)),
        }

    def rate(self) -> dict[str, Any]:
        return {"pass": round(self.seconds, 3),
                "images_per_s": round(self.n_valid / self.seconds, 3) if self.seconds > 0 else None}  # fmt: skip


def mask_batches(
    data: MaskDataset, batch_size: int, desc: str, progress: bool = True
) -> Iterator[tuple[int, list[tuple[MaskedItem, Any, dict[str, np.ndarray]]]]]:
    """(start, [(item, image, masks), ...]) per batch of a mask dataset, in its order."""
    with image_bar(len(data), desc, progress) as bar:
        for b in range(0, len(data), batch_size):
            items = data.items[b : b + batch_size]
            yield b, [(it, *it.load()) for it in items]
            bar.update(len(items))


def mask_dataset_dependency(data: MaskDataset, spec: str, limit: int | None) -> dict[str, Any]:
    """A mask dataset as an input: its spec and limit (to list it again) and one digest of its items' files."""
    return {
        "role": "mask dataset",
        "spec": spec,
        "limit": limit,
        "count": len(data),
        "sha256": items_sha256((it.id, it.sha256()) for it in data.items),
    }


def mask_coords(data: MaskDataset) -> dict[str, Any]:
    return {
        "image_id": (("image",), np.array([it.id for it in data.items], dtype=object)),
        "image_sha256": (("image",), np.array([it.sha256() or "" for it in data.items], dtype=object)),
    }
