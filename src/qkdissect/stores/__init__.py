"""xarray Datasets in Zarr v3 stores: written atomically (:mod:`.io`), one schema builder per store kind
(:mod:`.schema`)."""

from .io import atomic_path, open_store, write_store

__all__ = ["atomic_path", "open_store", "write_store"]
