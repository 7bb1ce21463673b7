"""Time the SVD of every head's query-key matrix W_qk = W_q,h^T W_k,h: released-code loop vs ``qk_modes``.

Both methods run in this one process, on this one machine, on the same seeded Gaussian weights:

* **baseline** (the released notebook's approach): pure numpy, a Python loop over layers and heads; for each
  head form ``M = W_q[l, h].T @ W_k[l, h]`` (d_model x d_model) and call ``np.linalg.svd(M)`` (default
  ``full_matrices=True``), keeping the first d_head modes. float64. To keep the run short the baseline runs
  heads in order until ``--baseline-seconds`` have elapsed (or all heads are done) and extrapolates
  per-head time x total heads; ``--full-baseline`` runs every head. It runs once (no repeats).
* **ours**: ``qkdissect.modes.qk_modes(w_q, w_k, dtype="float64", device=...)`` on the whole
  (layer, head, d_head, d_model) stack: batched thin QR of both factors + SVD of the d_head x d_head core.
  Inputs are CPU torch tensors, so with ``--device cuda`` the host-to-device copy is inside the timing;
  the timer stops after ``torch.cuda.synchronize()``. Median of ``--repeats`` runs after one warm-up.

The same run checks that both agree on the heads the baseline did: singular values to 1e-8 relative to each
head's largest one, and per-mode cosines ``|u_n . v_n|`` for modes whose relative gap exceeds 1e-6.

Run: ``.venv/bin/python benchmarks/bench_modes.py [--device cuda] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from qkdissect.core.device import resolve_device
from qkdissect.core.modes import Modes, qk_modes
from qkdissect.options import DType

Shape = tuple[int, int, int, int]  # (layers, heads, d_model, d_head)

HEAD_TO_HEAD: dict[str, Shape] = {
    "ViT-B/16": (12, 12, 768, 64),
    "ViT-L/16": (24, 16, 1024, 64),
    "ViT-H/14": (32, 16, 1280, 80),
}

PAPER_MODELS: dict[str, Shape] = {
    "google/vit-base-patch16-224": (12, 12, 768, 64),
    "google/vit-base-patch32-384": (12, 12, 768, 64),
    "google/vit-large-patch16-224": (24, 16, 1024, 64),
    "google/vit-large-patch32-384": (24, 16, 1024, 64),
    "google/vit-huge-patch14-224-in21k": (32, 16, 1280, 80),
    "facebook/dino-vits16": (12, 6, 384, 64),
    "facebook/dino-vitb16": (12, 12, 768, 64),
    "openai/clip-vit-base-patch16": (12, 12, 768, 64),
    "openai/clip-vit-base-patch32": (12, 12, 768, 64),
    "openai/clip-vit-large-patch14": (24, 16, 1024, 64),
    "facebook/deit-tiny-distilled-patch16-224": (12, 3, 192, 64),
    "facebook/deit-small-distilled-patch16-224": (12, 6, 384, 64),
    "facebook/deit-base-distilled-patch16-224": (12, 12, 768, 64),
    "simmim-pretrain (ViT-B/16)": (12, 12, 768, 64),
    "simmim-finetune (ViT-B/16)": (12, 12, 768, 64),
    "I-JEPA ViT-H/14 encoder": (32, 16, 1280, 80),
}

EXTRA_MODELS: dict[str, Shape] = {"I-JEPA predictor": (12, 16, 384, 24)}

S_RTOL = 1e-8  # |s_ours - s_base| / s_max(head)
GAP_RTOL = 1e-6  # a mode's cosine is compared when its gap to both neighbours exceeds this x s_max(head)
COS_ATOL = 1e-7  # | |u.v|_ours - |u.v|_base |


@dataclass
class BaselineResult:
    seconds: float  # measured or extrapolated time for all heads
    measured_seconds: float
    heads_done: int
    heads_total: int
    extrapolated: bool
    s: list[np.ndarray] = field(repr=False)  # per head done, (d_head,)
    cos: list[np.ndarray] = field(repr=False)  # per head done, |u_n . v_n|, (d_head,)


@dataclass
class Check:
    heads_compared: int
    max_s_rel_err: float
    modes_compared: int
    modes_skipped: int
    max_cos_abs_err: float
    ok: bool


@dataclass
class Row:
    name: str
    shape: Shape
    baseline_s: float
    baseline_measured_s: float
    baseline_heads_done: int
    baseline_heads_total: int
    baseline_extrapolated: bool
    ours_s: float
    ours_all_s: list[float]
    ratio: float
    check: Check


def make_weights(shape: Shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded Gaussian (layer, head, d_head, d_model) query and key weights, float64."""
    layers, heads, d_model, d_head = shape
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(d_model)
    w_q = rng.standard_normal((layers, heads, d_head, d_model)) * scale
    w_k = rng.standard_normal((layers, heads, d_head, d_model)) * scale
    return w_q, w_k


