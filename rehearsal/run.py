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

``--config`` rehearses another configuration of the paper's models the same way, e.g. ``config/paper-weights.yaml``
(Fig. 3, S1, S2, S3 and claims 1-4 from the weights alone): only what it reads is built (no dataset for a
configuration without image sets or mask datasets).

    python -m rehearsal.run OUT                 # full: the real architectures (every block), real dataset counts
    python -m rehearsal.run OUT --shallow       # 2 blocks per model, a few images per set (make test-rehearsal)
    python -m rehearsal.run OUT --shallow --config config/paper-weights.yaml     # the weights-only figures
    python -m rehearsal.run OUT --shallow --stand-ins DIR   # the stand-ins of python -m rehearsal.hub, linked
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
from .hub import build_hub_cache, build_local_checkpoints, link_stand_ins
from .hub_repos import HUB_REPOS

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
    - 1)): the one change a shallow rehearsal makes to the figures, since L8 H7 M2 does not exist in 2 blocks.
    Only the figures the config has (none for a configuration without image figures)."""

    def row(r: dict[str, Any]) -> dict[str, Any]:
        out = dict(r)
        if isinstance(r.get("modes"), list):
            out["modes"] = [[min(m[0], depth - 1), *m[1:]] for m in r["modes"]]
        if "layers" in r:
            out["layers"] = [min(x, depth - 1) for x in r["layers"]]
        return out

    out: dict[str, Any] = {key: [row(r) for r in figures[key]] for key in ("fig1", "fig4") if figures.get(key)}
    if figures.get("galleries"):
        out["galleries"] = {name: [row(r) for r in rows] for name, rows in figures["galleries"].items()}
    return out


def _sources(config: dict[str, Any], section: str) -> set[str]:
    """The kinds of source (``imagenet-hf``, ``o3``, ...) of a config's image sets or mask datasets."""
    return {str(entry["source"]).split(":", 1)[0] for entry in (config.get(section) or {}).values()}


