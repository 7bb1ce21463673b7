"""Zarr v3 stores, written atomically and opened with their schema checked.

A store is written to ``NAME.tmp-XXXX`` beside the target and renamed into place only when complete: a crash
(SIGKILL included) leaves either the old store or none, never a half-written one under the final name. The next
write of the same store removes what an interrupted one left (``NAME.tmp-*``, ``NAME.old-*``). Every store has
``attrs["qkdissect_schema"]`` (its kind and version, see :mod:`.schema`), ``attrs["provenance"]`` and the digest of
its own content and attributes (``attrs["qkdissect_content"]``, see :mod:`.content`): a store with a chunk gone or
an attribute edited after it was written refuses to open.
Every store has consolidated metadata too (what a plain ``xr.open_zarr`` reads first); :func:`open_store` reads each
array's own metadata, which the content record covers.

:func:`failpoint` marks the steps of a write for the fault-injection tests (``$QKDISSECT_FAILPOINT``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import DamagedStoreError, output_error
from ..lifeline import check_parent
from ..locks import writer_lock
from .content import damage, record_content
from .ownership import check_replace


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


FAILPOINT_ENV = "QKDISSECT_FAILPOINT"


_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    """A named step of a write, for fault injection. ``$QKDISSECT_FAILPOINT=NAME[@N][:ACTION]`` makes the N-th
    (default first) arrival here ``kill`` the process with SIGKILL (the default: what a scheduler's time limit
    or the OOM killer does), ``hang`` (so that a test can kill the whole process group from outside) or ``pause``
    for 5 s and go on (so that a test can kill its parent meanwhile)."""
    want = os.environ.get(FAILPOINT_ENV)
    if not want:
        return
    point, _, action = want.rpartition(":")
    if action not in ("kill", "hang", "pause"):  # no action given: the whole value names the point
        point, action = want, "kill"
    point, _, nth = point.partition("@")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(nth or 1):
        return
    if action == "pause":
        time.sleep(5)
        return
    if action == "hang":
        while True:
            time.sleep(60)
    os.kill(os.getpid(), signal.SIGKILL)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _remove_all(tmp: Path, tries: int = 20) -> None:
    """Remove a failed write's temporary output, again while writers that were still running (zarr writes chunks
    from a thread pool) add files to it after the first removal."""
    for _ in range(tries):
        _remove(tmp)
        if not (tmp.exists() or tmp.is_symlink()):
            return
        time.sleep(0.05)


def remove_leftovers(path: str | Path) -> list[Path]:
    """Delete what interrupted writes of ``path`` left beside it (``NAME.tmp-*``, ``NAME.old-*``)."""
    final = Path(path)
    found = [p for kind in ("tmp", "old") for p in sorted(final.parent.glob(f"{final.name}.{kind}-*"))]
    for p in found:
        _remove(p)
    return found


@contextmanager
def atomic_path(path: str | Path, owned: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces ``path``, on any error it is removed (and what an
    earlier, killed write left is removed first; a full disk or a forbidden folder is one error line). The
    output's lock (:mod:`qkdissect.locks`) is held throughout: a second writer is refused before it touches
    anything; the rename happens only while this process's job is alive (:mod:`qkdissect.lifeline`). What is at
    ``path`` is replaced only when it is of the same kind as what was written, or ``owned`` accepts it
    (:func:`qkdissect.stores.ownership.check_replace`): anything else is left as it is and the write fails."""
    final = Path(path)
    try:
        with writer_lock(final):
            final.parent.mkdir(parents=True, exist_ok=True)
            remove_leftovers(final)
            tmp = final.with_name(f"{final.name}.tmp-{uuid.uuid4().hex[:8]}")
            try:
                yield tmp
                failpoint("store:before-rename")
                check_replace(final, tmp, owned)
                _publish(tmp, final)
            except BaseException:
                _remove_all(tmp)
                raise
    except OSError as e:  # a full disk, a folder we may not write: one line naming the output
        if (err := output_error(e, final)) is None:
            raise
        raise err from e


def _publish(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final`` (replacing it) while the job that started this process is alive; SIGTERM
    waits until both renames are done."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        check_parent(final)
        if final.exists():
            old = final.with_name(f"{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
            failpoint("store:between-renames")
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


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
