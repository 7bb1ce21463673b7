"""The paper's own run, rehearsed offline: ``config/paper.yaml``, unchanged, through Snakemake to every figure, on
stand-ins of everything it needs that cannot be downloaded here.

The world it builds under ``OUT`` (once; a second run reuses what is there):

- ``hf/hub``: a Hugging Face hub cache (``HF_HOME=OUT/hf``) with the paper's 13 hub repositories as the hub holds
  them (their classes, configurations, processor files and weight formats; random tensors:
  :mod:`rehearsal.hub`), and the ``ILSVRC/imagenet-1k`` validation split as parquet files, made of the 1000 real
  ImageNet photographs of the offline assets (:mod:`rehearsal.datasets`);
- ``data/weights``: the SimMIM and I-JEPA checkpoints in their upstream layouts (``QKDISSECT_DATA=OUT/data``);
- ``O3``, ``ADEChallengeData2016``: the O3 and ADE20K layouts from real photographs with masks;
- ``overlay.yaml``: the only lines laid over ``config/paper.yaml``: where O3 and ADE20K are; a shallow rehearsal
  also says how many of their images to use and moves the paper's hand-picked modes into its 2 blocks.

Then it runs ``snakemake --configfile config/paper.yaml OUT/overlay.yaml`` in ``OUT/run`` with
``HF_HUB_OFFLINE=1``, the report, and writes ``OUT/cost.json`` and ``OUT/cost.md``: every job's time and peak
memory (Snakemake's benchmark files) and, from the passes' own throughput, what the real run would cost.

    python -m rehearsal.run OUT                 # full: the real architectures (every block), real dataset counts
    python -m rehearsal.run OUT --shallow       # 2 blocks per model, a few images per set (what `make test` runs)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .datasets import COUNTS, ade20k_layout, imagenet_hub_cache, o3_layout
from .hub import build_hub_cache, build_local_checkpoints

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "paper.yaml"


@dataclass(frozen=True)
class Scale:
    """How big a rehearsal is: blocks per model (None: every block) and images per set."""

    depth: int | None
    imagenet: int
    o3: int
    ade20k: int

    @property
    def limits(self) -> bool:
        """Fewer O3 / ADE20K images than the real datasets hold: the overlay then sets their limit."""
        return self.o3 < COUNTS["o3"] or self.ade20k < COUNTS["ade20k"]


SHALLOW = Scale(depth=2, imagenet=12, o3=4, ade20k=4)
FULL = Scale(depth=None, imagenet=1000, o3=COUNTS["o3"], ade20k=COUNTS["ade20k"])


def paper_classes(config: Path = PAPER) -> list[str]:
    """The wnids of the ImageNet classes the config picks images from (``class:`` references), so that a small
    rehearsal ImageNet holds them."""
    from qkdissect.data.labels import imagenet_classes, parse_class_ref

    def strings(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [s for v in node.values() for s in strings(v)]
        if isinstance(node, list):
            return [s for v in node for s in strings(v)]
        return [node] if isinstance(node, str) else []

    refs = sorted({s for s in strings(yaml.safe_load(config.read_text())) if s.startswith("class:")})
    return list(dict.fromkeys(imagenet_classes().wnids[parse_class_ref(r)[0]] for r in refs))


def shallow_figures(figures: dict[str, Any], depth: int) -> dict[str, Any]:
    """The paper's hand-picked modes and gallery layer ranges moved into ``depth`` blocks (layer l -> min(l, depth
    - 1)): the one change a shallow rehearsal makes to the figures, since L8 H7 M2 does not exist in 2 blocks."""

    def row(r: dict[str, Any]) -> dict[str, Any]:
        out = dict(r)
        if isinstance(r.get("modes"), list):
            out["modes"] = [[min(m[0], depth - 1), *m[1:]] for m in r["modes"]]
        if "layers" in r:
            out["layers"] = [min(x, depth - 1) for x in r["layers"]]
        return out

    return {
        "fig1": [row(r) for r in figures["fig1"]],
        "fig4": [row(r) for r in figures["fig4"]],
        "galleries": {name: [row(r) for r in rows] for name, rows in figures["galleries"].items()},
    }


def build_world(out: Path, scale: Scale) -> dict[str, str]:
    """Everything the paper's config reads, under ``out`` (see the module docstring); returns the environment."""
    out.mkdir(parents=True, exist_ok=True)
    hf_home, data = out / "hf", out / "data"
    build_hub_cache(hf_home, scale.depth)
    build_local_checkpoints(data / "weights", scale.depth)
    imagenet_hub_cache(hf_home / "hub", scale.imagenet, first=paper_classes())
    o3 = o3_layout(out / "O3", scale.o3)
    ade = ade20k_layout(out / "ADEChallengeData2016", scale.ade20k)
    limit = lambda n: {"limit": n} if scale.limits else {}  # noqa: E731
    overlay = {
        "mask_datasets": {"o3": {"source": f"o3:{o3}", **limit(scale.o3)},
                          "ade20k": {"source": f"ade20k:{ade}", **limit(scale.ade20k)}},
    }  # fmt: skip
    if scale.depth is not None:
        overlay["figures"] = shallow_figures(yaml.safe_load(PAPER.read_text())["figures"], scale.depth)
    (out / "overlay.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    return {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "QKDISSECT_DATA": str(data)}


def snakemake(out: Path, env: dict[str, str], *args: str, cores: int = 2) -> subprocess.CompletedProcess[str]:
    """Snakemake on config/paper.yaml and the overlay, in ``out/run``, with the world's environment."""
    venv_bin = str(Path(sys.executable).parent)
    full_env = {**os.environ, **env, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(out / "run"),
           "--configfile", str(PAPER), str(out / "overlay.yaml"), "--cores", str(cores), *args]  # fmt: skip
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True)