def build_world(out: Path, scale: Scale, config: Path = PAPER, stand_ins: Path | None = None) -> dict[str, str]:
    """Everything ``config`` (the paper's, by default) reads, under ``out`` (see the module docstring): the stand-ins
    of its hub models and the local checkpoints (hard-linked from ``stand_ins`` where given:
    :func:`~rehearsal.hub.link_stand_ins`); the ImageNet hub cache, O3 and ADE20K only where it reads them. Returns
    the environment."""
    out.mkdir(parents=True, exist_ok=True)
    hf_home, data = out / "hf", out / "data"
    cfg = yaml.safe_load(config.read_text())
    repos = [r.repo_id for r in HUB_REPOS.values() if r.key in cfg["models"]]
    if stand_ins is not None:
        link_stand_ins(stand_ins, hf_home, data / "weights", scale.depth, repos)
    else:
        build_hub_cache(hf_home, scale.depth, repos)
        build_local_checkpoints(data / "weights", scale.depth)
    if "imagenet-hf" in _sources(cfg, "images"):
        imagenet_hub_cache(hf_home / "hub", scale.imagenet, first=paper_classes(config))
    limit = lambda n: {"limit": n} if scale.limits else {}  # noqa: E731
    overlay: dict[str, Any] = {}
    masks = _sources(cfg, "mask_datasets")
    if "o3" in masks:
        o3 = o3_layout(out / "O3", scale.o3)
        overlay.setdefault("mask_datasets", {})["o3"] = {"source": f"o3:{o3}", **limit(scale.o3)}
    if "ade20k" in masks:
        ade = ade20k_layout(out / "ADEChallengeData2016", scale.ade20k)
        overlay.setdefault("mask_datasets", {})["ade20k"] = {"source": f"ade20k:{ade}", **limit(scale.ade20k)}
    if scale.depth is not None and (figures := shallow_figures(cfg.get("figures") or {}, scale.depth)):
        overlay["figures"] = figures
    (out / "overlay.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    return {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "QKDISSECT_DATA": str(data)}


def snakemake(
    out: Path, env: dict[str, str], *args: str, cores: int = 2, config: Path = PAPER
) -> subprocess.CompletedProcess[str]:
    """Snakemake on ``config`` (config/paper.yaml) and the overlay, in ``out/run``, with the world's environment."""
    venv_bin = str(Path(sys.executable).parent)
    full_env = {**os.environ, **env, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    overlay = [str(out / "overlay.yaml")] if yaml.safe_load((out / "overlay.yaml").read_text()) else []
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(out / "run"),
           "--configfile", str(config), *overlay, "--cores", str(cores), *args]  # fmt: skip
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


#: the image passes: rule (its benchmark folder) -> (store folder, images in the paper's run)
PASSES = {
    "project": ("projections", COUNTS["imagenet"]),
    "preference": ("preference", COUNTS["o3"]),
    "same_object": ("same_object", COUNTS["ade20k"]),
}


def _seconds(start: str | None, end: str | None) -> float | None:
    from datetime import datetime

    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def pass_rates(results: Path) -> dict[str, dict[str, dict[str, float]]]:
    """model -> rule -> {items, per_image s}: each image pass's seconds per image, from its store's own record
    (the projection pass times itself; the others: started to finished, less the model's load time)."""
    from qkdissect.stores import open_store

    load: dict[str, float] = {}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for rule, (folder, _) in PASSES.items():
        for store in sorted((results / folder).glob("*/*.zarr")):
            attrs = open_store(store).attrs
            prov, model = attrs.get("provenance", {}), str(attrs.get("model_id"))
            timings = prov.get("timings_s") or {}
            n = int(((attrs.get("images") or attrs.get("dataset") or {}).get("count")) or 0)
            if rule == "project":
                load[model] = float(timings.get("load") or 0.0)
                seconds = float(timings.get("pass") or 0.0)
            else:
                seconds = max((_seconds(prov.get("started"), prov.get("finished")) or 0.0) - load.get(model, 0.0), 0.0)
            out.setdefault(model, {})[rule] = {"items": n, "per_image": seconds / max(n, 1)}
    return out


def estimate(jobs: list[dict[str, Any]], rates: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """What the paper's run costs, one job at a time on this machine: every job as it ran here, each image pass
    with the images it did not see here added at its own rate (50,000 ImageNet, 2001 O3, 2000 ADE20K images)."""
    per_model: dict[str, float] = {}
    total = 0.0
    for r in jobs:
        model = r["job"].split("/")[0]
        seconds = r["s"]
        if r["rule"] in PASSES and model in rates and r["rule"] in rates[model]:
            rate = rates[model][r["rule"]]
            seconds += rate["per_image"] * max(PASSES[r["rule"]][1] - rate["items"], 0)
        if r["rule"] in (*PASSES, "weights", "modes", "scores"):
            per_model[model] = per_model.get(model, 0.0) + seconds
        total += seconds
    counts = {rule: n for rule, (_, n) in PASSES.items()}
    return {"per_model_s": per_model, "total_job_s": total, "counts": counts, "rates": rates}


def write_cost(out: Path, scale: Scale, wall_s: float) -> dict[str, Any]:
    results = out / "run" / "results"
    jobs = job_table(results)
    cost = {"scale": vars(scale), "wall_s": round(wall_s, 1), "jobs": jobs,
            "estimate": estimate(jobs, pass_rates(results))}  # fmt: skip
    (out / "cost.json").write_text(json.dumps(cost, indent=1) + "\n")
    (out / "cost.md").write_text(cost_markdown(cost))
    return cost


def weights_only_table(cost: dict[str, Any]) -> list[str]:
    """A run without image passes (config/paper-weights.yaml): per model its weights, modes and scores jobs and
    peak memory; and the wall and job time, which are what the run costs."""
    est = cost["estimate"]
    lines = [
        "",
        "| model | weights job s | modes job s | scores job s | peak RSS GB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for model in sorted(est["per_model_s"], key=lambda m: est["per_model_s"][m]):
        jobs = {r["rule"]: r for r in cost["jobs"] if r["job"] == model}
        cells = " | ".join(f"{jobs[k]['s']:.0f}" if k in jobs else "-" for k in ("weights", "modes", "scores"))
        rss = max((r["max_rss_mb"] or 0.0) for r in jobs.values()) / 1024
        lines.append(f"| {model} | {cells} | {rss:.1f} |")
    cpu = sum(r["cpu_s"] or 0.0 for r in cost["jobs"])
    lines += ["", f"Wall time here: {cost['wall_s']:.0f} s for {len(cost['jobs'])} jobs ({est['total_job_s']:.0f} s "
              f"of job time, {cpu:.0f} s of CPU time); no image pass.", ""]  # fmt: skip
    return lines


def cost_markdown(cost: dict[str, Any]) -> str:
    """Two tables: per rule (this run's jobs), per model (load, seconds per image of each pass, peak memory, the
    paper's run); and the total."""
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
    if not any(r["rule"] in PASSES for r in cost["jobs"]):  # the weights alone: the run itself is the cost
        return "\n".join(lines + weights_only_table(cost))
    lines += ["", "| model | modes job s | projection s/image | preference s/image | same-object s/image | "
              "peak RSS GB | the paper's run, h |", "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for model, seconds in sorted(est["per_model_s"].items(), key=lambda kv: kv[1]):
        rates = est["rates"].get(model, {})
        modes = next((r["s"] for r in cost["jobs"] if r["rule"] == "modes" and r["job"] == model), float("nan"))
        rss = max((r["max_rss_mb"] or 0.0) for r in cost["jobs"] if r["job"].split("/")[0] == model) / 1024
        cells = " | ".join(f"{rates[r]['per_image']:.2f}" if r in rates else "-" for r in PASSES)
        lines.append(f"| {model} | {modes:.0f} | {cells} | {rss:.1f} | {seconds / 3600:.1f} |")
    lines += ["", f"Wall time here: {cost['wall_s']:.0f} s. The paper's run ({est['counts']} images), one job at a "
              f"time on this machine: {est['total_job_s'] / 3600:.1f} h of jobs.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rehearsal.run", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="where the stand-ins, the run and the cost table go")
    p.add_argument("--shallow", action="store_true", help="2 blocks per model, a few images per set")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    p.add_argument("--imagenet", type=int, help="ImageNet images (default: shallow 12, full 1000)")
    p.add_argument("--o3", type=int, help="O3 images (default: shallow 4, full 2001)")
    p.add_argument("--ade20k", type=int, help="ADE20K images (default: shallow 4, full 2000)")
    p.add_argument("--cost-only", action="store_true", help="only (re)write the cost table of a finished run")
    p.add_argument(
        "--stand-ins",
        type=Path,
        help="hard-link the hub repositories and checkpoints from this folder instead of building them (made by "
        "python -m rehearsal.hub --hf-home DIR/hf --data DIR/data at the same depth)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=PAPER,
        help="the configuration to rehearse (default config/paper.yaml; e.g. config/paper-weights.yaml)",
    )
    args, extra = p.parse_known_args(argv)
    base = SHALLOW if args.shallow else FULL
    scale = Scale(base.depth, args.imagenet or base.imagenet, args.o3 or base.o3, args.ade20k or base.ade20k)
    if args.cost_only:
        previous = json.loads((args.out / "cost.json").read_text())
        print(cost_markdown(write_cost(args.out, scale, previous["wall_s"])))
        return 0
    t0 = time.perf_counter()
    config = args.config.resolve()
    env = build_world(args.out.resolve(), scale, config, args.stand_ins.resolve() if args.stand_ins else None)
    print(f"stand-ins built in {time.perf_counter() - t0:.0f} s under {args.out}", flush=True)
    t1 = time.perf_counter()
    if args.shallow:  # small jobs, mostly imports and loading: one thread each, as many at once as there are cores
        extra = ["--max-threads", "1", *extra]
    r = snakemake(args.out.resolve(), env, *extra, cores=args.cores, config=config)
    wall = time.perf_counter() - t1
    (args.out / "snakemake.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        print(r.stderr[-4000:], file=sys.stderr)
        print(f"the rehearsal failed after {wall:.0f} s; the log: {args.out / 'snakemake.log'}", file=sys.stderr)
        return 1
    snakemake(args.out.resolve(), env, "--report", str(args.out / "run" / "results" / "report.html"), config=config)
    cost = write_cost(args.out, scale, wall)
    print((args.out / "cost.md").read_text())
    print(f"{len(cost['jobs'])} jobs in {wall:.0f} s; figures in {args.out / 'run/results/figures'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
