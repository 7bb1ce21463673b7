"""The claims page: the paper's checkable claims (:mod:`qkdissect.core.claims`) evaluated on a run's stores,
written as JSON (for machines), an HTML page (for the report) and a provenance sidecar (for `qkdissect audit`).

``stores`` maps a role to store paths: ``scores`` (the Fig. 3 models), ``projections`` (the S4 models: their
anisotropy), ``preference`` (Fig. 2, one mask dataset), ``same_object`` (Fig. 6, one mask dataset) and ``s3``
(the I-JEPA encoder's and predictor's scores, in that order), and for our own claim A1 ``ablation`` (ablation
stores made with a projections store: each mode's top-image score and its removal's effect on its top images). Any
role may be missing or empty.
"""

from __future__ import annotations

import difflib
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.claims import Curve, Inputs, ModeEffects, Verdict, evaluate
from ..errors import QKDissectError
from ..stores import open_store
from ..stores.schema import layer_null_interval
from ..util.atomic import atomic_path
from .figures import figure_record
from .records import tree_sha256

Stores = Mapping[str, Sequence[str | Path]]
#: the roles of ``stores``, in the order the docstring gives them
ROLES = ("scores", "projections", "preference", "same_object", "s3", "ablation")
_JSON = {dict: "object", list: "array", tuple: "array", str: "string", int: "number", float: "number", bool: "boolean",
         type(None): "null"}  # fmt: skip


def _json_name(value: Any) -> str:
    return _JSON.get(type(value), type(value).__name__)


