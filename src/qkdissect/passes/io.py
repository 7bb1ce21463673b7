"""A pass's stores in and out, without torch: a store it reads (path or Dataset) with its dependency record, and
its result written (or kept in memory). The scores pass needs nothing else, so its job never imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import xarray as xr

from ..provenance.records import dependency
from ..stores import open_store, write_store

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
