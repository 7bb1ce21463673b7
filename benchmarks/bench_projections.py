"""Images per second of the projection pass against a bare forward pass of the same model and batch size.

Both run in this one process on the same model, batch size and random input batches (decoding is the same for
both and is left out):

* **bare**: ``model(x)`` under ``torch.inference_mode()``;
* **projection**: ``qkdissect.projections.Projector`` (the same forward pass with a hook per layer that multiplies
  the patch tokens by ``[U_l | V_l]`` and keeps max/min over tokens) + the streaming top-k update + the copy of the
  per-image statistics to host memory, i.e. everything ``qkdissect project`` does per batch but decoding and
  the Zarr write.

Median of ``--repeats`` timed batches after ``--warmup`` untimed ones, alternating bare and projection so both see
the same machine state. Target: ratio (projection / bare images per second) >= 0.8.

Models: ViT-S/14 (DINOv2 geometry, d=384, 6 heads) and ViT-B/16 (d=768, 12 heads) at 224 px with random weights
(the timing does not depend on the values), modes of their own W_q/W_k. ``--memory`` also runs
``qkdissect project`` on 64 and 256 generated images in child processes and reports their peak RSS (it must
not grow with the number of images).

Run: ``.venv/bin/python benchmarks/bench_projections.py [--device cuda] [--json out.json] [--memory]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qkdissect.core.device import resolve_device
from qkdissect.core.modes import qk_modes
from qkdissect.core.topk import StreamingTopK
from qkdissect.models import QKWeights, extract_qk
from qkdissect.passes.projections import Projector

MODELS = {"ViT-S/14 (DINOv2 geometry)": "vit_small_patch14_dinov2", "ViT-B/16": "vit_base_patch16_224"}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def random_model(arch: str, dev: torch.device) -> tuple[torch.nn.Module, QKWeights, np.ndarray, np.ndarray]:
    """A timm model of that architecture with seeded random weights at 224 px on ``dev``, its query-key weights
    and the U, V of its modes (float64, computed on the CPU)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=0, img_size=224).eval().to(dev)
    qk = extract_qk(model, arch)
    u, _, v = qk_modes(qk.w_q, qk.w_k, dtype="float64", device="cpu").numpy()
    return model, qk, u, v


def bench_model(name: str, arch: str, batch: int, repeats: int, warmup: int, dev: torch.device) -> dict[str, Any]:
    return time_pass(name, arch, random_model(arch, dev), batch, repeats, warmup, dev)


def time_pass(
    name: str,
    arch: str,
    built: tuple[torch.nn.Module, QKWeights, np.ndarray, np.ndarray],
    batch: int,
    repeats: int,
    warmup: int,
    dev: torch.device,
) -> dict[str, Any]:
    """Bare forward vs projection pass of a model from :func:`random_model` (moved to ``dev``) on random batches."""
    model, qk, u, v = built
    proj = Projector(qk, u, v, device=dev)
    top = StreamingTopK((qk.n_layers, qk.n_heads, u.shape[-1], 2), 8, device=dev, n_payload=1)
    x = torch.randn(batch, 3, 224, 224, device=dev)
    idx = torch.arange(batch)

    def bare() -> None:
        with torch.inference_mode():
            model(x)
        _sync(dev)

    def projection() -> None:
        stats = proj(model, x)
        top.update(stats.scores(), idx, [stats.both_negative()])  # as the pass: with the both-negative flags
        for t in (stats.q_max, stats.q_min, stats.k_max, stats.k_min):
            t.cpu().numpy()
        _sync(dev)

    for _ in range(warmup):
        bare()
        projection()
    tb, tp = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        bare()
        tb.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        projection()
        tp.append(time.perf_counter() - t0)
    b, p = statistics.median(tb), statistics.median(tp)
    return {
        "model": name,
        "arch": arch,
        "batch": batch,
        "bare_images_per_s": batch / b,
        "projection_images_per_s": batch / p,
        "ratio": b / p,
    }


def peak_rss_mb(n_images: int, workdir: Path, dinov2: str | None) -> float:
    """Peak RSS (MB) of a child process running compute_projections on n generated images."""
    code = f"""
import resource, numpy as np
from pathlib import Path
from PIL import Image
from qkdissect.passes.projections import compute_projections
from qkdissect.passes.weights import compute_modes
from qkdissect.stores import write_store
folder = Path({str(workdir)!r}) / "imgs{n_images}"
folder.mkdir(exist_ok=True)
rng = np.random.default_rng(0)
for i in range({n_images}):
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(folder / f"{{i:05d}}.png")
spec = {dinov2!r}
if not spec:  # random weights in a local file: no hub needed
    import timm
    from safetensors.torch import save_file
    w = Path({str(workdir)!r}) / "random_vits14.safetensors"
    if not w.exists():
        save_file(timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0).state_dict(), w)
    spec = f"timm:vit_small_patch14_dinov2@{{w}}?img_size=224"
modes = Path({str(workdir)!r}) / "modes.zarr"
if not modes.exists():
    write_store(compute_modes(spec, device="cpu"), modes)
compute_projections(spec, modes, str(folder), Path({str(workdir)!r}) / "p{n_images}.zarr", batch_size=16,
                    device="cpu", workers=0, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"the memory run on {n_images} images failed:\n{r.stderr[-3000:]}")
    return float(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS for 64 and 256 images")
    ap.add_argument("--dinov2", default=None, help="a DINOv2-S/14 spec for --memory (default: random weights)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dev = resolve_device(args.device)
    rows = [bench_model(n, a, args.batch, args.repeats, args.warmup, dev) for n, a in MODELS.items()]
    print(f"device {dev}, batch {args.batch}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'model':<28} {'bare img/s':>11} {'projection img/s':>17} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['model']:<28} {r['bare_images_per_s']:>11.1f} {r['projection_images_per_s']:>17.1f} {r['ratio']:>6.2f}"
        )
    out: dict[str, Any] = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    if args.memory:
        with tempfile.TemporaryDirectory() as tmp:
            mem = {n: peak_rss_mb(n, Path(tmp), args.dinov2) for n in (64, 256)}
        out["peak_rss_mb"] = mem
        print("peak RSS of `project`: " + ", ".join(f"{n} images {v:.0f} MB" for n, v in mem.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    ok = all(r["ratio"] >= 0.8 for r in rows)
    print("target >= 0.8x bare forward:", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
