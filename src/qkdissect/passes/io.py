"""A pass's stores in and out, without torch: a store it reads (path or Dataset) with its dependency record, its
result written (or kept in memory), the weights it read checked against their manifest, and its provenance record.
The scores pass needs nothing else, nor does a modes job that reads its weights from the file: their jobs never
import torch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from ..provenance.records import base_record, dependency
from ..stores import open_store, write_store
from ..util.clock import utc_now

#: a store a pass reads: its path (recorded with its digest), or the Dataset itself, in memory
StoreLike = str | Path | xr.Dataset


def store_input(store: StoreLike, kind: str, role: str) -> tuple[xr.Dataset, list[dict[str, Any]]]:
    """A store a pass reads, and its dependency (none for a Dataset in memory)."""
    if isinstance(store, xr.Dataset):
        return store, []
    return open_store(store, kind), [dependency(role, store)]


def finish(ds: xr.Dataset, output: str | Path | None) -> xr.Dataset:
    """A pass's result: written to ``output`` and opened from there, or the Dataset in memory."""
    if output is None:
        return ds
    return open_store(write_store(ds, output))


def weights_checked(
    path: Path | None, sha256: str | None, name: str, manifest: dict[str, Any] | str | Path | None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The manifest (read when given as a path, then recorded as an input), checked against the weights file
    read (``path``, its ``sha256``), and the inputs it and the weights file add to an artefact's
    ``dependencies``."""
    from ..models.manifest import check_manifest, read_manifest

    deps = []
    if isinstance(manifest, str | Path):
        deps.append(dependency("weights manifest", manifest))
        manifest = read_manifest(manifest)
    if path is not None:
        deps.append(dependency("weights", path.resolve(), sha256))
    if manifest is not None:
        check_manifest(manifest, sha256, name, path)
    return manifest, deps


def model_record(
    kind: str, parameters: dict[str, Any], model: dict[str, Any], weights: dict[str, Any],
    inputs: tuple[list[dict[str, Any]], Sequence[dict[str, Any]]], device: dict[str, Any], started: str, **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """The provenance of a pass's store: what made it (kind, parameters, code, config), from which model (its
    ``model`` and ``weights`` records, the manifest in ``weights``), from which inputs (``inputs``: those the
    weights add, from :func:`weights_checked`, and the pass's own), on which device, when; ``extra`` adds fields
    (batch, timings)."""
    weights_deps, dependencies = inputs
    record = base_record(kind, parameters)
    record.update(
        {
            "inputs": {d["role"]: {k: v for k, v in d.items() if k != "role"} for d in dependencies},
            "model": model,
            "weights": weights,
            "dependencies": [*weights_deps, *dependencies],
            "device": device,
            "started": started,
            "finished": utc_now(),
            **extra,
        }
    )
    return record
