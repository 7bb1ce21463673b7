"""What every pass over data shares: loading an image model with its own preprocessing onto a device, checking
its weights against the resolved manifest and its modes store against its weights, and recording the inputs
(weights, manifest, modes store, image set or mask dataset) with their digests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import xarray as xr

from ..core.device import resolve_device
from ..errors import QKDissectError
from ..models import LoadedModel, ModelLike, QKWeights, check_manifest, load_qk, preprocess_for, read_manifest
from ..provenance.records import dependency, items_sha256
from ..stores import open_store

#: a weights manifest as the analyses take it: the dict, or the path of its JSON file (then recorded as an input)
Manifest = dict[str, Any] | str | Path | None


def weights_dependencies(loaded: LoadedModel, manifest: Manifest) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The manifest (read when given as a path) and the inputs it and the loaded weights file add to an
    artefact's ``dependencies``."""
    deps = []
    if isinstance(manifest, str | Path):
        deps.append(dependency("weights manifest", manifest))
        manifest = read_manifest(manifest)
    if loaded.weights_path is not None:
        deps.append(dependency("weights", loaded.weights_path.resolve(), loaded.weights_sha256))
    return manifest, deps


def weights_checked(
    loaded: LoadedModel, name: str, manifest: Manifest
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """:func:`weights_dependencies`, with the manifest (when there is one) checked against the loaded weights."""
    manifest, deps = weights_dependencies(loaded, manifest)
    if manifest is not None:
        check_manifest(manifest, loaded.weights_sha256, name, loaded.weights_path)
    return manifest, deps


def image_set_dependency(spec: str, limit: int | None, source: Any, digests: list[str | None]) -> dict[str, Any]:
    """An image set as an input: its spec and limit (to list it again) and one digest of its images as read
    (``digests``: the sha256 of each of ``source.items``, as the image pass read it)."""
    pairs = [(it.id, d) for it, d in zip(source.items, digests, strict=True)]
    return {"role": "images", "spec": spec, "limit": limit, "count": len(pairs), "sha256": items_sha256(pairs)}


def modes_of(modes_path: str | Path, loaded: LoadedModel, name: str) -> xr.Dataset:
    """The modes store at ``modes_path``, refused when it was computed from other weights than ``loaded``."""
    modes = open_store(modes_path, "modes")
    recorded = modes.attrs.get("weights_sha256")
    if recorded and loaded.weights_sha256 and recorded != loaded.weights_sha256:
        raise QKDissectError(
            f"{modes_path} was computed from other weights (sha256 {str(recorded)[:12]}…) than "
            f"{name} has now ({loaded.weights_sha256[:12]}…): recompute the modes"
        )
    return modes


@dataclass
class ImageModel:
    """A loaded image model ready for a pass over images: its weights, preprocessing, device and patch grid."""

    qk: QKWeights
    loaded: LoadedModel
    name: str
    preprocess: Any
    device: torch.device
    model: torch.nn.Module
    grid: tuple[int, int]


def load_image_model(spec: ModelLike, device: str, model_key: str | None) -> ImageModel:
    """Load a model with its own preprocessing onto ``device``; image passes need a patch grid."""
    qk, loaded = load_qk(spec)
    name = model_key or str(loaded.spec)
    if qk.layout.grid is None:
        raise ValueError(f"{name} has no patch grid: image passes need an image model")
    dev = resolve_device(device)
    return ImageModel(qk, loaded, name, preprocess_for(loaded), dev, loaded.model.to(dev).eval(), qk.layout.grid)


def mask_dataset_dependency(data: Any, spec: str, limit: int | None) -> dict[str, Any]:
    """A mask dataset as an input: its spec and limit (to list it again) and one digest of its items' files."""
    return {
        "role": "mask dataset",
        "spec": spec,
        "limit": limit,
        "count": len(data),
        "sha256": items_sha256((it.id, it.sha256()) for it in data.items),
    }