# ----------------------------------------------------------------------------------------- cost
def job_table(results: Path) -> list[dict[str, Any]]:
    """One row per job: its rule, its wildcards (the benchmark file's path), seconds, peak RSS (MB), CPU seconds."""
    rows = []
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        with tsv.open(newline="") as f:
            b = next(csv.DictReader(f, delimiter="\t"))
        rel = tsv.relative_to(results / "benchmarks").with_suffix("")
        rows.append({"rule": rel.parts[0], "job": "/".join(rel.parts[1:]), "s": float(b["s"]),
                     "max_rss_mb": _num(b["max_rss"]), "cpu_s": _num(b["cpu_time"])})  # fmt: skip
    return rows


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def pass_rates(results: Path) -> dict[str, dict[str, Any]]:
    """Per image pass store (projections, preference, same-object): model, items, seconds of the pass itself."""
    from qkdissect.stores import open_store

    out: dict[str, dict[str, Any]] = {}
    for kind in ("projections", "preference", "same_object"):
        for store in sorted((results / kind).glob("*/*.zarr")):
            attrs = open_store(store).attrs
            prov = attrs.get("provenance", {})
            timings = prov.get("timings_s") or {}
            n = (attrs.get("images") or attrs.get("dataset") or {}).get("count")
            out[f"{kind}/{store.parent.name}"] = {"kind": kind, "model": attrs.get("model_id"), "items": n,
                                                  "started": prov.get("started"), "finished": prov.get("finished"),
                                                  "pass_s": timings.get("pass")}  # fmt: skip
    return out


