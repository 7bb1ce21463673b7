"""Images per second of the duplicate detection of an image set (``dedupe``), and the seconds its pairwise
comparison takes at ImageNet-validation size.

* **hash**: :func:`qkdissect.data.duplicates.hash_items` over a folder of photographs (default: the 1000 ImageNet
  photographs of the test assets, shorter side 256 px): read, sha256, reduced JPEG decode, 32 x 32 greyscale, DCT,
  64-bit hash; median of ``--repeats`` runs (the files in the page cache after the first).
* **compare**: :func:`qkdissect.data.duplicates.duplicate_of` over ``--n`` random 64-bit hashes (default 50,000:
  1.25e9 pairs), with a few planted near copies that it must find.

Run: ``.venv/bin/python benchmarks/bench_dedupe.py [--folder DIR] [--n 50000] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from qkdissect.data.duplicates import duplicate_of, hash_items
from qkdissect.data.sources import image_source

ASSETS = Path(os.environ.get("QKDISSECT_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", default=str(ASSETS / "images/imagenet_sample_1000"))
    ap.add_argument("--n", type=int, default=50_000, help="hashes compared")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    items = image_source(f"folder:{args.folder}").items
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        got = hash_items(items)
        times.append(time.perf_counter() - t0)
    hash_s = statistics.median(times)
    rng = np.random.default_rng(0)
    hashes = [int(h) for h in rng.integers(0, 2**63, args.n, dtype=np.int64)]
    for k in range(10):  # plant near copies (2 bits flipped) that must be found
        hashes[args.n - 1 - k] = hashes[k] ^ 0b101
    t0 = time.perf_counter()
    of, _ = duplicate_of(hashes, 6)
    compare_s = time.perf_counter() - t0
    found = sorted(int(i) for i in np.flatnonzero(of >= 0))
    ok = found == sorted(args.n - 1 - k for k in range(10))
    out = {
        "images": len(items),
        "undecodable": sum(h is None for h in got.hashes),
        "hash_seconds": round(hash_s, 3),
        "images_per_s": round(len(items) / hash_s, 1),
        "compared": args.n,
        "compare_seconds": round(compare_s, 3),
        "planted_copies_found": ok,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
