"""Provenance for readers: an HTML page per figure (shown in the Snakemake report next to the figure), and an
RO-Crate (``ro-crate-metadata.json``, RO-Crate 1.1 with the Process Run Crate profile) that describes every
figure, store and weights manifest of a results folder and the action that made each from its inputs."""

from __future__ import annotations

import html
import json
import mimetypes
from pathlib import Path
from typing import Any

from .provenance import tree_sha256, utc_now


def _short(digest: Any) -> str:
    return f"{str(digest)[:16]}…" if digest else "—"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "<p>—</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pre(obj: Any) -> str:
    return f"<pre>{html.escape(json.dumps(obj, indent=2, sort_keys=True, default=str))}</pre>"


def figure_models(record: dict[str, Any]) -> list[list[Any]]:
    """One row per model a figure shows: id, weights spec, sha256 or hub revision, where the weights came from."""
    rows, seen = [], set()
    for i in record.get("inputs", []):
        w = i.get("weights") or {}
        key = (i.get("model_id"), w.get("sha256"))
        if i.get("model_id") and key not in seen:
            seen.add(key)
            rows.append(
                [
                    i["model_id"],
                    w.get("spec", ""),
                    _short(w.get("sha256")),
                    w.get("revision") or "—",
                    w.get("origin", ""),
                ]
            )
    return rows


def figure_data(record: dict[str, Any]) -> list[list[Any]]:
    """One row per image set, mask dataset or text corpus behind a figure: role, spec, number of items, digest."""
    rows, seen = [], set()
    for i in record.get("inputs", []):
        for d in i.get("data", []):
            key = (d.get("role"), d.get("spec"), d.get("sha256"))
            if key not in seen:
                seen.add(key)
                rows.append([d.get("role"), d.get("spec"), d.get("count"), _short(d.get("sha256"))])
    return rows


def provenance_html(record: dict[str, Any]) -> str:
    """A self-contained HTML page a reviewer can read: what the figure shows, from which models and data, with
    which parameters and code."""
    code = record.get("code", {})
    git = code.get("git", {})
    pk = code.get("packages", {})
    nb = record.get("notebook") or {}
    cfg = record.get("config") or {}
    commit = git.get("commit") or "not a git checkout"
    dirty = " (with uncommitted changes)" if git.get("dirty") else ""
    parts = [
        f"<h1>{html.escape(str(record.get('figure', 'figure')))}</h1>",
        f"<p>Drawn {html.escape(str(record.get('finished', '?')))} by notebook "
        f"<code>{html.escape(str(nb.get('path', '?')))}</code> (sha256 {_short(nb.get('sha256'))}).</p>",
        "<h2>Models</h2>",
        _table(["model", "weights spec", "weights sha256", "hub revision", "origin"], figure_models(record)),
        "<h2>Data</h2>",
        _table(["kind", "source", "items", "digest of the items as read"], figure_data(record)),
        "<h2>Parameters</h2>",
        _pre(record.get("parameters", {})),
        "<h2>Inputs</h2>",
        _table(
            ["store", "schema", "model", "sha256", "made"],
            [
                [
                    i.get("path"),
                    i.get("schema", ""),
                    i.get("model_id", ""),
                    _short(i.get("sha256")),
                    i.get("finished", ""),
                ]
                for i in record.get("inputs", [])
            ],
        ),
        "<h2>Code</h2>",
        f"<p>qkdissect {html.escape(str(pk.get('qkdissect', '?')))}, commit <code>{html.escape(commit)}</code>"
        f"{dirty}, source sha256 {_short(code.get('source_sha256'))}.</p>",
        _table(["package", "version"], [[k, v] for k, v in sorted(pk.items())]),
    ]
    if cfg:
        files = ", ".join(f"{f['path']} (sha256 {_short(f['sha256'])})" for f in cfg.get("files", []))
        parts += ["<h2>Configuration</h2>", f"<p>{html.escape(files)}</p>", _pre(cfg.get("values", {}))]
    parts.append(
        "<p>Check that nothing changed since: <code>qkdissect audit results</code> (see the README, "
        "“Auditing results”).</p>"
    )
    style = (
        "body{font-family:sans-serif;font-size:13px;margin:1em}table{border-collapse:collapse;margin:.4em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}pre{background:#f6f6f6;padding:.5em}"
    )
    title = html.escape(str(record.get("figure", "provenance")))
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title><style>{style}</style></head>'
        f"<body>{''.join(parts)}</body></html>\n"
    )


# ----------------------------------------------------------------------------------------- RO-Crate
PROCESS_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
RO_CRATE = "https://w3id.org/ro/crate/1.1"


