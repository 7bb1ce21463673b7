"""Provenance for readers: an HTML page per figure (shown in the Snakemake report next to the figure): what it
shows, from which models and data, with which parameters and code."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Collection
from typing import Any


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
        f"<code>{html.escape(str(nb.get('path', '?')))}</code> (sha256 {_short(nb.get('sha256'))}).</p>"
        if nb
        else f"<p>Written {html.escape(str(record.get('finished', '?')))} from the stores below.</p>",
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


# ----------------------------------------------------------------------------------------- the report's order
#: the report category of what the paper does not show; listed last
BEYOND_THE_PAPER = "Beyond the paper"
_MAIN = re.compile(r"Fig\. (\d+)\b")
_SUPPLEMENTARY = re.compile(r"(?:Fig\. )?S(\d+)\b")


def _paper_position(category: str, given: int) -> tuple[int, int]:
    """Where a category comes in the paper: Fig. 1..6, then S1..S19, then any other page (in the order given),
    then what is beyond the paper."""
    if m := _MAIN.match(category):
        return (0, int(m.group(1)))
    if m := _SUPPLEMENTARY.match(category):
        return (1, int(m.group(1)))
    return (3, given) if category == BEYOND_THE_PAPER else (2, given)


def report_categories(categories: list[str], present: Collection[str] | None = None) -> dict[str, str]:
    """Each report category named with its two-digit place in the paper's order ("03 Fig. 3 layer cosine"): the
    Snakemake report lists categories alphabetically, so the numbers make it list them as the paper does.
    ``present``: the categories this run makes (default: all); only they are numbered, 01, 02, ... without a gap
    for a figure the run does not make (no S3 without an I-JEPA pair); the others follow them."""
    unique = list(dict.fromkeys(categories))
    shown = set(unique if present is None else present)
    order = sorted(unique, key=lambda c: (c not in shown, *_paper_position(c, unique.index(c))))
    return {c: f"{i:02d} {c}" for i, c in enumerate(order, 1)}
