"""A figure and its provenance: the record of what it was drawn from (the notebook, its parameters, every input
store with its digest, the models and data behind those stores) and the files written with it (PNG and PDF with
the record in their metadata, a ``.provenance.json`` sidecar, a ``.provenance.html`` page)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..util.atomic import atomic_path
from ..util.clock import utc_now
from .pages import provenance_html
from .records import base_record, dependency, recorded_path, store_attrs, tree_sha256


def input_record(path: str | Path) -> dict[str, Any]:
    """What a figure records about one input: its path and digest, and for a store the model it describes and
    the weights that model was computed from."""
    p = Path(path)
    rec: dict[str, Any] = {"path": str(p), "sha256": tree_sha256(p) if p.exists() else None}
    attrs = store_attrs(p) if p.is_dir() else {}
    if attrs:
        prov = attrs.get("provenance", {})
        rec.update(
            {
                "schema": attrs.get("qkdissect_schema"),
                "model_id": attrs.get("model_id"),
                "finished": prov.get("finished"),
                "code_commit": prov.get("code", {}).get("git", {}).get("commit"),
            }
        )
        weights = prov.get("weights") or {}
        if weights:
            rec["weights"] = {k: weights.get(k) for k in ("spec", "sha256", "revision", "origin")}
        upstream = prov.get("inputs")
        if upstream:
            rec["upstream"] = upstream
        data = [d for d in prov.get("dependencies", []) if d.get("role") in ("images", "mask dataset", "text corpus")]
        if data:
            rec["data"] = data
    return rec


def figure_record(
    name: str,
    parameters: dict[str, Any],
    inputs: Sequence[str | Path],
    notebook: str | Path | None = None,
    kind: str = "figure",
) -> dict[str, Any]:
    """The provenance of a figure (or of another page made from stores, ``kind``: the claims page, the mode atlas):
    the notebook that drew it, its parameters and its inputs (with digests)."""
    rec = base_record(kind, parameters)
    rec["figure"] = name
    rec["inputs"] = [input_record(p) for p in inputs]
    rec["dependencies"] = [dependency("store", i["path"], i["sha256"]) for i in rec["inputs"]]
    if notebook is not None:
        nb = Path(notebook)
        rec["notebook"] = {"path": recorded_path(nb), "sha256": tree_sha256(nb) if nb.exists() else None}
        rec["dependencies"].append(dependency("notebook", rec["notebook"]["path"], rec["notebook"]["sha256"]))
    rec["finished"] = utc_now()
    return rec


def save_figure(
    fig: Any,
    path: str | Path,
    metadata: dict[str, str] | None = None,
    provenance: dict[str, Any] | None = None,
    dpi: int = 300,
) -> Path:
    """Save as PNG and PDF with metadata; with ``provenance`` also ``<name>.provenance.json`` beside them (the
    record plus the sha256 of the PNG and PDF under ``outputs``), ``<name>.provenance.html`` (the same record for
    readers, shown in the Snakemake report) and the record in the files' metadata (PNG text chunk
    ``Description``, PDF ``Subject``). Written atomically."""
    import matplotlib.pyplot as plt

    out = Path(path)
    meta = dict(metadata or {})
    if provenance is not None:
        meta.setdefault("Description", json.dumps(provenance, sort_keys=True))
    for ext in (out.suffix or ".png", ".pdf"):
        target = out.with_suffix(ext)
        # PNG text chunks take any key; PDF's info dictionary only standard ones (Description -> Subject)
        fmt_meta = {("Subject" if k == "Description" else k): v for k, v in meta.items()} if ext == ".pdf" else meta
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext.lstrip("."), dpi=dpi, metadata=fmt_meta)
    if provenance is not None:
        # the sidecar also records the digests of the files just written: `qkdissect audit` notices an edited figure
        write_sidecar(provenance_path(out), provenance, [out.with_suffix(e) for e in (out.suffix or ".png", ".pdf")])
    plt.close(fig)
    return out


def write_sidecar(sidecar: Path, record: dict[str, Any], outputs: list[Path], atomic: bool = True) -> None:
    """``<name>.provenance.json`` (the record plus the sha256 of each output beside it, files or folders, under
    ``outputs``) and the readable ``<name>.provenance.html``; each written atomically unless ``atomic`` is False
    (inside a folder that is itself renamed into place)."""
    digests = {t.name: tree_sha256(t) for t in outputs}
    for path, text in (
        (sidecar, json.dumps({**record, "outputs": digests}, indent=2, sort_keys=True) + "\n"),
        (sidecar.with_suffix(".html"), provenance_html(record)),
    ):
        if not atomic:
            path.write_text(text)
            continue
        with atomic_path(path) as tmp:
            tmp.write_text(text)


def provenance_path(figure: str | Path) -> Path:
    p = Path(figure)
    return p.with_name(p.stem + ".provenance.json")
