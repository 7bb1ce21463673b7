"""Zarr v3 stores, written atomically and opened with their schema checked.

A store is written to ``NAME.tmp-XXXX`` beside the target and renamed into place only when complete: a crash
(SIGKILL included) leaves either the old store or none, never a half-written one under the final name. The next
write of the same store removes what an interrupted one left (``NAME.tmp-*``, ``NAME.old-*``). Every store has
``attrs["qkdissect_schema"]`` (its kind and version, see :mod:`.schema`), ``attrs["provenance"]`` and the digest of
its own content and attributes (``attrs["qkdissect_content"]``, see :mod:`.content`): a store with a chunk gone or
an attribute edited after it was written refuses to open.
Every store has consolidated metadata too (what a plain ``xr.open_zarr`` reads first); :func:`open_store` reads each
array's own metadata, which the content record covers.

The write under a temporary name (:func:`~qkdissect.util.atomic.atomic_path`) and the fault-injection points of a
write (:func:`~qkdissect.util.atomic.failpoint`, ``$QKDISSECT_FAILPOINT``) are those of every output of the package,
in :mod:`qkdissect.util.atomic`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import DamagedStoreError
from ..util.atomic import atomic_path, failpoint
from .content import damage, record_content


def _compressor() -> Any:
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


def jsonable(obj: Any) -> Any:
    """attrs must survive JSON: numpy scalars/arrays and paths become plain values."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


@contextmanager
def _consolidating() -> Iterator[None]:
    """Write consolidated metadata (what a plain ``xr.open_zarr`` reads first) without zarr's warning that Zarr v3
    has no consolidated metadata in its specification yet (zarr-python and xarray read it; so do we not)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {}
    for name, var in ds.data_vars.items():
        # one chunk per layer: a figure of one layer reads one chunk per variable
        chunks = tuple(1 if dim == "layer" else n for dim, n in zip(var.dims, var.shape, strict=True))
        enc[str(name)] = {"chunks": chunks, "compressors": (_compressor(),)}
    return enc


def write_store(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` as a Zarr v3 store at ``path`` (atomically, replacing an existing store)."""
    with atomic_path(path) as tmp:
        with _consolidating():
            ds.to_zarr(tmp, mode="w-", zarr_format=3, encoding=_encoding(ds), consolidated=True)
        record_content(tmp)
        failpoint("store:written")
    return Path(path)


def open_store(path: str | Path, kind: str | None = None) -> xr.Dataset:
    """Open a store written by :func:`write_store` or :class:`StreamingStore`; ``kind`` ('modes', 'scores',
    'projections', 'preference') checks its schema."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no store at {p}")
    with warnings.catch_warnings():  # Snakemake marks directory() outputs with a .snakemake_timestamp file
        warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
        ds = xr.open_zarr(p, zarr_format=3, consolidated=False)
    schema = ds.attrs.get("qkdissect_schema", "")
    if not schema:
        raise ValueError(f"{p} is not a qkdissect store (no qkdissect_schema attribute)")
    if kind is not None and not schema.startswith(kind + "/"):
        raise ValueError(f"{p} is a {schema} store, expected a {kind} store")
    why = damage(p)
    if why:
        raise DamagedStoreError(
            f"store {p} is damaged: {why}. Delete the store and make it again "
            "(`snakemake` remakes it and what was made from it; `qkdissect audit` lists what it affects)"
        )
    return ds


class StreamingStore:
    """A Zarr v3 store filled batch by batch (arrays chunked along their first dim), then completed with small
    xarray variables and attributes, and renamed into place only by :meth:`finish`. Use as a context manager:
    an exception (or a kill) leaves no store under the final name."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        self.tmp: Path | None = None
        self._group: Any = None

    def __enter__(self) -> StreamingStore:
        import zarr

        self.tmp = self._ctx.__enter__()
        self._group = zarr.open_group(self.tmp, mode="w-", zarr_format=3)
        return self

    def create(
        self,
        name: str,
        shape: tuple[int, ...],
        dims: tuple[str, ...],
        chunks: tuple[int, ...],
        dtype: str,
        **attrs: Any,
    ) -> None:
        fill = np.nan if np.dtype(dtype).kind == "f" else 0
        arr = self._group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            dimension_names=dims,
            fill_value=fill,
            compressors=(_compressor(),),
        )
        arr.attrs.update(jsonable(attrs))

    def write(self, name: str, start: int, values: np.ndarray) -> None:
        self._group[name][start : start + values.shape[0]] = values
        failpoint("stream:write")

    def finish(self, ds: xr.Dataset) -> None:
        """Add the variables, coordinates and attributes of ``ds`` (small ones) to the store."""
        assert self.tmp is not None
        ds.attrs = jsonable(ds.attrs)
        enc = {n: {"compressors": (_compressor(),)} for n in ds.data_vars}
        failpoint("stream:finish")
        with _consolidating():
            ds.to_zarr(self.tmp, mode="a", zarr_format=3, consolidated=True, encoding=enc)
        record_content(self.tmp)

    def __exit__(self, *exc: Any) -> bool | None:
        return self._ctx.__exit__(*exc)