def run_baseline(w_q: np.ndarray, w_k: np.ndarray, budget_s: float, full: bool) -> BaselineResult:
    """The released code's loop: form each d_model x d_model M and take its full SVD."""
    layers, heads, d_head, _ = w_q.shape
    total = layers * heads
    s_done: list[np.ndarray] = []
    cos_done: list[np.ndarray] = []
    elapsed = 0.0  # time inside the timed region only (product + SVD + keeping d_head modes)
    for layer in range(layers):
        for head in range(heads):
            t0 = time.perf_counter()
            m = w_q[layer, head].T @ w_k[layer, head]
            u, s, vh = np.linalg.svd(m)
            u, s, v = u[:, :d_head], s[:d_head], vh[:d_head].T
            elapsed += time.perf_counter() - t0
            s_done.append(s)
            cos_done.append(np.abs(np.einsum("dn,dn->n", u, v)))
            if not full and elapsed >= budget_s:
                break
        else:
            continue
        break
    done = len(s_done)
    seconds = elapsed if done == total else elapsed / done * total
    return BaselineResult(seconds, elapsed, done, total, done < total, s_done, cos_done)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(
    w_q: torch.Tensor, w_k: torch.Tensor, device: torch.device, repeats: int, dtype: DType = "float64"
) -> tuple[list[float], Modes]:
    """One warm-up then ``repeats`` timed runs; returns (times, modes of the last run)."""
    modes = qk_modes(w_q, w_k, dtype=dtype, device=device)
    _sync(device)
    times: list[float] = []
    for _ in range(repeats):
        del modes
        t0 = time.perf_counter()
        modes = qk_modes(w_q, w_k, dtype=dtype, device=device)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times, modes


def check_against_baseline(
    modes: Modes,
    base: BaselineResult,
    heads: int,
    s_rtol: float = S_RTOL,
    gap_rtol: float = GAP_RTOL,
    cos_atol: float = COS_ATOL,
) -> Check:
    u_all, s_all, v_all = modes.numpy()
    max_s = 0.0
    max_cos = 0.0
    compared = skipped = 0
    for i, (s_b, cos_b) in enumerate(zip(base.s, base.cos, strict=True)):
        layer, head = divmod(i, heads)
        s_o = s_all[layer, head]
        s_max = float(s_b[0])
        max_s = max(max_s, float(np.max(np.abs(s_o - s_b))) / s_max)
        cos_o = np.abs(np.einsum("dn,dn->n", u_all[layer, head], v_all[layer, head]))
        # Gap of each mode to its neighbours (mode d_head borders the zero singular values of M).
        padded = np.concatenate([[np.inf], s_b, [0.0]])
        gap = np.minimum(padded[:-2] - padded[1:-1], padded[1:-1] - padded[2:]) / s_max
        sep = gap > gap_rtol
        compared += int(sep.sum())
        skipped += int((~sep).sum())
        if sep.any():
            max_cos = max(max_cos, float(np.max(np.abs(cos_o[sep] - cos_b[sep]))))
    ok = max_s <= s_rtol and max_cos <= cos_atol
    return Check(len(base.s), max_s, compared, skipped, max_cos, ok)


