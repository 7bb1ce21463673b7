"""Internet-scale planning measured on paper: what a projection pass over 14 million images (ImageNet-21k's size)
split into N shards needs, from runs that fit in minutes.

A tiny random ViT (32 px, 4 x 4 patches, width 64, 4 heads, 2 layers) projects ``synthetic:M`` images (generated
noise, no files; :func:`qkdissect.data.sources.image_source`) through the real pass, ``qkdissect project`` in a
child process, as one shard would:

1. **One shard, growing.** For each size M (``--sizes``) the pass runs once; the parent samples the child's RSS
   every 0.2 s. Reported: wall time, the pass's own time, images/s, peak RSS, and the RSS over time of the largest
   run. A line through (M, pass time) gives the time per image (linear: the residuals are small); the RSS slope
   after the model is loaded gives the bytes per image a shard holds in memory (ids, digests, the listing).
2. **Listing.** Every shard lists the whole set before it takes its share: the memory of the listing per image.
3. **Merge.** A set of ``--merge-images`` images is split into N shards (``--merge-shards``) and merged with
   :func:`qkdissect.passes.shards.merge_projections`; the time as a function of N and of the images (rows copied);
   rows of ViT-B/16 and ViT-H/14 size written and read back as a pass and the merge do (MB/s, stored size).
4. **Extrapolation** to 14 M images with N shards, for the tiny model (measured rates) and for ViT-B/16 and
   ViT-H/14: the per-image rows on disk (images x layers x heads x modes x 4 float32), and the compute from the
   CPU figures of ``results_projections_cpu_2core.json`` (measured) and a GPU throughput (assumed, named as such).

Run: ``.venv/bin/python benchmarks/bench_scale.py [--json results_scale_cpu_2core.json]``; ``--tiny`` runs small
sizes in seconds (``tests/integration/benchmarks/test_bench_scale.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
#: ImageNet-21k (winter 2021 release: 13.2 M; the fall 2011 one: 14.2 M): the size the issue names
TARGET_IMAGES = 14_000_000
TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "num_heads": 4, "depth": 2}
#: (layers, heads, modes per head = d_head) of the two models the README plans for
MODELS = {"ViT-B/16": (12, 12, 64), "ViT-H/14": (32, 16, 80)}
#: GPU throughput of the projection pass, images/s, ASSUMED (no GPU figure exists): ViT-B/16 at 17.6 GFLOP and
#: ViT-H/14 at 167 GFLOP per 224 px image, at ~40 % of an A100/H100's ~150 TFLOP/s of TF32, less 15 % for the
#: projection (the CPU ratio), rounded down
GPU_ASSUMED = {"ViT-B/16": 2500.0, "ViT-H/14": 250.0}
#: ViT-H/14 on 2 CPU cores: not measured; ViT-B/16's measured rate scaled by the FLOP ratio 17.6 / 167
FLOP_RATIO_H_OVER_B = 167.0 / 17.6


def tiny_model(folder: Path) -> str:
    """A tiny random timm ViT saved as safetensors; returns its spec."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TINY)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    return f"timm:vit_tiny_patch16_224@{path}?" + "&".join(f"{k}={v}" for k, v in TINY.items())


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_shard(spec: str, modes: Path, n: int, out: Path, batch: int, period: float = 0.2) -> dict[str, Any]:
    """``qkdissect project`` over ``synthetic:n`` in a child process, its RSS sampled every ``period`` s."""
    from qkdissect.stores import open_store

    cmd = [sys.executable, "-m", "qkdissect", "project", spec, "--modes", str(modes), "--images", f"synthetic:{n}",
           "-o", str(out), "--batch-size", str(batch), "--workers", "0", "--device", "cpu", "-q"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    series: list[tuple[float, float]] = []

    def sample() -> None:
        while child.poll() is None:
            rss = _rss_mb(child.pid)
            if rss is not None:
                series.append((round(time.perf_counter() - t0, 2), round(rss, 1)))
            time.sleep(period)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = child.communicate()
    wall = time.perf_counter() - t0
    sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f"qkdissect project failed: {err[-2000:]}")
    t = open_store(out).attrs["provenance"]["timings_s"]
    return {"images": n, "wall_s": round(wall, 3), "pass_s": t["pass"], "load_s": t["load"],
            "images_per_s": t["images_per_s"], "peak_rss_mb": max(r for _, r in series) if series else None,
            "rss_series": series}  # fmt: skip