def _entity_id(path: Path, results: Path) -> str:
    """A crate-relative id for a file or folder inside the results folder, else an absolute file URI."""
    try:
        rel = path.resolve().relative_to(results.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_uri()
    return rel + ("/" if path.is_dir() else "")


def write_crate(results: str | Path) -> Path:
    """Write ``ro-crate-metadata.json`` into ``results``: every figure, store and manifest (with its sha256), the
    inputs recorded in their provenance, and one CreateAction per artefact linking its inputs to it."""
    from . import __version__
    from .audit import dependencies, find_artefacts
    from .store import atomic_path

    results = Path(results)
    arts, _ = find_artefacts(results)
    base = results.resolve().parent
    software = {
        "@id": "#qkdissect",
        "@type": "SoftwareApplication",
        "name": "qkdissect",
        "version": __version__,
    }
    entities: dict[str, dict[str, Any]] = {software["@id"]: software}
    parts, actions = [], []

    def add(eid: str, props: dict[str, Any]) -> dict[str, str]:
        """Describe an entity once; return a reference to it."""
        entities.setdefault(eid, {"@id": eid, **props})
        return {"@id": eid}

    for a in arts:
        if a.kind == "figure":
            made = []
            for ext in (".png", ".pdf"):
                f = a.path.with_name(a.path.name.replace(".provenance.json", ext))
                if f.exists():
                    made.append(
                        add(
                            _entity_id(f, results),
                            {
                                "@type": "File",
                                "name": a.record.get("figure", f.name),
                                "encodingFormat": mimetypes.guess_type(f.name)[0],
                                "sha256": tree_sha256(f),
                            },
                        )
                    )
            made.append(
                add(
                    _entity_id(a.path, results),
                    {
                        "@type": "File",
                        "encodingFormat": "application/json",
                        "name": f"provenance of {a.record.get('figure', a.path.name)}",
                    },
                )
            )
        else:
            kind = "Dataset" if a.path.is_dir() else "File"
            made = [
                add(
                    _entity_id(a.path, results),
                    {"@type": kind, "name": a.path.name, "description": a.kind, "sha256": tree_sha256(a.path)},
                )
            ]
        parts += made
        objects = []
        for dep in dependencies(a):
            if "path" in dep:
                p = Path(dep["path"])
                p = p if p.is_absolute() else base / p
                objects.append(
                    add(
                        _entity_id(p, results),
                        {
                            "@type": "Dataset" if p.is_dir() else "File",
                            "name": f"{dep['role']} {p.name}",
                            "sha256": dep.get("sha256"),
                        },
                    )
                )
            else:
                eid = f"#{dep['role'].replace(' ', '-')}-{dep.get('sha256', '')[:16]}"
                objects.append(
                    add(
                        eid,
                        {
                            "@type": "Dataset",
                            "name": f"{dep['role']} {dep.get('spec')}",
                            "description": f"{dep.get('count')} items; sha256 of (id, item sha256) lines",
                            "sha256": dep.get("sha256"),
                        },
                    )
                )
        actions.append(
            {
                "@id": f"#make-{_entity_id(a.path, results)}",
                "@type": "CreateAction",
                "name": f"made {a.path.name}",
                "instrument": {"@id": software["@id"]},
                "object": objects,
                "result": made,
                "endTime": a.record.get("finished") or a.record.get("resolved"),
                "description": json.dumps(
                    {"parameters": a.record.get("parameters"), "code": a.record.get("code")}, default=str
                ),
            }
        )
    root = {
        "@id": "./",
        "@type": "Dataset",
        "name": "qkdissect results",
        "description": "Query-key interaction modes of vision transformers: stores, figures and their provenance",
        "datePublished": utc_now(),
        "license": "https://creativecommons.org/licenses/by/4.0/",
        "conformsTo": {"@id": PROCESS_CRATE},
        "hasPart": parts,
        "mentions": [{"@id": x["@id"]} for x in actions],
    }
    graph = [
        {
            "@id": "ro-crate-metadata.json",
            "@type": "CreativeWork",
            "conformsTo": {"@id": RO_CRATE},
            "about": {"@id": "./"},
        },
        root,
        {"@id": PROCESS_CRATE, "@type": "CreativeWork", "name": "Process Run Crate", "version": "0.5"},
        *entities.values(),
        *actions,
    ]
    out = results / "ro-crate-metadata.json"
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps({"@context": "https://w3id.org/ro/crate/1.1/context", "@graph": graph}, indent=1))
    return out
