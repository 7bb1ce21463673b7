"""Compare two results folders: every store's arrays (exactly, or the largest difference), and every figure's
pixels. For restructurings that must not change a number ("numbers do not drift by accident"):

    python benchmarks/compare_results.py BEFORE/results AFTER/results [--only-common]

Stores are matched by their path under the results folder; a store or figure on one side only is listed.
Provenance (timestamps, code digests) and a store's digest of its own files are not compared. Exit status 1
when anything differs.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
from PIL import Image


def stores(root: Path) -> dict[str, Path]:
    out = {}
    for meta in sorted(root.rglob("zarr.json")):
        store = meta.parent
        if (store.parent / "zarr.json").exists() or ".tmp-" in str(store) or ".old-" in str(store):
            continue  # an array inside a store, or a leftover
        out[str(store.relative_to(root))] = store
    return out


def open_any(path: Path) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_zarr(path, zarr_format=3, consolidated=False).load()


def compare_arrays(a: xr.Dataset, b: xr.Dataset) -> list[str]:
    problems = []
    names = sorted(set(a.variables) | set(b.variables))
    for n in names:
        if n not in a.variables or n not in b.variables:
            problems.append(f"{n}: only in {'after' if n not in a.variables else 'before'}")
            continue
        x, y = a[n].values, b[n].values
        if x.shape != y.shape:
            problems.append(f"{n}: shape {x.shape} vs {y.shape}")
        elif x.dtype.kind in "fc":
            if not np.array_equal(x, y, equal_nan=True):
                diff = np.nanmax(np.abs(x.astype(np.float64) - y.astype(np.float64)))
                problems.append(f"{n}: max |diff| {diff:.3g}")
        elif not np.array_equal(x, y):
            problems.append(f"{n}: {int(np.sum(x != y))} entries differ")
    keep = [k for k in set(a.attrs) | set(b.attrs) if k not in ("provenance", "qkdissect_content")]
    for k in sorted(keep):
        if a.attrs.get(k) != b.attrs.get(k):
            problems.append(f"attrs.{k}: {str(a.attrs.get(k))[:80]} vs {str(b.attrs.get(k))[:80]}")
    return problems


def compare_pixels(a: Path, b: Path) -> str | None:
    x = np.asarray(Image.open(a).convert("RGBA"), dtype=np.int16)
    y = np.asarray(Image.open(b).convert("RGBA"), dtype=np.int16)
    if x.shape != y.shape:
        return f"size {x.shape[1]}x{x.shape[0]} vs {y.shape[1]}x{y.shape[0]}"
    n = int(np.any(x != y, axis=-1).sum())
    return f"{n} of {x.shape[0] * x.shape[1]} pixels differ (max {int(np.abs(x - y).max())})" if n else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--only-common", action="store_true", help="do not report stores/figures on one side only")
    args = p.parse_args(argv)
    bad = 0
    sa, sb = stores(args.before), stores(args.after)
    for name in sorted(set(sa) | set(sb)):
        if name not in sa or name not in sb:
            if not args.only_common:
                print(f"ONLY {'AFTER ' if name in sb else 'BEFORE'}  {name}")
            continue
        problems = compare_arrays(open_any(sa[name]), open_any(sb[name]))
        bad += bool(problems)
        print(f"{'DIFFERS' if problems else 'same   '}  {name}" + "".join(f"\n           {q}" for q in problems))
    fa = {f.name: f for f in (args.before / "figures").glob("*.png")}
    fb = {f.name: f for f in (args.after / "figures").glob("*.png")}
    for name in sorted(set(fa) | set(fb)):
        if name not in fa or name not in fb:
            if not args.only_common:
                print(f"ONLY {'AFTER ' if name in fb else 'BEFORE'}  figures/{name}")
            continue
        diff = compare_pixels(fa[name], fb[name])
        bad += diff is not None
        print(f"{'DIFFERS' if diff else 'same   '}  figures/{name}" + (f"\n           {diff}" if diff else ""))
    print(f"{bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
