"""The results folder as an RO-Crate (``ro-crate-metadata.json``, RO-Crate 1.1 with the Process Run Crate
profile): every figure, store and weights manifest, with its sha256, and the action that made each from its
inputs."""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from typing import Any

from .records import package_versions, tree_sha256, utc_now

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
    from ..stores import atomic_path
    from .audit import dependencies, find_artefacts

    results = Path(results)
    arts = [a for a in find_artefacts(results)[0] if not a.findings]  # not a figure whose provenance is gone
    base = results.resolve().parent
    software = {
        "@id": "#qkdissect",
        "@type": "SoftwareApplication",
        "name": "qkdissect",
        "version": package_versions()["qkdissect"],
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
            names = a.record.get("outputs") or {
                a.path.name.replace(".provenance.json", ext): None for ext in (".png", ".pdf")
            }  # a figure's PNG and PDF, the claims page's JSON and HTML: what the sidecar records it wrote
            for name in names:
                f = a.path.with_name(name)
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
