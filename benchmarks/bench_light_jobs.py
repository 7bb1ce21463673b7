"""What the workflow's light jobs cost, each in a fresh Python process as Snakemake runs it: a weights manifest
(`qkdissect resolve`, the weights rule), the scores of a modes store (`qkdissect scores`), the modes of the offline
default's SmolLM2 (`qkdissect modes`, raw and folded: a Llama decoder's file read, or the model built) and the
validation of a results folder's RO-Crate (`qkdissect crate --check-only`). Every job of a run pays its imports:
a weights job that imports torch to hash two files, or a scores job that imports scipy.stats for two quantiles,
pays seconds for nothing.

Give several source trees (``--src``, e.g. this checkout's ``src`` and an older commit's in a git worktree) to
time them in one run on one machine. Inputs: the offline default's results (``make figures``), and optionally more
modes stores (``--modes``: a ViT-H-sized stand-in's shows the null of the layer statistics).

Run: ``.venv/bin/python benchmarks/bench_light_jobs.py --src src --src ../before/src [--repeats 3] [--json out]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def timed(src: Path, args: list[str], cwd: Path) -> float:
    """Wall time of ``python -m qkdissect ARGS`` with ``src`` on the path (one thread, as the workflow's jobs)."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve()), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "qkdissect", *args], cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed with {src}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return took


def jobs(results: Path, modes: list[Path], out: Path) -> dict[str, list[str]]:
    named = {
        "resolve dinov2-vits14-imgfocus": ["resolve", "dinov2-vits14-imgfocus", "-o", str(out / "w.json"), "-q"],
        "scores dinov2-vits14-imgfocus": ["scores", str(results / "modes/dinov2-vits14-imgfocus.zarr"), "-o",
                                          str(out / "s.zarr")],
    }  # fmt: skip
    for m in modes:
        named[f"scores {m.stem}"] = ["scores", str(m), "-o", str(out / f"{m.stem}.zarr")]
    for folding in ("raw", "folded"):  # a Llama decoder's modes (the model built, or its file read)
        manifest = str(results / "weights/smollm2-135m.json")
        named[f"modes smollm2-135m ({folding})"] = [
            *("modes", "smollm2-135m", "--manifest", manifest, "--device", "cpu", "--folding", folding, "-q"),
            *("-o", str(out / f"m-{folding}.zarr")),
        ]
    named["crate --check-only (offline default)"] = ["crate", str(results), "--check-only"]
    return named


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, action="append", required=True, help="a source tree (repeat to compare)")
    ap.add_argument("--results", type=Path, default=Path("results"), help="the offline default's results")
    ap.add_argument("--modes", type=Path, action="append", default=[], help="more modes stores to score")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of each job (the crate's: one)")
    ap.add_argument("--json", type=Path, help="write the medians here")
    a = ap.parse_args()
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in jobs(a.results.resolve(), [m.resolve() for m in a.modes], Path(tmp)).items():
            n = 1 if name.startswith("crate") else a.repeats
            rows[name] = {str(src): statistics.median(timed(src, args, Path.cwd()) for _ in range(n)) for src in a.src}
            print(f"{name:45s} " + "  ".join(f"{s}: {t:6.2f} s" for s, t in rows[name].items()), flush=True)
    if a.json:
        out: dict[str, Any] = {"machine": platform.platform(), "cpus": os.cpu_count(), "jobs": rows}
        a.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