def estimate(jobs: list[dict[str, Any]], scale: Scale) -> dict[str, Any]:
    """What the real run costs, from this one: each image pass's seconds minus its fixed cost (a job's time at
    zero images is taken as the model's modes job: loading and imports), per image, times the real counts."""
    modes = {r["job"]: r["s"] for r in jobs if r["rule"] == "modes"}
    real = {"project": COUNTS["imagenet"], "preference": COUNTS["o3"], "same_object": COUNTS["ade20k"]}
    here = {"project": scale.imagenet, "preference": scale.o3, "same_object": scale.ade20k}
    per_model: dict[str, dict[str, float]] = {}
    for r in jobs:
        if r["rule"] in real:
            model = r["job"].split("/")[0]
            fixed = modes.get(model, 0.0)
            per_image = max(r["s"] - fixed, 0.0) / max(here[r["rule"]], 1)
            per_model.setdefault(model, {})[r["rule"]] = fixed + per_image * real[r["rule"]]
    other = sum(r["s"] for r in jobs if r["rule"] not in real)
    total = sum(sum(v.values()) for v in per_model.values()) + other
    return {"per_model_s": per_model, "other_jobs_s": other, "total_cpu_job_s": total, "counts": real}


def write_cost(out: Path, scale: Scale, wall_s: float) -> dict[str, Any]:
    results = out / "run" / "results"
    jobs = job_table(results)
    cost = {"scale": vars(scale), "wall_s": round(wall_s, 1), "jobs": jobs, "estimate": estimate(jobs, scale)}
    (out / "cost.json").write_text(json.dumps(cost, indent=1) + "\n")
    (out / "cost.md").write_text(cost_markdown(cost))
    return cost


def cost_markdown(cost: dict[str, Any]) -> str:
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for r in cost["jobs"]:
        by_rule.setdefault(r["rule"], []).append(r)
    lines = ["| rule | jobs | total s | slowest job | its s | peak RSS MB |", "| --- | --- | --- | --- | --- | --- |"]
    for rule, rows in sorted(by_rule.items(), key=lambda kv: -sum(r["s"] for r in kv[1])):
        worst = max(rows, key=lambda r: r["s"])
        rss = max((r["max_rss_mb"] or 0.0) for r in rows)
        lines.append(f"| {rule} | {len(rows)} | {sum(r['s'] for r in rows):.0f} | {worst['job']} | "
                     f"{worst['s']:.0f} | {rss:.0f} |")  # fmt: skip
    est = cost["estimate"]
    lines += ["", f"Wall time here: {cost['wall_s']:.0f} s. Estimated job time of the real run (one job at a time, "
              f"{est['counts']}): {est['total_cpu_job_s'] / 3600:.1f} h.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rehearsal.run", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="where the stand-ins, the run and the cost table go")
    p.add_argument("--shallow", action="store_true", help="2 blocks per model, a few images per set")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    p.add_argument("--imagenet", type=int, help="ImageNet images (default: shallow 12, full 1000)")
    p.add_argument("--o3", type=int, help="O3 images (default: shallow 4, full 2001)")
    p.add_argument("--ade20k", type=int, help="ADE20K images (default: shallow 4, full 2000)")
    args, extra = p.parse_known_args(argv)
    base = SHALLOW if args.shallow else FULL
    scale = Scale(base.depth, args.imagenet or base.imagenet, args.o3 or base.o3, args.ade20k or base.ade20k)
    t0 = time.perf_counter()
    env = build_world(args.out.resolve(), scale)
    print(f"stand-ins built in {time.perf_counter() - t0:.0f} s under {args.out}", flush=True)
    t1 = time.perf_counter()
    if args.shallow:  # small jobs, mostly imports and loading: one thread each, as many at once as there are cores
        extra = ["--max-threads", "1", *extra]
    r = snakemake(args.out.resolve(), env, *extra, cores=args.cores)
    wall = time.perf_counter() - t1
    (args.out / "snakemake.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        print(r.stderr[-4000:], file=sys.stderr)
        print(f"the rehearsal failed after {wall:.0f} s; the log: {args.out / 'snakemake.log'}", file=sys.stderr)
        return 1
    snakemake(args.out.resolve(), env, "--report", str(args.out / "run" / "results" / "report.html"))
    cost = write_cost(args.out, scale, wall)
    print((args.out / "cost.md").read_text())
    print(f"{len(cost['jobs'])} jobs in {wall:.0f} s; figures in {args.out / 'run/results/figures'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