def _json_kind(value: Any) -> str:
    name = _json_name(value)
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def check_stores(stores: Any, what: str = "stores") -> dict[str, list[str | Path]]:
    """``stores`` as role -> list of store paths, or an error naming what is wrong (``what``: how the caller
    calls it, e.g. the option ``--stores``): no object, an unknown role, a role that is not a list (a single
    string is refused, not taken as a one-element list: it would more often be a mistake than a shortcut), an
    entry that is not a path, an ``s3`` that is not the encoder's and the predictor's scores."""
    if not isinstance(stores, Mapping):
        raise QKDissectError(
            f"{what} is a JSON {_json_name(stores)}, not an object of role "
            f"-> list of store paths (roles: {', '.join(ROLES)}), e.g. "
            '\'{"scores": ["results/scores/m.zarr"], "s3": ["enc.zarr", "pred.zarr"]}\''
        )
    out: dict[str, list[str | Path]] = {}
    for role, paths in stores.items():
        if role not in ROLES:
            close = difflib.get_close_matches(str(role), ROLES, n=2, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else ";"
            raise QKDissectError(f"{what}: unknown role {role!r}{hint} The roles: {', '.join(ROLES)}")
        if isinstance(paths, str | Path):
            raise QKDissectError(
                f"{what}: role {role!r} is a string ({str(paths)!r}), not a list of store paths: write "
                f"{json.dumps([str(paths)])}"
            )
        if not isinstance(paths, Sequence):
            raise QKDissectError(f"{what}: role {role!r} is {_json_kind(paths)}, not a list of store paths")
        for p in paths:
            if not isinstance(p, str | Path) or not str(p):
                held = "null" if p is None else f"{_json_kind(p)} ({json.dumps(p, default=str)})"
                raise QKDissectError(f"{what}: role {role!r} holds {held}, not a store path")
        if role == "s3" and len(paths) not in (0, 2):
            raise QKDissectError(
                f"{what}: role 's3' holds {len(paths)} store{'s' if len(paths) != 1 else ''}, expected 2: the "
                "I-JEPA encoder's scores and the predictor's, in that order"
            )
        out[role] = list(paths)
    return out


def _depth(n: int) -> np.ndarray:
    return np.arange(n) / max(1, n - 1)


def _curve(ds: Any, var: str) -> Curve:
    values = np.asarray(ds[var].values, dtype=np.float64)
    return Curve(_depth(values.shape[0]), values)


def _dataset(ds: Any) -> str:
    return str((ds.attrs.get("dataset") or {}).get("spec", "?"))


def read_inputs(stores: Stores) -> Inputs:
    """The per-model numbers the claims need, from the stores of each role."""
    weighted, null_high, aniso, pref, same, datasets = {}, {}, {}, {}, {}, {}
    for p in stores.get("scores", []):
        ds = open_store(p, "scores")
        weighted[ds.attrs["model_id"]] = _curve(ds, "layer_weighted")
        null_high[ds.attrs["model_id"]] = layer_null_interval(ds)[1]
    for p in stores.get("projections", []):
        ds = open_store(p, "projections")
        aniso[ds.attrs["model_id"]] = _curve(ds, "anisotropy")
    for p in stores.get("preference", []):
        ds = open_store(p, "preference")
        pref[ds.attrs["model_id"]] = {g: _curve(ds, f"layer_{g}") for g in ("same", "different", "background")}
        datasets["preference"] = _dataset(ds)
    for p in stores.get("same_object", []):
        ds = open_store(p, "same_object")
        same[ds.attrs["model_id"]] = _curve(ds, "layer_p")
        datasets["same_object"] = _dataset(ds)
    s3 = [_curve(open_store(p, "scores"), "layer_weighted") for p in stores.get("s3", [])]
    ablation = {str(ds.attrs["model_id"]): _mode_effects(ds, p) for p in stores.get("ablation", [])
                for ds in [open_store(p, "ablation")]}  # fmt: skip
    pair = (s3[0], s3[1]) if len(s3) == 2 else None
    return Inputs(weighted, null_high, aniso, pref, same, pair, datasets, ablation)


def _mode_effects(ds: Any, path: str | Path) -> ModeEffects:
    """Claim A1's numbers of an ablation store: made with a projections store (its top images), zero-ablation."""
    if "top_image_score" not in ds or ds.attrs.get("ablation") != "zero":
        raise QKDissectError(
            f"{path}: claim A1 needs a zero-ablation store made with the model's projections store (its modes' top "
            "images): qkdissect ablate ... --projections STORE, without --mean"
        )
    images = ds.attrs.get("images") or {}
    kl = ds.effect.sel(metric="attention_kl", subset="top").values
    s = np.where(ds.ablated.values, ds.singular_value.values, np.nan)
    where = f"{images.get('spec', '?')}, {images.get('valid', '?')} images"
    return ModeEffects(ds.top_image_score.values, kl, s, where)


_BADGE = {True: ("holds", "#1a7f37"), False: ("does not hold", "#cf222e"), None: ("not evaluated", "#6e7781")}


def _cell(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        text, colour = _BADGE[v]
        return f'<span style="color:{colour}">{text}</span>'
    return html.escape(f"{v:+.4f}" if isinstance(v, float) else str(v))


#: the figure file (under results/figures/) of each figure a claim concerns; {dataset}: the mask dataset's name
FIGURE_FILES = {
    "Fig. 3": "fig3_weighted_cosine.png",
    "Fig. S3": "s3_ijepa_encoder_predictor.png",
    "Fig. S4 A": "s4_anisotropy.png",
    "Fig. S4 B": "s4_anisotropy.png",
    "Fig. 2": "fig2_preference_{dataset}.png",
    "Fig. 6": "fig6_same_object_{dataset}.png",
}
#: the paper's data: what a verdict on other data or fewer models does not speak for
PAPER_MODELS = 16
PAPER_DATA = f"the paper's {PAPER_MODELS} models"


def _figure_link(v: Verdict) -> str:
    """The claim's figure, linked to its file in the run's results folder (the page sits in results/claims/)."""
    name, _, data = v.figure.partition(" (")
    file = FIGURE_FILES.get(name)
    if file is None:
        return html.escape(v.figure)
    href = "../figures/" + file.format(dataset=data.rstrip(")").split(":")[0])
    return f'<a href="{html.escape(href)}">{html.escape(v.figure)}</a>'


def _data_note(v: Verdict) -> str:
    """What the verdict rests on: the models evaluated and the dataset, and what that leaves unsaid."""
    names = [n for n in v.models if not n.startswith("the others")]
    if not names:
        return "nothing in this run (no model of the claim)"
    _, _, data = v.figure.partition(" (")
    dataset = data.rstrip(")")
    note = f"{len(names)} model{'s' if len(names) != 1 else ''} ({', '.join(names)})"
    if dataset:
        note += f" on the mask dataset {dataset}"
    caveats = []
    if len(names) < PAPER_MODELS:
        caveats.append(f"not {PAPER_DATA}")
    if dataset.startswith("synthetic"):
        caveats.append("synthetic scenes (discs on noise), not the paper's images")
    if caveats:
        note += ": " + " and ".join(caveats) + ", so the verdict checks the rule on this data, not the paper's claim"
    return note


def _verdict_html(v: Verdict) -> str:
    text, colour = _BADGE[v.holds]
    keys = sorted({k for m in v.models.values() for k in m if k != "holds"})
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["model", *keys, "check"])
    rows = "".join(
        "<tr>" + f"<td>{html.escape(name)}</td>" + "".join(f"<td>{_cell(m.get(k, ''))}</td>" for k in keys)
        + f"<td>{_cell(m.get('holds'))}</td></tr>"
        for name, m in v.models.items()
    )  # fmt: skip
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>" if v.models else ""
    return (
        f'<h2 id="claim-{html.escape(v.id)}">{html.escape(v.id)}. {_figure_link(v)}: '
        f'<span style="color:{colour}">{text}</span></h2>'
        f"<p><b>Paper:</b> {html.escape(v.claim)}</p><p><b>Rule:</b> {html.escape(v.rule)}</p>"
        f"<p><b>Here:</b> {html.escape(v.summary)}</p><p><b>Rests on:</b> {html.escape(_data_note(v))}</p>{table}"
    )


def claims_html(verdicts: Sequence[Verdict]) -> str:
    """A self-contained page: one section per claim (the paper's words, the rule, the verdict, per-model numbers)."""
    n = {k: sum(v.holds is k for v in verdicts) for k in (True, False, None)}
    style = (
        "body{font-family:sans-serif;max-width:60em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}"
    )
    intro = (
        "<p>Each checkable claim of the paper (section 5 of the spec), turned into a stated rule on the per-layer "
        "numbers of this run (early: normalised depth &le; 1/3, late: &ge; 2/3). Claims 8 and 9 (the meaning of "
        "named modes) are for the eye: see Fig. 1, Fig. 4 and the galleries. Claims A1... are our own, beyond the "
        "paper: what removing a mode does (the ablation figure). Each heading links to its figure in this run's "
        "results folder (results/figures/); each claim says the models and data its verdict rests on: a verdict on "
        "fewer models or other data than the paper's checks the rule there, not the paper's claim.</p>"
        f"<p>{n[True]} hold, {n[False]} do not hold, {n[None]} not evaluated.</p>"
    )
    body = "".join(_verdict_html(v) for v in verdicts)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>The paper's claims</title><style>{style}</style></head><body><h1>The paper's claims on this run</h1>{intro}{body}</body></html>"  # noqa: E501


def write_claims(stores: Stores, output: str | Path) -> list[Verdict]:
    """Evaluate the claims on ``stores`` and write ``output`` (JSON), the page beside it (``.html``) and the
    provenance sidecar (``.provenance.json``, audited like a figure's). Written atomically."""
    out = Path(output)
    stores = check_stores(stores)
    verdicts = evaluate(read_inputs(stores))
    paths = [p for ps in stores.values() for p in ps]
    record = figure_record("claims", {"roles": {k: [str(p) for p in v] for k, v in stores.items()}}, paths)
    page = out.with_suffix(".html")
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps({"claims": [v.to_json() for v in verdicts]}, indent=2, default=_plain) + "\n")
    with atomic_path(page) as tmp:
        tmp.write_text(claims_html(verdicts))
    outputs = {p.name: tree_sha256(p) for p in (out, page)}
    with atomic_path(out.with_name(out.stem + ".provenance.json")) as tmp:
        tmp.write_text(json.dumps({**record, "outputs": outputs}, indent=2, sort_keys=True) + "\n")
    return verdicts


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON")
