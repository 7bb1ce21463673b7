"""The GPU check: one prepared run that times the SVD stage and the projection pass on a CUDA device and checks
its results against the CPU's, writing every figure to one JSON file.

(a) **Modes**: ``qk_modes`` on seeded Gaussian weights of the 16 paper shapes (``bench_modes.PAPER_MODELS``) in
    float32 and float64 on the device (median of ``--repeats`` after a warm-up, host-to-device copy included) and
    once on the CPU; per shape the singular values (relative to each head's largest) and the cosines
    ``|u_n . v_n|`` of well-separated modes must agree (sign-invariant: a mode may flip the signs of u and v).
(b) **Projections**: random-weight timm models of the real ViT-B/16 and ViT-H/14 configurations; the bare forward
    pass and the projection pass (``bench_projections.time_pass``) at ``--batch`` random images on the device
    (halved on out-of-memory), and the projection statistics of ``--check-images`` photographs (or seeded noise
    where there are none) on the CPU and on the device: the image scores must agree to SCORE_RTOL of their
    layer's largest, and the top image of every mode and sign whose lead is clear must be the same.

``--tiny``: tiny shapes, ViT-Ti/16, 2 images, on the CPU (CPU against CPU, under ~20 s): the test suite runs it so
that the script cannot rot. The JSON goes to ``--out`` (a file, or a folder: then ``results_gpu_<device>.json``
there; default ``benchmarks/``). Exit status 1 when a check fails; the JSON is written all the same.

Run: ``PYTHONPATH=src python3 benchmarks/gpu_check.py [--device cuda] [--out DIR]`` (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks, also when imported by a test

from bench_modes import (
    PAPER_MODELS,
    BaselineResult,
    Check,
    Shape,
    check_against_baseline,
    machine_info,
    make_weights,
    time_ours,
)
from bench_projections import random_model, time_pass
from qkdissect.core.device import resolve_device
from qkdissect.core.modes import Modes, qk_modes
from qkdissect.data.geometry import Preprocess
from qkdissect.options import DTYPES
from qkdissect.passes.projections import Projector

TINY_SHAPES: dict[str, Shape] = {"tiny 2x3 d=48 dh=16": (2, 3, 48, 16), "tiny 3x2 d=64 dh=8": (3, 2, 64, 8)}
FULL_MODELS = {"ViT-B/16": "vit_base_patch16_224", "ViT-H/14": "vit_huge_patch14_224"}
TINY_MODELS = {"ViT-Ti/16": "vit_tiny_patch16_224"}

# device vs CPU, per dtype: singular values (relative to the head's largest); the cosines of the modes whose gap
# to both neighbours exceeds gap x s_max (a mode's direction is only defined to about eps / gap). On the CPU,
# float32 against float64 and CholeskyQR against Householder differ by at most 1.6e-6 (s) and 3e-5 (cosines, 97%
# of the modes compared), float64 by 4e-15 and 8e-13: the tolerances leave room for cuSOLVER's own rounding.
MODE_TOL: dict[str, dict[str, float]] = {
    "float64": {"s_rtol": 1e-10, "gap_rtol": 1e-6, "cos_atol": 1e-7},
    "float32": {"s_rtol": 5e-5, "gap_rtol": 1e-3, "cos_atol": 1e-3},
}
# image scores, device vs CPU, relative to the largest |score| of their layer: float32 forward passes whose patch
# embedding may run in TF32 on the GPU (cuDNN's default), i.e. ~5e-4 relative rounding of the inputs
SCORE_RTOL = 5e-3
ASSET_IMAGES = "images/imagenet_sample_1000"


def slug(name: str) -> str:
    """A device name as a file-name part: lower-case letters, digits and '-' only ('NVIDIA H200' -> 'nvidia-h200')."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def reference(modes: Modes) -> BaselineResult:
    """CPU modes in the form ``bench_modes.check_against_baseline`` compares against: per head s and |u_n . v_n|."""
    u, s, v = modes.numpy()
    heads = s.shape[0] * s.shape[1]
    cos = np.abs(np.einsum("lhdn,lhdn->lhn", u, v))
    return BaselineResult(0.0, 0.0, heads, heads, False, list(s.reshape(heads, -1)), list(cos.reshape(heads, -1)))


