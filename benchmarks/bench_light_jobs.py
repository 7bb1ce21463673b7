"""What the workflow's light jobs cost, each in a fresh Python process as Snakemake runs it: a weights manifest
(`qkdissect resolve`, the weights rule), the scores of a modes store (`qkdissect scores`), the modes of the offline
default's SmolLM2 (`qkdissect modes`, raw and folded: a Llama decoder's file read, or the model built), the modes
of the paper's pickled checkpoints on their stand-ins (``--stand-ins``: DeiT-B's ``pytorch_model.bin``, SimMIM
pretrain and finetune, the I-JEPA encoder and predictor) and the validation of a results folder's RO-Crate
(`qkdissect crate --check-only`). Every job of a run pays its imports:
a weights job that imports torch to hash two files, or a scores job that imports scipy.stats for two quantiles,
pays seconds for nothing.

Give several source trees (``--src``, e.g. this checkout's ``src`` and an older commit's in a git worktree) to
time them in one run on one machine. Inputs: the offline default's results (``make figures``), and optionally more
modes stores (``--modes``: a ViT-H-sized stand-in's shows the null of the layer statistics).

Run: ``.venv/bin/python benchmarks/bench_light_jobs.py --src src --src ../before/src [--repeats 3] [--json out]``;
the stand-ins: ``python -m rehearsal.hub --hf-home DIR/hf --data DIR/data --depth 2``, then ``--stand-ins DIR``.
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

#: the paper's models whose checkpoints are pickles (``pytorch_model.bin``, ``.pth``, ``.pth.tar``)
PICKLED = ["deit-base-distilled-patch16-224", "simmim-vit-b16-pretrain", "simmim-vit-b16-finetune",
           "ijepa-vith14-encoder", "ijepa-vith14-predictor"]  # fmt: skip


def timed(src: Path, args: list[str], cwd: Path, stand_ins: Path | None = None) -> float:
    """Wall time of ``python -m qkdissect ARGS`` with ``src`` on the path (one thread, as the workflow's jobs)."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve()), "OMP_NUM_THREADS": "1"}
    if stand_ins is not None:
        env |= {"HF_HOME": str(stand_ins / "hf"), "HF_HUB_OFFLINE": "1", "QKDISSECT_DATA": str(stand_ins / "data")}
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


def stand_in_jobs(out: Path) -> dict[str, list[str]]:
    return {f"modes {k} (stand-in)": ["modes", k, "--device", "cpu", "-q", "-o", str(out / f"{k}.zarr")]
            for k in PICKLED}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, action="append", required=True, help="a source tree (repeat to compare)")
    ap.add_argument("--results", type=Path, default=Path("results"), help="the offline default's results")
    ap.add_argument("--modes", type=Path, action="append", default=[], help="more modes stores to score")
    ap.add_argument("--stand-ins", type=Path, help="the paper's stand-ins at 2 blocks (rehearsal.hub): hf/, data/")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of each job (the crate's: one)")
    ap.add_argument("--json", type=Path, help="write the medians here")
    a = ap.parse_args()
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        named = {k: (v, None) for k, v in jobs(a.results.resolve(), [m.resolve() for m in a.modes], Path(tmp)).items()}
        if a.stand_ins is not None:
            named |= {k: (v, a.stand_ins.resolve()) for k, v in stand_in_jobs(Path(tmp)).items()}
        for name, (args, world) in named.items():
            n = 1 if name.startswith("crate") else a.repeats
            rows[name] = {
                str(src): statistics.median(timed(src, args, Path.cwd(), world) for _ in range(n)) for src in a.src
            }
            print(f"{name:55s} " + "  ".join(f"{s}: {t:6.2f} s" for s, t in rows[name].items()), flush=True)
    if a.json:
        out: dict[str, Any] = {"machine": platform.platform(), "cpus": os.cpu_count(), "jobs": rows}
        a.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
