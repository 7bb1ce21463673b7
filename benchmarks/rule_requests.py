"""The jobs the workflow plans, and the request each `python -m qkdissect` job's command makes: for restructurings of
the rules that must not change what a job does.

    python benchmarks/rule_requests.py save BEFORE.json      # on the code before the change
    python benchmarks/rule_requests.py compare BEFORE.json   # after: exit status 1 when any job differs

Each shipped config (config/config.yaml, paper.yaml, modern.yaml, beyond.yaml), and the offline default with the
VARIANTS below laid over it (every switch turned, shards; --configs to choose), is planned with
`snakemake -n -p` in an empty scratch folder. A job is its rule, inputs, outputs, log, benchmark, wildcards,
resources and threads, and its shell command: a `python -m qkdissect COMMAND ...` command is parsed with the command
line's parser, and a pass command is turned into the request it runs (qkdissect.cli.request_of), so the order of
the flags does not matter and their values do; its environment (the config sections it records, compared as a set:
the provenance records them as a mapping; its threads) and its redirections are compared as they are. Any other
command (papermill) is compared as printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("config", "paper", "modern", "beyond", "variants")
#: "variants": the offline default with every switch turned, the options it leaves unset set, and shards
VARIANTS = {
    "projections": {"shards": 2, "workers": 2, "top_k": 5, "batch_size": 3, "max_tokens": 64},
    "mask_datasets": {"synthetic": {"source": "synthetic:32", "shards": 2, "limit": 8}},
    "analysis": {"released_code": True, "null_rtol": 0.0, "dtype": "float32", "device": "cpu"},
    "ablation": {"mean": True, "attention_only": False, "select": ["1,0,0", "2,1,0"], "limit": None},
    "rotary": {"content_core": "mean", "distance_bin": 2.5},
    "figures": {"fig2": {"datasets": ["synthetic"], "models": "all", "example": 3}},
}
#: the job lines of a dry run that say what the job is (jobid and reason say why and in which order)
FIELDS = ("input", "output", "log", "benchmark", "wildcards", "resources", "threads")


def plan(config: str, scratch: Path) -> str:
    """What `snakemake -n -p` prints for a shipped config, planned in an empty folder."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    workdir = scratch / config
    workdir.mkdir(parents=True)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    files = [str(REPO / "config" / f"{config}.yaml")]
    if config == "variants":
        files = [str(REPO / "config" / "config.yaml"), str(workdir / "variants.yaml")]
        (workdir / "variants.yaml").write_text(json.dumps(VARIANTS))
    cmd += ["--configfile", *files, "-n", "-p"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"snakemake -n on config/{config}.yaml failed:\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def jobs(dry_run: str) -> list[dict[str, Any]]:
    """Every job of a dry run's output: its rule, its FIELDS and its shell command."""
    out: list[dict[str, Any]] = []
    for line in dry_run.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            out.append({"rule": line.split(" ", 1)[1][:-1]})
        elif out and line.startswith("    ") and ": " in line:
            key, _, value = line.strip().partition(": ")
            if key in FIELDS:
                out[-1][key] = value
        elif out and line.startswith("Shell command: "):
            out[-1]["shell"] = command(line.removeprefix("Shell command: "))
    for job in out:
        resources = [r for r in job.get("resources", "").split(", ") if r and not r.startswith("tmpdir=")]
        job["resources"] = ", ".join(sorted(resources))
    return out


def command(shell: str) -> Any:
    """A `python -m qkdissect ...` command as its environment, its parsed arguments and its redirections; another
    command as printed."""
    words = shlex.split(shell)
    if "qkdissect" not in words or words[words.index("qkdissect") - 1] != "-m":
        return shell
    at = words.index("qkdissect")
    env = [w for w in words[: at - 2] if not w.startswith("PYTHONPATH=")]  # the checkout's path differs
    end = next((i for i, w in enumerate(words) if w == ">"), len(words))
    return {"env": env, "request": parsed(words[at + 1 : end]), "redirect": words[end:]}


def parsed(args: list[str]) -> str:
    """The request a pass command makes (each model's, for `modes`), or the arguments of another command."""
    from qkdissect.cli import PASSES, build_parser, request_of
    from qkdissect.requests import ModesRequest

    ns = build_parser().parse_args(args)
    if ns.command == "modes":
        return repr([request_of(ModesRequest, ns, model=m, output=Path(ns.output)) for m in ns.model])
    if ns.command in PASSES:
        return repr(request_of(PASSES[ns.command][0], ns))
    return repr(sorted((k, v) for k, v in vars(ns).items() if k != "func"))


def snapshot(configs: list[str]) -> dict[str, list[dict[str, Any]]]:
    with tempfile.TemporaryDirectory(prefix="rule-requests-") as scratch:
        return {c: jobs(plan(c, Path(scratch))) for c in configs}


def key(job: dict[str, Any]) -> str:
    return f"{job['rule']} -> {job.get('output', '')}"


def normalised(job: dict[str, Any]) -> dict[str, Any]:
    """The job with the config sections its command records as a sorted list (the provenance's mapping)."""
    shell = job.get("shell")
    if not isinstance(shell, dict):
        return job
    env = []
    for word in shell["env"]:
        name, _, value = word.partition("=")
        env.append(f"{name}={json.dumps(sorted(json.loads(value)))}" if name == "QKDISSECT_CONFIG_KEYS" else word)
    return {**job, "shell": {**shell, "env": env}}


def compare(before: dict[str, list[dict[str, Any]]], after: dict[str, list[dict[str, Any]]]) -> int:
    """Prints the jobs that differ and a line per config; the number of differences."""
    differences = 0
    for config, new_jobs in after.items():
        old = {key(j): normalised(j) for j in before.get(config, [])}
        new = {key(j): normalised(j) for j in new_jobs}
        for k in sorted(old.keys() | new.keys()):
            if old.get(k) != new.get(k):
                differences += 1
                print(f"config/{config}.yaml: {k}\n  before: {old.get(k)}\n  after:  {new.get(k)}")
        commands = sum(isinstance(j.get("shell"), dict) for j in old.values())
        print(f"config/{config}.yaml: {len(old)} jobs before, {len(new)} after ({commands} qkdissect commands)")
    return differences


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("save", "compare"))
    p.add_argument("snapshot", type=Path, help="the JSON file of the jobs before")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), help="shipped configs, by name (config: default)")
    args = p.parse_args(argv)
    now = snapshot(args.configs)
    if args.action == "save":
        args.snapshot.write_text(json.dumps(now, indent=1, sort_keys=True))
        print(f"{sum(map(len, now.values()))} jobs of {len(now)} configs -> {args.snapshot}")
        return 0
    differences = compare(json.loads(args.snapshot.read_text()), now)
    print(f"{differences} jobs differ")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
