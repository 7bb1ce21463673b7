"""xarray Datasets in Zarr v3 stores: written atomically (:mod:`.readwrite`), one schema builder per store kind
(:mod:`.schema`), each with the digest of its own content (:mod:`.content`).

The names below load :mod:`.readwrite` (and xarray) when first used: :mod:`.content` alone needs neither, so the
workflow checks its stores' content records when it starts without importing xarray."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .readwrite import open_store, write_store

__all__ = ["open_store", "write_store"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import readwrite

        return getattr(readwrite, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
