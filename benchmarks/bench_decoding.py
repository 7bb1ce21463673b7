"""Does decoding keep up? Images per second of a pass reading JPEG files against the bare forward pass on the
same images already decoded (issue 17, item 3; goal: >= 0.8 on 2 cores for ViT-S/14 at 224 px).

On the first ``--n`` photographs of an image folder (default: the 1000 ImageNet validation photographs of
``../shared/assets``), in this one process:

* **decode**: the pass's own loader (``ImageStream``: read, sha256, decode, the model's resize / centre crop /
  normalisation, in id order) with ``--workers`` DataLoader worker processes, no model;
* **bare**: ``model(x)`` under ``torch.inference_mode()`` on the batches decode produced, held in memory;
* **from files**: the loader and the forward pass together, as ``qkdissect project`` runs them (workers decode
  the next batches while the main process runs the model).

The model is timm's ViT-S/14 (DINOv2 geometry, 224 px, random weights: the timing does not depend on the values)
with timm's default transform for it (resize 256, bicubic, centre crop 224, ImageNet mean / std). Each phase runs
once after one untimed warm-up batch. The ratio *from files / bare* says how much decoding costs the pass.

Run: ``.venv/bin/python benchmarks/bench_decoding.py [--n 256] [--workers 0 1] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from qkdissect.data.geometry import Preprocess
from qkdissect.passes.loop import ImageStream

ASSETS = Path(os.environ.get("QKDISSECT_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))
PREPROCESS = Preprocess(
    crop=(224, 224), resize=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic"
)


def model() -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=224).eval()


def stream(folder: Path, n: int) -> ImageStream:
    return ImageStream.open(f"folder:{folder}", n, PREPROCESS)


def decode(folder: Path, n: int, batch: int, workers: int) -> tuple[float, list[torch.Tensor]]:
    """Seconds to decode the first ``n`` images with ``workers`` loader processes, and the batches."""
    batches: list[torch.Tensor] = []
    t0 = time.perf_counter()
    for _, _, _, x in stream(folder, n).batches(batch, workers, "decode", progress=False):
        if x is not None:
            batches.append(x)
    return time.perf_counter() - t0, batches


def bare(net: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    with torch.inference_mode():
        net(batches[0][:2])  # warm-up
        t0 = time.perf_counter()
        for x in batches:
            net(x)
    return time.perf_counter() - t0


def from_files(net: torch.nn.Module, folder: Path, n: int, batch: int, workers: int) -> float:
    with torch.inference_mode():
        t0 = time.perf_counter()
        for _, _, _, x in stream(folder, n).batches(batch, workers, "pass", progress=False):
            if x is not None:
                net(x)
    return time.perf_counter() - t0


def run(folder: Path, n: int, batch: int, workers: list[int]) -> dict[str, Any]:
    net = model()
    rows = []
    for w in workers:
        t_decode, batches = decode(folder, n, batch, w)
        count = sum(len(x) for x in batches)
        t_bare = bare(net, batches)
        t_files = from_files(net, folder, n, batch, w)
        rows.append(
            {
                "workers": w,
                "images": count,
                "decode_images_per_s": round(count / t_decode, 2),
                "bare_images_per_s": round(count / t_bare, 2),
                "from_files_images_per_s": round(count / t_files, 2),
                "ratio_from_files_over_bare": round(t_bare / t_files, 3),
            }
        )
        print(json.dumps(rows[-1]))
    return {
        "benchmark": "decoding",
        "model": "vit_small_patch14_dinov2 @ 224 px (random weights)",
        "folder": folder.name,
        "batch_size": batch,
        "torch_threads": torch.get_num_threads(),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "python": platform.python_version()},
        "torch": torch.__version__,
        "results": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, default=ASSETS / "images/imagenet_sample_1000", help="a folder of images")
    p.add_argument("--n", type=int, default=256, help="images (the first N by id)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="DataLoader worker processes to try")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    if not args.images.is_dir():
        raise SystemExit(f"bench_decoding: no image folder at {args.images}: give --images or set QKDISSECT_ASSETS")
    out = run(args.images, args.n, args.batch_size, args.workers)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