def fit_line(x: list[float], y: list[float]) -> dict[str, float]:
    """Least squares y = a + b x, and the largest relative residual (one point: the line through 0)."""
    if len(x) == 1:
        return {"intercept": 0.0, "slope": y[0] / x[0], "max_rel_residual": 0.0}
    b, a = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    pred = a + b * np.asarray(x, float)
    return {"intercept": float(a), "slope": float(b),
            "max_rel_residual": float(np.max(np.abs(pred - y) / np.asarray(y, float)))}  # fmt: skip


def rss_growth(series: list[tuple[float, float]], images: int, pass_s: float, wall_s: float) -> dict[str, float]:
    """RSS growth over the pass (the samples of its last 80 %: the model is loaded by then), per image."""
    start = wall_s - pass_s * 0.8
    during = [(t, r) for t, r in series if t >= start]
    if len(during) < 3:
        return {"mb_over_pass": float("nan"), "bytes_per_image": float("nan")}
    t, r = np.array(during).T
    slope_mb_per_s = np.polyfit(t, r, 1)[0]
    per_image = slope_mb_per_s * 2**20 / (images / pass_s)
    return {"mb_over_pass": float(r.max() - r.min()), "bytes_per_image": float(per_image)}


def listing_bytes_per_image(n: int) -> float:
    """Memory of listing ``synthetic:n`` (a lower bound for a folder's listing: no paths), bytes per image."""
    import tracemalloc

    from qkdissect.data.sources import image_source

    tracemalloc.start()
    src = image_source(f"synthetic:{n}")
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(src) == n
    return size / n


def merge_costs(
    spec: str, modes: Path, images: int, shard_counts: list[int], batch: int, work: Path
) -> list[dict[str, Any]]:
    """Seconds to merge ``images`` images split into N shards, for each N."""
    from qkdissect.passes.projections import compute_projections
    from qkdissect.passes.shards import Shard, merge_projections, shard_paths

    rows = []
    for n in shard_counts:
        paths = shard_paths(work / f"n{n}_{images}", n)
        for k, p in enumerate(paths, start=1):
            compute_projections(spec, modes, f"synthetic:{images}", p, batch_size=batch, device="cpu", workers=0,
                                progress=False, shard=Shard(k, n))  # fmt: skip
        t0 = time.perf_counter()
        merged = merge_projections(paths, work / f"merged_n{n}_{images}.zarr")
        rows.append({"shards": n, "images": images, "merge_s": round(time.perf_counter() - t0, 3),
                     "valid": int(merged.valid.sum())})  # fmt: skip
    return rows


def row_copy(layers: int, heads: int, modes: int, images: int, work: Path) -> dict[str, float]:
    """Write ``images`` rows of a model's per-image statistics (random float32, the 4 stats side by side) as a pass
    does, read them back as the merge does: MB/s of each, and the stored size over the raw size."""
    import xarray as xr
    import zarr

    from qkdissect.stores.readwrite import StreamingStore

    shape = (layers, heads, 4 * modes)
    rows = np.random.default_rng(0).normal(size=(images, *shape)).astype(np.float32)
    path, chunk = work / f"rows_{layers}x{heads}x{modes}.zarr", 256
    t0 = time.perf_counter()
    with StreamingStore(path) as st:
        st.create("rows", rows.shape, ("image", "layer", "head", "mode"), (chunk, *shape), "float32")
        for a in range(0, images, chunk):
            st.write("rows", a, rows[a : a + chunk])
        st.finish(xr.Dataset(attrs={"qkdissect_schema": "bench/v1"}))
    write_s = time.perf_counter() - t0
    arr = zarr.open_group(path, mode="r")["rows"]
    t0 = time.perf_counter()
    total = sum(float(arr[a : a + chunk][0, 0, 0, 0]) for a in range(0, images, chunk))
    read_s = time.perf_counter() - t0
    stored = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    mb = rows.nbytes / 2**20
    assert np.isfinite(total)
    return {"write_mb_per_s": round(mb / write_s, 1), "read_mb_per_s": round(mb / read_s, 1),
            "copy_mb_per_s": round(mb / (write_s + read_s), 1),
            "stored_over_raw": round(stored / rows.nbytes, 3)}  # fmt: skip


