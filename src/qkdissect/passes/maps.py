"""The maps pass: everything an image or text figure draws, computed once by a rule of its own and stored, so
that drawing (restyling) a figure never loads a model, decodes an image or runs a forward pass.

A **request** says what one figure row needs (JSON on the command line, built by the workflow from the config):

===============  ===========================================================================================
``top``          modes (``"auto"`` or ``[[layer, head, mode(, sign)], ...]``; ``auto``: ``spread`` (``n`` modes,
                 default 5, over depth or over the inclusive layer range ``layers``: see
                 :func:`~qkdissect.core.selection.spread_modes`) or ``contrast``) and their ``k`` top images
                 (Fig. 1, Fig. 4, the galleries S5-S16)
``image-modes``  one image (``"auto"``: the first valid one; an image id; or ``"class:REF"``, the first valid
                 image of an ImageNet class, see :mod:`qkdissect.data.labels`) and, for ``layer_heads``
                 (``"auto"``: 3 layers over depth, each its most active head), the ``n_modes`` modes contributing
                 most on it (Fig. 5)
``image-top``    one image (as for ``image-modes``), modes (``"auto"``: ``n`` (default 6) layers from a quarter of
                 the depth to the last, in each the mode contributing most on the image), the image's maps of each
                 and their ``k`` top images, the image itself left out (S17-S19)
``text-top``     a text model's modes (``"auto"``: a grouping and a contextualising mode in the first, middle
                 and last layer) and their ``k`` top passages, token by token (beyond the paper)
===============  ===========================================================================================

A **maps store** has one ``row`` per mode drawn (coordinates ``layer``, ``head``, ``mode``, ``sign``; its
``cosine``, ``singular_value`` and degenerate block) and ``slot``s per row: the images (or passages) drawn for it,
each with its score and its query and key maps (``q_map``, ``k_map``: ``x_t . u`` and ``x_t . v`` over the
patch grid, or over the passage's tokens). Image stores hold the model-input crops (``crop``: uint8, resized
and centre-cropped exactly as the model saw them); text stores hold the token pieces. The maps are computed in
float64 from the tokens the projections were computed on (``token_source``), with the mode's sign applied.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..core.selection import (
    Mode,
    candidate_modes,
    check_modes,
    contrast_modes,
    contributions,
    degenerate_block,
    image_depth_modes,
    image_layer_heads,
    map_coherence,
    most_coherent,
    spread_modes,
    text_modes,
)
from ..core.topk import image_scores as score_rule
from ..data.decoding import decode
from ..data.labels import is_class_ref
from ..data.sources import image_source
from ..errors import QKDissectError
from ..models.tokenizer import tokenizer_for
from ..requests import MapsRequest
from ..stores.schema import Var, maps_dataset
from ..util.clock import utc_now
from .hooks import layer_tokens, mode_maps
from .io import finish, store_input
from .loop import ImageModel, PassModel, load, load_image_model, modes_of, pass_record
from .text import token_maps

KINDS = ("top", "image-modes", "image-top", "text-top")
#: images per forward pass of the maps pass
BATCH = 16


@dataclass
class Row:
    """One mode drawn, and what is drawn for it: image (or passage) ids and their scores, one per slot."""

    mode: Mode
    ids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    extra: dict[str, list[int]] = field(default_factory=dict)  # text: the passage index, best-pair positions


def _modes(request: dict[str, Any], modes: xr.Dataset, scores: xr.Dataset, auto: str) -> list[Mode]:
    """The request's modes: checked against the model, or chosen automatically."""
    spec = request.get("modes", "auto")
    s, cos = modes.S.values, scores.cosine.values
    if spec in (None, "auto"):
        if auto == "contrast":
            return contrast_modes(s, cos)
        if auto == "text":
            return text_modes(s, cos)
        layers = request.get("layers")
        try:
            return spread_modes(s, int(request.get("n", 5)), tuple(layers) if layers else None)
        except ValueError as e:
            raise QKDissectError(f"{modes.attrs.get('model_id')}: {e}") from e
    shape = (modes.sizes["layer"], modes.sizes["head"], modes.sizes["mode"])
    return check_modes(spec, shape)


