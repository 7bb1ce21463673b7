"""The workflow takes its markers out of the stores and keeps their time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from qkdissect.stores import write_store


def test_the_workflow_takes_its_markers_out_of_the_stores_and_keeps_their_time(tmp_path: Path) -> None:
    """What the Snakefile runs when it ends: Snakemake's empty marker at a store's root goes, and its time becomes
    the store folder's (where Snakemake reads a directory's time without one); anything else stays."""
    import os

    from qkdissect.provenance.records import drop_workflow_markers, tree_sha256

    ds = xr.Dataset({"cosine": ("mode", np.arange(3.0))}, attrs={"qkdissect_schema": "scores/v1"})
    a, b = write_store(ds, tmp_path / "r/a.zarr"), write_store(ds, tmp_path / "r/sub/b.zarr")
    before = tree_sha256(a)
    (a / ".snakemake_timestamp").touch()
    os.utime(a / ".snakemake_timestamp", (1_700_000_000, 1_700_000_000))
    (b / ".snakemake_timestamp").write_text("not Snakemake's")
    (a / "cosine/.snakemake_timestamp").touch()
    assert tree_sha256(a) != before  # the one deeper in the store is content
    (a / "cosine/.snakemake_timestamp").unlink()
    assert tree_sha256(a) == before  # the marker at the root is not
    assert drop_workflow_markers(tmp_path / "r") == [a / ".snakemake_timestamp"]
    assert not (a / ".snakemake_timestamp").exists() and a.stat().st_mtime == 1_700_000_000
    assert (b / ".snakemake_timestamp").exists() and tree_sha256(a) == before