def row_bytes(layers: int, heads: int, modes: int) -> int:
    """Bytes of one image's per-image rows: q_max, q_min, k_max, k_min float32 per (layer, head, mode)."""
    return layers * heads * modes * 4 * 4


def extrapolate(out: dict[str, Any], shard_counts: list[int]) -> dict[str, Any]:
    """14 M images with N shards: per shard images, time and memory (tiny model, measured); for ViT-B/16 and
    ViT-H/14 the disk of the per-image rows and the compute hours (CPU measured / GPU assumed)."""
    fit, growth = out["shard_fit"], out["rss"]
    merge = out["merge_fit"]
    base_rss = out["shards"][0]["peak_rss_mb"]
    listing_mb = out["listing_bytes_per_image"] * TARGET_IMAGES / 2**20
    per_n = []
    for n in shard_counts:
        m = TARGET_IMAGES / n
        per_n.append({
            "shards": n,
            "images_per_shard": int(m),
            "tiny_shard_hours": round((fit["intercept"] + fit["slope"] * m) / 3600, 3),
            "shard_rss_gb": round((base_rss + listing_mb + growth["bytes_per_image"] * m / 2**20) / 1024, 2),
            "tiny_merge_hours": round((merge["intercept"] + merge["per_shard_s"] * n
                                       + merge["per_image_s"] * TARGET_IMAGES) / 3600, 3),
        })  # fmt: skip
    cpu = {r["model"]: r["projection_images_per_s"] for r in out["cpu_projection_rates"]}
    cpu_h = {"ViT-B/16": cpu.get("ViT-B/16"), "ViT-H/14": cpu.get("ViT-B/16", 0) / FLOP_RATIO_H_OVER_B or None}
    models = {}
    for name, (layers, heads, modes) in MODELS.items():
        rb = row_bytes(layers, heads, modes)
        models[name] = {
            "layers_heads_modes": [layers, heads, modes],
            "row_bytes_per_image": rb,
            "rows_tb": round(rb * TARGET_IMAGES / 1e12, 2),
            "stored_tb": round(rb * TARGET_IMAGES * out["row_copy"][name]["stored_over_raw"] / 1e12, 2),
            "merge_copy_hours": round(rb * TARGET_IMAGES / (out["row_copy"][name]["copy_mb_per_s"] * 2**20) / 3600, 1),
            "cpu_2core_images_per_s": round(cpu_h[name], 3) if cpu_h[name] else None,
            "cpu_2core_hours": round(TARGET_IMAGES / cpu_h[name] / 3600) if cpu_h[name] else None,
            "cpu_figure": "measured" if name == "ViT-B/16" else "ViT-B/16 measured x FLOP ratio 17.6/167",
            "gpu_images_per_s_assumed": GPU_ASSUMED[name],
            "gpu_hours_assumed": round(TARGET_IMAGES / GPU_ASSUMED[name] / 3600, 1),
        }
    return {"images": TARGET_IMAGES, "per_shard_count": per_n, "models": models}