def top_images(proj: xr.Dataset, m: Mode, k: int, exclude: str | None = None) -> tuple[list[str], list[float]]:
    """The ids and scores of the ``k`` top images of a mode in a projections store (``exclude``: an image left
    out, e.g. the query image of S17, whose place the next image takes when the store holds one more)."""
    layer, head, mode, sign = m
    top = proj.sel(layer=layer, head=head, mode=mode, sign=sign)
    idx, score = top.top_image.values, top.top_score.values
    ids = proj.image_id.values
    keep = [(str(ids[i]), float(s)) for i, s in zip(idx, score, strict=True) if i >= 0 and str(ids[i]) != exclude]
    return [i for i, _ in keep[:k]], [s for _, s in keep[:k]]


def image_scores(proj: xr.Dataset, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(layer, head, mode) score+ and score- of every mode on one image, by the store's image score rule
    (max q * max k and min q * min k as released, or clipped)."""
    hits = np.flatnonzero(proj.image_id.values == image_id)
    if hits.size == 0:
        dropped = {d["id"]: d for d in (proj.attrs["images"].get("dedupe") or {}).get("dropped", [])}
        if image_id in dropped:
            raise QKDissectError(
                f"image {image_id!r} was dropped from {proj.attrs['images']['spec']} as a near duplicate of "
                f"{dropped[image_id]['duplicate_of']!r}: choose that one (or turn the image set's dedupe off)"
            )
        raise QKDissectError(
            f"image {image_id!r} is not in the projected image set ({proj.attrs['images']['spec']}); "
            f"its ids look like {', '.join(map(str, proj.image_id.values[:3]))}"
        )
    p = proj.isel(image=int(hits[0]))
    if not bool(p.valid):
        raise QKDissectError(f"image {image_id!r} could not be decoded when the set was projected: choose another")
    q_max, q_min, k_max, k_min = (torch.as_tensor(p[v].values) for v in ("q_max", "q_min", "k_max", "k_min"))
    sc = score_rule(q_max, q_min, k_max, k_min, proj.attrs.get("image_score", "released")).numpy()
    return sc[..., 0], sc[..., 1]


def _focus(request: dict[str, Any], proj: xr.Dataset) -> str:
    """The id of the request's one image: ``auto`` (the first valid image), an id, or a ``class:`` reference
    (resolved on the labels of the projected image set, among its valid images)."""
    image = request.get("image", "auto")
    valid = proj.image_id.values[proj.valid.values]
    if image in (None, "auto"):
        return str(valid[0])
    if is_class_ref(image):
        return image_source(proj.attrs["images"]["spec"]).pick(str(image), {str(i) for i in valid}).id
    return str(image)


def image_rows(request: dict[str, Any], modes: xr.Dataset, scores: xr.Dataset, proj: xr.Dataset) -> list[Row]:
    """The rows of an image request (see the module docstring)."""
    kind, k = request["kind"], int(request.get("k", 8))
    if kind == "top":
        return [Row(m, *top_images(proj, m, k)) for m in _modes(request, modes, scores, request.get("auto", "spread"))]
    image = _focus(request, proj)
    plus, minus = image_scores(proj, image)
    contrib = contributions(plus, minus, modes.S.values)
    if kind == "image-top":
        spec = request.get("modes", "auto")
        auto = spec in (None, "auto")
        chosen = (
            image_depth_modes(contrib, plus, minus, int(request.get("n", 6)))
            if auto
            else _modes(request, modes, scores, "")
        )
        rows = []
        for m in chosen:
            ids, sc = top_images(proj, m, k, exclude=image)
            rows.append(Row(m, [image, *ids], [float("nan"), *sc]))
        return rows
    lh = request.get("layer_heads", "auto")
    pairs = image_layer_heads(contrib) if lh in (None, "auto") else [(int(a), int(b)) for a, b in lh]
    check_modes([[layer, head, 0] for layer, head in pairs], (modes.sizes["layer"], modes.sizes["head"], 1))
    rows = []
    for layer, head in pairs:
        for mode in np.argsort(-contrib[layer, head])[: int(request.get("n_modes", 6))]:
            sign = "+" if plus[layer, head, mode] >= minus[layer, head, mode] else "-"
            rows.append(Row((layer, head, int(mode), sign), [image], [float(contrib[layer, head, mode])]))
    return rows


#: how an automatic ``top`` request (``auto: spread``) picks among the strongest modes; recorded in the store
COHERENT_RULE = (
    "each automatic mode is the strongest mode of a strong head of its layer (spread over depth); it is swapped "
    "for the strongest mode of another of the layer's strongest heads (up to 3 candidates, each head's largest "
    "singular value >= 0.5 of the layer's largest) when that one's query and key maps on its top images are more "
    "concentrated: a higher mean correlation of each map with its copy shifted by one patch (a map of compact "
    "regions near 1, a noise-like map near 0)"
)


def coherent_rows(im: ImageModel, rows: Sequence[Row], k: int, modes: xr.Dataset, proj: xr.Dataset) -> tuple[
        list[Row], list[list[Any]]]:  # fmt: skip
    """The rows of an automatic ``top`` request with each mode swapped for the candidate whose maps are most
    concentrated (:data:`COHERENT_RULE`), and every candidate with its coherence (for the store's attrs)."""
    candidates = candidate_modes(modes.S.values, [r.mode for r in rows])
    tops = {m: Row(m, *top_images(proj, m, k)) for ms in candidates for m in ms}
    items = {it.id: it for it in image_source(proj.attrs["images"]["spec"]).items}
    needed: dict[str, set[int]] = {}
    for r in tops.values():
        for i in r.ids:
            needed.setdefault(i, set()).add(r.mode[0])
    tokens = _tokens(im, items, {i: ls for i, ls in needed.items() if i in items}, proj.attrs["token_source"])
    coherence: dict[Mode, float] = {}
    for m, r in tops.items():
        ids = [i for i in r.ids if (i, m[0]) in tokens]
        if not ids:
            coherence[m] = float("nan")
            continue
        u, v = modes.U.values[m[0], m[1], :, m[2]], modes.V.values[m[0], m[1], :, m[2]]
        q, kk = mode_maps(torch.stack([tokens[(i, m[0])] for i in ids]), u, v, im.grid)
        coherence[m] = map_coherence(np.concatenate([q, kk]))
    picked = most_coherent(candidates, [[coherence[m] for m in ms] for ms in candidates])
    record = [[[*m[:3], m[3], round(coherence[m], 4)] for m in ms] for ms in candidates]
    return [tops[m] for m in picked], record


def _tokens(im: ImageModel, items: dict[str, Any], needed: dict[str, set[int]], source: str) -> dict[Any, Any]:
    """The patch tokens of the layers each image needs: one forward pass per batch of images (sorted ids)."""
    got: dict[tuple[str, int], torch.Tensor] = {}
    todo = sorted(needed)
    for b in range(0, len(todo), BATCH):
        ids = todo[b : b + BATCH]
        layers = sorted(set().union(*(needed[i] for i in ids)))
        x = torch.stack([im.preprocess.tensor(decode(items[i], target=max(im.preprocess.crop))) for i in ids])
        out = layer_tokens(im.model, im.qk, x.to(im.device), layers, source)  # type: ignore[arg-type]
        for j, i in enumerate(ids):
            for layer in needed[i]:
                got[(i, layer)] = out[layer][j]
    return got


def _row_vars(rows: Sequence[Row], modes: xr.Dataset, scores: xr.Dataset) -> dict[str, Any]:
    """What a figure writes next to each mode: its cosine, singular value and degenerate block."""
    blocks = [degenerate_block(modes.block.values[m[0], m[1]], m[2]) for m in (r.mode for r in rows)]
    r_dims = ("row",)
    return {
        "cosine": (r_dims, np.array([scores.cosine.values[m[0], m[1], m[2]] for m in (r.mode for r in rows)]),
                   "cos(u_n, v_n)"),
        "singular_value": (r_dims, np.array([modes.S.values[m[0], m[1], m[2]] for m in (r.mode for r in rows)]),
                           "singular value s_n of W_q^T W_k"),
        "block_first": (r_dims, np.array([b[0] if b else -1 for b in blocks], np.int64),
                        "first mode of the degenerate block holding the mode (-1: none)"),
        "block_last": (r_dims, np.array([b[1] if b else -1 for b in blocks], np.int64),
                       "last mode of the degenerate block holding the mode (-1: none)"),
    }  # fmt: skip


def _row_coords(rows: Sequence[Row]) -> dict[str, Any]:
    ms = [r.mode for r in rows]
    return {
        "layer": (("row",), np.array([m[0] for m in ms], np.int64)),
        "head": (("row",), np.array([m[1] for m in ms], np.int64)),
        "mode": (("row",), np.array([m[2] for m in ms], np.int64)),
        "sign": (("row",), np.array([m[3] for m in ms], dtype=object)),
    }


def image_maps(
    im: ImageModel, rows: Sequence[Row], modes: xr.Dataset, scores: xr.Dataset, proj: xr.Dataset
) -> tuple[dict[str, Var], dict[str, Any]]:
    """The variables and coordinates of image rows: crops, per slot the query and key maps and the score."""
    items = {it.id: it for it in image_source(proj.attrs["images"]["spec"]).items}
    missing = sorted({i for r in rows for i in r.ids if i not in items})
    if missing:
        raise QKDissectError(f"images {missing[:3]} of the projections store are no longer in its image set")
    needed: dict[str, set[int]] = {}
    for r in rows:
        for i in r.ids:
            needed.setdefault(i, set()).add(r.mode[0])
    tokens = _tokens(im, items, needed, proj.attrs["token_source"])
    order = list(dict.fromkeys(i for r in rows for i in r.ids))
    crops = np.stack([np.asarray(im.preprocess.image(decode(items[i], target=max(im.preprocess.crop)))) for i in order])
    gh, gw = im.grid
    n_slots = max((len(r.ids) for r in rows), default=0)
    q = np.full((len(rows), n_slots, gh, gw), np.nan)
    k = np.full_like(q, np.nan)
    slot_image = np.full((len(rows), n_slots), -1, np.int64)
    slot_score = np.full((len(rows), n_slots), np.nan)
    for n, r in enumerate(rows):
        if not r.ids:
            continue
        layer, head, mode, sign = r.mode
        s = 1.0 if sign == "+" else -1.0
        u = s * modes.U.values[layer, head, :, mode]
        v = s * modes.V.values[layer, head, :, mode]
        qm, km = mode_maps(torch.stack([tokens[(i, layer)] for i in r.ids]), u, v, (gh, gw))
        q[n, : len(r.ids)], k[n, : len(r.ids)] = qm, km
        slot_image[n, : len(r.ids)] = [order.index(i) for i in r.ids]
        slot_score[n, : len(r.ids)] = r.scores
    slot = ("row", "slot")
    return (
        {
            "q_map": ((*slot, "gy", "gx"), q, "query map x_t . u_n over the patch grid"),
            "k_map": ((*slot, "gy", "gx"), k, "key map x_t . v_n over the patch grid"),
            "slot_image": (slot, slot_image, "index (image dim) of the slot's image; -1: empty"),
            "slot_score": (slot, slot_score, "the slot's score (image score, or contribution)"),
            "crop": (
                ("image", "y", "x", "channel"),
                crops.astype(np.uint8),
                "the image as the model saw it (resized, centre-cropped)",
            ),
            **_row_vars(rows, modes, scores),
        },
        {**_row_coords(rows), "image_id": (("image",), np.array(order, dtype=object))},
    )


def text_rows(request: dict[str, Any], modes: xr.Dataset, scores: xr.Dataset, texts: xr.Dataset) -> list[Row]:
    """The rows of a text request: each mode and its ``k`` top passages (index, score, best-pair positions)."""
    k = int(request.get("k", 3))
    rows = []
    auto = request.get("modes", "auto") in (None, "auto")
    for m in _modes(request, modes, scores, "text"):
        m = scoring_sign(m, texts) if auto else m
        t = texts.sel(layer=m[0], head=m[1], mode=m[2], sign=m[3])
        r = Row(m)
        found = zip(t.top_passage.values[:k], t.top_score.values[:k], t.top_query_token.values[:k],
                    t.top_key_token.values[:k], strict=True)  # fmt: skip
        for p, s, i, j in found:
            if p >= 0:
                r.ids.append(str(texts.passage_id.values[p]))
                r.scores.append(float(s))
                for key, val in (("passage", p), ("query_token", i), ("key_token", j)):
                    r.extra.setdefault(key, []).append(int(val))
        rows.append(r)
    return rows


def scoring_sign(m: Mode, texts: xr.Dataset) -> Mode:
    """A mode chosen automatically: shown as (u, v), or as (-u, -v) where (u, v) scores 0 on every passage (its query
    or key map is never positive on a scored token, as in some of SmolLM2's modes) and (-u, -v) does not."""
    layer, head, mode, _ = m
    top = texts.top_score.sel(layer=layer, head=head, mode=mode).isel(rank=0)
    plus, minus = float(top.sel(sign="+")), float(top.sel(sign="-"))
    return (layer, head, mode, "-" if plus <= 0 < minus else "+")


def text_maps(
    model: Any, tokenizer: Any, qk: Any, rows: Sequence[Row], modes: xr.Dataset, scores: xr.Dataset, texts: xr.Dataset
) -> tuple[dict[str, Var], dict[str, Any]]:
    """The maps dataset of text rows: per slot the passage's token pieces and their query and key maps."""
    params = texts.attrs["provenance"]["parameters"]
    maps = []
    for r in rows:
        layer, head, mode, sign = r.mode
        u = modes.U.values[layer, head, :, mode]
        v = modes.V.values[layer, head, :, mode]
        row = []
        for p in r.extra.get("passage", []):
            tm = token_maps(model, tokenizer, qk, str(texts.text.values[p]), layer, u, v,
                            max_tokens=int(params["max_tokens"]), source=params["tokens"])  # fmt: skip
            if sign == "-":
                tm.q, tm.k = -tm.q, -tm.k
            row.append(tm)
        maps.append(row)
    n_slots = max((len(m) for m in maps), default=0)
    n_tok = max((len(tm.pieces) for m in maps for tm in m), default=0)
    shape = (len(rows), n_slots, n_tok)
    arrays = {
        "piece": np.full(shape, "", dtype=object),
        "spaced": np.zeros(shape, bool),
        "scored": np.zeros(shape, bool),
        "q_map": np.full(shape, np.nan),
        "k_map": np.full(shape, np.nan),
    }
    per_slot = {n: np.full(shape[:2], -1, np.int64) for n in ("passage", "query_token", "key_token", "n_tokens")}
    slot_score = np.full(shape[:2], np.nan)
    for a, (r, row) in enumerate(zip(rows, maps, strict=True)):
        for b, tm in enumerate(row):
            t = len(tm.pieces)
            arrays["piece"][a, b, :t] = tm.pieces
            arrays["spaced"][a, b, :t] = tm.spaced
            arrays["scored"][a, b, :t] = tm.scored
            arrays["q_map"][a, b, :t], arrays["k_map"][a, b, :t] = tm.q, tm.k
            per_slot["n_tokens"][a, b] = t
            for key in ("passage", "query_token", "key_token"):
                per_slot[key][a, b] = r.extra[key][b]
            slot_score[a, b] = r.scores[b]
    tok = ("row", "slot", "token")
    slot = ("row", "slot")
    desc = {
        "piece": "the token as it reads in the passage (special tokens by name)",
        "spaced": "a space precedes the token",
        "scored": "the token counts in the passage score (not special, not padding)",
        "q_map": "query map x_t . u_n",
        "k_map": "key map x_t . v_n",
    }
    data: dict[str, Var] = {n: (tok, a, desc[n]) for n, a in arrays.items()}
    data.update(
        {
            "slot_passage": (slot, per_slot["passage"], "passage index in the text store; -1: empty"),
            "query_token": (slot, per_slot["query_token"], "query position i of the best pair"),
            "key_token": (slot, per_slot["key_token"], "key position j of the best pair"),
            "n_tokens": (slot, per_slot["n_tokens"], "tokens of the passage after truncation"),
            "slot_score": (slot, slot_score, "passage score max [q_i]_+ [k_j]_+"),
            **_row_vars(rows, modes, scores),
        }
    )
    ids = np.full(shape[:2], "", dtype=object)
    for a, r in enumerate(rows):
        ids[a, : len(r.ids)] = r.ids
    return data, {**_row_coords(rows), "passage_id": (slot, ids)}


def compute_maps(*args: Any, **kw: Any) -> xr.Dataset:
    """:func:`run_maps` of ``MapsRequest.build(spec, modes, scores, source, request, output, device=...)``."""
    return run_maps(MapsRequest.build(*args, **kw))


def run_maps(req: MapsRequest) -> xr.Dataset:
    """What one figure row draws (``request``, see the module docstring), from a model's modes and scores and its
    projections (image kinds) or text projections (``text-top``) -> a maps dataset (written to ``output`` when
    given)."""
    kind = req.request.get("kind")
    if kind not in KINDS:
        raise QKDissectError(f"maps request kind must be one of {', '.join(KINDS)}, not {kind!r}")
    started, t0 = utc_now(), time.perf_counter()
    scores_ds, deps = store_input(req.scores, "scores", "scores store")
    if kind == "text-top":
        m: PassModel = load(req.model)
        modes_ds, mdeps = modes_of(req.modes, m)
        texts, sdeps = store_input(req.source, "text_projections", "text projections store")
        rows = text_rows(req.request, modes_ds, scores_ds, texts)
        variables, coords = text_maps(m.model, tokenizer_for(m.source), m.qk, rows, modes_ds, scores_ds, texts)
        params = texts.attrs["provenance"]["parameters"]
        extra: dict[str, Any] = {"corpus": texts.attrs.get("corpus"), "token_source": params["tokens"]}
    else:
        proj, sdeps = store_input(req.source, "projections", "projections store")
        focus = {} if kind == "top" else {"image": _focus(req.request, proj)}
        if focus:
            image_scores(proj, focus["image"])  # an image not projected (or not decoded) fails before the model loads
        im = load_image_model(req.model)
        m = im
        modes_ds, mdeps = modes_of(req.modes, im)
        request = req.request
        rows = image_rows({**request, **focus}, modes_ds, scores_ds, proj)
        chosen: dict[str, Any] = {}
        if (
            kind == "top"
            and request.get("modes", "auto") in (None, "auto")
            and request.get("auto", "spread") == "spread"
        ):
            rows, candidates = coherent_rows(im, rows, int(request.get("k", 8)), modes_ds, proj)
            chosen = {"auto_rule": COHERENT_RULE, "auto_candidates": candidates}
        variables, coords = image_maps(im, rows, modes_ds, scores_ds, proj)
        extra = {
            "images": proj.attrs["images"],
            "grid": list(im.grid),
            "prefix_tokens": list(im.qk.layout.prefix_kinds),
            "preprocess": im.preprocess.describe(),
            "token_source": proj.attrs["token_source"],
            **focus,
            **chosen,
        }
        if kind == "image-modes":
            extra["layer_heads"] = list(dict.fromkeys((r.mode[0], r.mode[1]) for r in rows))
    timings = {"total": round(time.perf_counter() - t0, 3)}
    parameters = {"request": req.request, "device_requested": req.model.device}
    record = pass_record("maps", parameters, m, [*mdeps, *deps, *sdeps], req.model.device, started, timings_s=timings)
    attrs = {
        "kind": kind,
        "model_id": m.name,
        "spec": str(m.source.spec),
        "request": req.request,
        "drawn": [list(r.mode) for r in rows],
        "weights_sha256": m.source.weights_sha256,
        **extra,
        "provenance": record,
    }
    return finish(maps_dataset(variables, coords, attrs), req.output)