def machine_info(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_num_threads": torch.get_num_threads(),
    }
    cpu_name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["cpu_name"] = cpu_name
    info["loadavg_at_start"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    info["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name
    return info


def busy_cpu_seconds() -> float | None:
    """CPU seconds spent busy by the whole machine since boot (Linux ``/proc/stat``), else None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    jiffies = [int(x) for x in fields]
    idle = jiffies[3] + (jiffies[4] if len(jiffies) > 4 else 0)  # idle + iowait
    return (sum(jiffies[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def fmt_shape(shape: Shape) -> str:
    return "L={} H={} d={} dh={}".format(*shape)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda; used by ours only")
    p.add_argument("--baseline-seconds", type=float, default=5.0, help="time budget per shape for the baseline")
    p.add_argument("--full-baseline", action="store_true", help="run the baseline on every head (slow)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of ours after one warm-up (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write every number and machine info here")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")

    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as exc:
        p.error(str(exc))
    info = machine_info(device)
    t_start = time.perf_counter()
    busy0, own0 = busy_cpu_seconds(), own_cpu_seconds()
    print(
        f"torch {info['torch']}  numpy {info['numpy']}  device {device} ({info['device_name']})  "
        f"cpu_count {info['cpu_count']}  torch threads {info['torch_num_threads']}"
    )
    np.linalg.svd(np.random.default_rng(0).standard_normal((64, 64)))  # load LAPACK before any timing

    cache: dict[Shape, tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]] = {}

    def weights(shape: Shape) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
        if shape not in cache:
            wq, wk = make_weights(shape, args.seed)
            cache[shape] = (wq, wk, torch.from_numpy(wq), torch.from_numpy(wk))
        return cache[shape]

    # 1-2. Head-to-head on the three ViT sizes.
    rows: list[Row] = []
    budget = "all heads" if args.full_baseline else f"budget {args.baseline_seconds:g} s per shape"
    print(f"\nBaseline: numpy loop, np.linalg.svd(W_q^T W_k) per head, float64, one run ({budget}).")
    print(f"Ours: qk_modes(float64, device={device}), median of {args.repeats} after 1 warm-up.\n")
    for name, shape in HEAD_TO_HEAD.items():
        wq, wk, tq, tk = weights(shape)
        base = run_baseline(wq, wk, args.baseline_seconds, args.full_baseline)
        times, modes = time_ours(tq, tk, device, args.repeats)
        check = check_against_baseline(modes, base, shape[1])
        del modes
        ours = statistics.median(times)
        rows.append(
            Row(
                name,
                shape,
                base.seconds,
                base.measured_seconds,
                base.heads_done,
                base.heads_total,
                base.extrapolated,
                ours,
                times,
                base.seconds / ours,
                check,
            )
        )

    header = f"{'model':<10} {'shape':<28} {'baseline s':>11}  {'baseline basis':<30} {'ours s':>9} {'ratio':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        basis = (
            f"extrapolated from {r.baseline_heads_done}/{r.baseline_heads_total} heads"
            if r.baseline_extrapolated
            else f"measured, all {r.baseline_heads_total} heads"
        )
        print(
            f"{r.name:<10} {fmt_shape(r.shape):<28} {r.baseline_s:>11.2f}  {basis:<30} "
            f"{r.ours_s:>9.4f} {r.ratio:>8.0f}x"
        )
    print("\nCorrectness on the heads the baseline did (ours vs np.linalg.svd):")
    for r in rows:
        c = r.check
        print(
            f"  {r.name:<10} {c.heads_compared:>3} heads: max |ds|/s_max {c.max_s_rel_err:.1e} (tol {S_RTOL:g}); "
            f"|u.v| on {c.modes_compared} separated modes ({c.modes_skipped} skipped): "
            f"max err {c.max_cos_abs_err:.1e} (tol {COS_ATOL:g})  {'OK' if c.ok else 'FAIL'}"
        )

    # 3. All 16 paper models with ours.
    print(f"\nOurs over the 16 paper models (device {device}, median of {args.repeats} after 1 warm-up):")
    paper: list[dict[str, object]] = []
    medians: dict[str, float] = {}

    def time_model(name: str, shape: Shape) -> None:
        _, _, tq, tk = weights(shape)
        times, modes = time_ours(tq, tk, device, args.repeats)
        del modes
        medians[name] = statistics.median(times)
        paper.append({"name": name, "shape": shape, "ours_s": medians[name], "ours_all_s": times})
        print(f"  {name:<36} {fmt_shape(shape):<28} {medians[name]:>8.4f} s")

    for name, shape in PAPER_MODELS.items():
        time_model(name, shape)
    total16 = sum(medians[name] for name in PAPER_MODELS)
    print(f"  {'TOTAL, 16 paper models':<36} {'':<28} {total16:>8.4f} s  (target < 20 s on 2 CPU cores)")
    print("Not in the total:")
    for name, shape in EXTRA_MODELS.items():
        time_model(name, shape)
    predictor = medians["I-JEPA predictor"]

    wall = time.perf_counter() - t_start
    busy1, own1 = busy_cpu_seconds(), own_cpu_seconds()
    # CPU time other processes used during the run: a large value means the timings above are disturbed.
    foreign = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) - (own1 - own0))
    all_ok = all(r.check.ok for r in rows)
    print(f"\nCorrectness: {'all OK' if all_ok else 'FAILED'}.  Benchmark wall time {wall:.1f} s.")
    if foreign is not None:
        note = "  WARNING: the machine was not idle, timings are disturbed." if foreign > 0.05 * wall else ""
        print(f"CPU time used by other processes during the run: {foreign:.1f} s.{note}")

    if args.json is not None:
        out = {
            "machine": info,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "tolerances": {"s_rtol": S_RTOL, "gap_rtol": GAP_RTOL, "cos_atol": COS_ATOL},
            "head_to_head": [asdict(r) for r in rows],
            "paper_models": paper,
            "paper_models_total_s": total16,
            "ijepa_predictor_s": predictor,
            "correctness_ok": all_ok,
            "wall_s": wall,
            "other_processes_cpu_s": foreign,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"Wrote {args.json}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