def run(
    sizes: list[int], merge_images: int, shard_counts: list[int], batch: int, plan: list[int], copy_images: int = 512
) -> dict[str, Any]:
    from qkdissect.passes.weights import compute_modes

    out: dict[str, Any] = {"benchmark": "scale", "model": f"tiny random ViT {TINY}", "batch_size": batch,
                           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        spec = tiny_model(work / "w")
        compute_modes(spec, work / "modes.zarr", device="cpu")
        out["shards"] = [run_shard(spec, work / "modes.zarr", n, work / f"shard_{n}.zarr", batch) for n in sizes]
        biggest = out["shards"][-1]
        out["shard_fit"] = fit_line([r["images"] for r in out["shards"]], [r["pass_s"] for r in out["shards"]])
        out["rss"] = rss_growth(biggest["rss_series"], biggest["images"], biggest["pass_s"], biggest["wall_s"])
        for r in out["shards"][:-1]:
            r.pop("rss_series")
        biggest["rss_series"] = biggest["rss_series"][:: max(1, len(biggest["rss_series"]) // 100)]  # ~100 kept
        out["listing_bytes_per_image"] = round(listing_bytes_per_image(max(sizes) * 4), 1)
        out["merge"] = merge_costs(spec, work / "modes.zarr", merge_images, shard_counts, batch, work)
        big = merge_costs(spec, work / "modes.zarr", merge_images * 4, [shard_counts[0]], batch, work)
        out["merge"] += big
        out["row_copy"] = {name: row_copy(*lhm, copy_images, work) for name, lhm in MODELS.items()}
    out["merge_fit"] = merge_fit(out["merge"], row_bytes(TINY["depth"], TINY["num_heads"], 16))
    out["cpu_projection_rates"] = json.loads((HERE / "results_projections_cpu_2core.json").read_text())["rows"]
    out["extrapolation"] = extrapolate(out, plan)
    return out


def merge_fit(rows: list[dict[str, Any]], tiny_row_bytes: int) -> dict[str, float]:
    """merge_s = c + per_shard_s N (at the same images) + per_image_s images (from the run with 4x the images)."""
    same = [r for r in rows if r["images"] == rows[0]["images"]]
    line = fit_line([r["shards"] for r in same], [r["merge_s"] for r in same])
    more = rows[-1]
    ref = next(r for r in same if r["shards"] == more["shards"])
    per_image = max(0.0, (more["merge_s"] - ref["merge_s"]) / (more["images"] - ref["images"]))
    return {"intercept": line["intercept"], "per_shard_s": line["slope"], "per_image_s": per_image,
            "copy_bytes_per_s": tiny_row_bytes / per_image if per_image > 0 else float("inf")}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4000, 16000, 48000], help="images of the shard runs")
    ap.add_argument("--merge-images", type=int, default=2048)
    ap.add_argument("--merge-shards", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--plan", type=int, nargs="+", default=[16, 64, 256, 1024], help="shard counts to plan for")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--copy-images", type=int, default=512, help="rows of ViT-B/16 and ViT-H/14 size copied")
    ap.add_argument("--tiny", action="store_true", help="small sizes, seconds (the test)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.tiny:
        args.sizes, args.merge_images, args.merge_shards, args.copy_images = [64, 128, 256], 64, [2, 4], 16
    out = run(args.sizes, args.merge_images, args.merge_shards, args.batch_size, args.plan, args.copy_images)
    report(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def report(out: dict[str, Any]) -> None:
    for r in out["shards"]:
        print(f"shard of {r['images']:>7} images: pass {r['pass_s']:7.2f} s ({r['images_per_s']} img/s), "
              f"wall {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mb']} MB")  # fmt: skip
    f, g = out["shard_fit"], out["rss"]
    print(f"time per image {f['slope'] * 1e3:.3f} ms (largest residual {f['max_rel_residual']:.1%}); RSS grows "
          f"{g['mb_over_pass']:.1f} MB over the largest pass = {g['bytes_per_image']:.0f} B/image; listing "
          f"{out['listing_bytes_per_image']:.0f} B/image")  # fmt: skip
    for r in out["merge"]:
        print(f"merge {r['shards']:>3} shards of {r['images']} images: {r['merge_s']:.2f} s")
    m = out["merge_fit"]
    print(f"merge = {m['intercept']:.2f} s + {m['per_shard_s']:.3f} s/shard + {m['per_image_s'] * 1e6:.1f} us/image")
    for r in out["extrapolation"]["per_shard_count"]:
        print(f"14M / {r['shards']:>4} shards: {r['images_per_shard']:>8} images/shard, tiny "
              f"{r['tiny_shard_hours']} h, RSS {r['shard_rss_gb']} GB, merge {r['tiny_merge_hours']} h")  # fmt: skip
    for name, r in out["extrapolation"]["models"].items():
        print(f"{name}: rows {r['row_bytes_per_image'] / 1024:.0f} KiB/image = {r['rows_tb']} TB ({r['stored_tb']} TB "
              f"stored), merge copy {r['merge_copy_hours']} h; CPU 2 cores {r['cpu_2core_hours']} h "
              f"({r['cpu_figure']}); GPU {r['gpu_hours_assumed']} h (assumed)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