def compare_modes(test: Modes, ref: Modes, dtype: str) -> Check:
    """Sign-invariant comparison of the device's modes with the CPU's at the tolerances of ``dtype``."""
    return check_against_baseline(test, reference(ref), int(ref.S.shape[1]), **MODE_TOL[dtype])


def compare_scores(test: np.ndarray, ref: np.ndarray, rtol: float = SCORE_RTOL) -> dict[str, Any]:
    """Image scores (image, layer, head, mode, sign) of the device against the CPU's: the largest difference
    relative to its layer's largest |score|, and whether every mode and sign whose best image leads the second by
    more than 2 x rtol of the layer's scale has the same best image."""
    scale = np.abs(ref).max(axis=(0, 2, 3, 4), keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    err = float(np.max(np.abs(test - ref) / scale))
    order = np.argsort(-ref, axis=0, kind="stable")
    best = order[0]
    top2 = np.take_along_axis(ref, order[:2], axis=0)
    lead = top2[0] - top2[1] if ref.shape[0] > 1 else np.full(best.shape, np.inf)
    clear = lead / scale[0] > 2 * rtol
    same = np.argmax(test, axis=0) == best
    top_ok = bool(np.all(same[clear]))
    return {
        "max_rel_err": err,
        "rtol": rtol,
        "top1_compared": int(clear.sum()),
        "top1_same": int(same[clear].sum()),
        "ok": bool(err <= rtol and top_ok),
    }


def check_modes(shapes: dict[str, Shape], device: torch.device, repeats: int, seed: int) -> list[dict[str, Any]]:
    """(a): every shape in float32 and float64 on ``device`` (timed) and once on the CPU, compared."""
    rows: list[dict[str, Any]] = []
    cpu_ref: dict[tuple[Shape, str], tuple[float, Modes]] = {}
    qk_modes(*make_weights((1, 1, 16, 4), seed), device="cpu")  # load LAPACK before any timing
    for name, shape in shapes.items():
        tq, tk = (torch.from_numpy(w) for w in make_weights(shape, seed))
        for dtype in DTYPES:
            if (shape, dtype) not in cpu_ref:
                t0 = time.perf_counter()
                ref = qk_modes(tq, tk, dtype=dtype, device="cpu")
                cpu_ref[shape, dtype] = (time.perf_counter() - t0, ref)
            cpu_s, ref = cpu_ref[shape, dtype]
            times, modes = time_ours(tq, tk, device, repeats, dtype)
            check = compare_modes(modes, ref, dtype)
            dev_s = statistics.median(times)
            rows.append(
                {
                    "name": name,
                    "shape": list(shape),
                    "dtype": dtype,
                    "device_s": dev_s,
                    "device_all_s": times,
                    "cpu_s": cpu_s,
                    "cpu_over_device": cpu_s / dev_s,
                    "check": vars(check),
                }
            )
            print(
                f"  {name:<42} {dtype}  device {dev_s:8.4f} s  cpu {cpu_s:8.4f} s  {cpu_s / dev_s:7.1f}x  "
                f"max |ds|/s_max {check.max_s_rel_err:.1e}  max |d cos| {check.max_cos_abs_err:.1e} "
                f"({check.modes_compared} modes)  {'OK' if check.ok else 'FAIL'}"
            )
    return rows


def default_images() -> Path:
    """The 1000 ImageNet photographs of the test assets: ``$QKDISSECT_ASSETS``, else ``shared/assets`` beside or
    inside the checkout (the device machine gets only what travels with the checkout)."""
    repo = Path(__file__).resolve().parents[1]
    env = os.environ.get("QKDISSECT_ASSETS")
    for root in ([Path(env)] if env else []) + [repo.parent / "shared" / "assets", repo / "shared" / "assets"]:
        if (root / ASSET_IMAGES).is_dir():
            return root / ASSET_IMAGES
    return repo / "shared" / "assets" / ASSET_IMAGES


def check_inputs(model: torch.nn.Module, n: int, folder: Path) -> tuple[torch.Tensor, str]:
    """The first ``n`` photographs of ``folder`` (JPEG, PNG) through the model's timm data config, or seeded noise
    where there are fewer."""
    import timm.data

    cfg = timm.data.resolve_data_config({}, model=model)
    _, h, w = cfg["input_size"]
    listed = sorted(folder.iterdir()) if folder.is_dir() else []
    files = [f for f in listed if f.suffix.lower() in (".jpg", ".jpeg", ".png")][:n]
    if len(files) < n:
        gen = torch.Generator().manual_seed(0)
        return torch.randn(n, 3, h, w, generator=gen), f"seeded noise (fewer than {n} photographs in {folder})"
    pre = Preprocess(
        crop=(h, w),
        resize=math.floor(h / cfg["crop_pct"]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg["interpolation"],
        origin="timm data config",
    )
    return torch.stack([pre(f) for f in files]), f"{n} photographs: " + ", ".join(f.name for f in files)


def halving(fn: Callable[[int], dict[str, Any]], batch: int) -> dict[str, Any]:
    """``fn(batch)``, halving the batch on CUDA out-of-memory; the batches that ran out are recorded."""
    ran_out: list[int] = []
    while True:
        try:
            return {**fn(batch), "out_of_memory_at": ran_out}
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            ran_out.append(batch)
            batch //= 2
            torch.cuda.empty_cache()


def projection_stats(
    built: tuple[torch.nn.Module, Any, np.ndarray, np.ndarray], x: torch.Tensor, dev: torch.device
) -> tuple[np.ndarray, float]:
    """The image scores (image, layer, head, mode, sign) of ``x`` through the projection pass on ``dev``, and the
    seconds it took."""
    model, qk, u, v = built
    proj = Projector(qk, u, v, device=dev)
    t0 = time.perf_counter()
    scores = proj(model, x).scores().cpu().numpy()
    return scores, time.perf_counter() - t0


def check_model(name: str, arch: str, device: torch.device, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """(b) for one model: the CPU's and the device's scores of a few images, compared, then the device timing."""
    t0 = time.perf_counter()
    built = random_model(arch, torch.device("cpu"))
    build_s = time.perf_counter() - t0
    x, source = check_inputs(built[0], args.check_images, folder)
    ref, cpu_s = projection_stats(built, x, torch.device("cpu"))
    built[0].to(device)
    test, _ = projection_stats(built, x, device)
    check = compare_scores(test, ref)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timing = halving(lambda b: time_pass(name, arch, built, b, args.repeats, args.warmup, device), args.batch)
    if device.type == "cuda":
        timing["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    cpu_ips = args.check_images / cpu_s
    return {
        **timing,
        "model_build_s": build_s,
        "check_images": source,
        "cpu_check_images_per_s": cpu_ips,
        "device_over_cpu_projection": timing["projection_images_per_s"] / cpu_ips,
        "check": check,
    }


def check_projections(
    models: dict[str, str], device: torch.device, args: argparse.Namespace, folder: Path
) -> list[dict[str, Any]]:
    """(b): every model in turn (one on the device at a time)."""
    rows = []
    for name, arch in models.items():
        try:
            row = check_model(name, arch, device, args, folder)
        except Exception as e:  # one try on a lent GPU: keep what the other model and the modes measured
            traceback.print_exc()
            rows.append({"model": name, "arch": arch, "error": f"{type(e).__name__}: {e}", "check": {"ok": False}})
            continue
        rows.append(row)
        check = row["check"]
        print(
            f"  {name:<10} batch {row['batch']:>4}: bare {row['bare_images_per_s']:9.1f} img/s, projection "
            f"{row['projection_images_per_s']:9.1f} img/s ({row['ratio']:.2f}x bare); CPU "
            f"{row['cpu_check_images_per_s']:.2f} img/s on {args.check_images}; scores max err "
            f"{check['max_rel_err']:.1e} (tol {check['rtol']:g}), best image same on "
            f"{check['top1_same']}/{check['top1_compared']} clear modes  {'OK' if check['ok'] else 'FAIL'}"
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def describe_machine(device: torch.device) -> dict[str, Any]:
    import timm

    info: dict[str, Any] = {
        **machine_info(device),
        "timm": timm.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu_memory_gb=props.total_memory / 2**30, gpu_multiprocessors=props.multi_processor_count)
    return info


def output_path(out: Path | None, device: torch.device, tiny: bool, device_name: str) -> Path:
    if tiny:
        name = "results_check_cpu_tiny.json" if device.type == "cpu" else f"results_check_{slug(device_name)}_tiny.json"
    elif device.type == "cuda":
        name = f"results_gpu_{slug(device_name)}.json"
    else:
        name = f"results_check_cpu_{slug(device_name)}.json"
    if out is None:
        return Path(__file__).resolve().parent / name
    return out / name if out.is_dir() or out.suffix != ".json" else out


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Whole or not at all: a temporary file beside ``path``, renamed onto it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--device", default=None, help="auto (CUDA if available; the default), cuda or cpu")
    p.add_argument("--tiny", action="store_true", help="tiny shapes, ViT-Ti/16 and 2 images on the CPU (the test)")
    p.add_argument("--batch", type=int, default=None, help="projection batch (CUDA 256, CPU 8, tiny 4), halved on OOM")
    p.add_argument("--check-images", type=int, default=None, help="images compared with the CPU (4; tiny 2)")
    p.add_argument("--images", type=Path, default=None, help="folder of JPEG photographs (default: the assets')")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats after the warm-up (3; tiny 1)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="JSON file, or folder for it (default: benchmarks/)")
    args = p.parse_args(argv)
    if args.device is None:
        args.device = "cpu" if args.tiny else "auto"
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device here; --tiny runs on the CPU")
    cuda = str(resolve_device(args.device)).startswith("cuda")
    for key, full, tiny in (("batch", 256 if cuda else 8, 4), ("check_images", 4, 2), ("repeats", 3, 1)):
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else full)
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1, not {getattr(args, key)}")
    if args.check_images < 2:
        p.error("--check-images must be >= 2: the best image of a mode is compared")
    if args.images is not None and not args.images.is_dir():
        p.error(f"--images {args.images}: no such folder; give a folder of JPEG photographs, or leave it out")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = resolve_device(args.device)
    info = describe_machine(device)
    t_start = time.perf_counter()
    print(
        f"device {device} ({info['device_name']}), torch {info['torch']}, CUDA {info['cuda']}, timm {info['timm']}, "
        f"{info['cpu_count']} CPUs, torch threads {info['torch_num_threads']}"
    )
    shapes = TINY_SHAPES if args.tiny else PAPER_MODELS
    print(f"\n(a) modes, device vs CPU, median of {args.repeats} after 1 warm-up (CPU: one run):")
    modes = check_modes(shapes, device, args.repeats, args.seed)
    modes_wall = time.perf_counter() - t_start
    folder = args.images if args.images is not None else default_images()
    print(f"\n(b) projections at batch {args.batch} (random 224 px input), {args.check_images} images vs CPU:")
    projections = check_projections(TINY_MODELS if args.tiny else FULL_MODELS, device, args, folder)
    total = {dtype: sum(r["device_s"] for r in modes if r["dtype"] == dtype) for dtype in DTYPES}
    ok = all(r["check"]["ok"] for r in modes + projections)
    wall = time.perf_counter() - t_start
    out = {
        "machine": info,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "tolerances": {"modes": MODE_TOL, "score_rtol": SCORE_RTOL},
        "modes": modes,
        "modes_total_device_s": total,
        "projections": projections,
        "checks_ok": ok,
        "wall_s": wall,
        "modes_wall_s": modes_wall,
        "projections_wall_s": wall - modes_wall,
    }
    path = output_path(args.out, device, args.tiny, str(info["device_name"]))
    write_json(path, out)
    print(
        f"\n{len(shapes)} shapes on {device}: {total['float32']:.3f} s float32, {total['float64']:.3f} s float64. "
        f"Checks {'all OK' if ok else 'FAILED'}. Wall time {wall:.1f} s. Wrote {path}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
