"""The results folder as an RO-Crate (``ro-crate-metadata.json``, RO-Crate 1.1 with the Process Run Crate 0.5
profile), built with ``rocrate`` (ro-crate-py): every figure, store, weights manifest and executed notebook with
its sha256, the run's config and workflow (copied into ``run/``), and one CreateAction per artefact linking its
inputs and parameters to it. Every id is relative to the crate: an input outside it (a weights file, a source
notebook, an image set) is a contextual entity named by its role and sha256, never by a path of the machine."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import mimetypes
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import QKDissectError
from ..stores.ownership import holding_only
from .records import CONFIG_FILES_ENV, package_versions, tree_sha256

if TYPE_CHECKING:
    from .audit import Artefact

PROCESS_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
RO_CRATE = "https://w3id.org/ro/crate/1.1"
LICENSE = "https://spdx.org/licenses/MIT"
#: where the package is published: the software of every action (an absolute URI, per release) and its authors' url
PROJECT_URL = "https://pypi.org/project/qkdissect/"
#: the authors when the package's metadata does not say (pyproject.toml's `authors`)
AUTHORS = "qkdissect developers"
#: the run's config files and workflow, copied into the crate
RUN_FOLDER = "run"
_FORMATS = {
    ".ipynb": "application/x-ipynb+json",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".smk": "text/x-python",
    ".rst": "text/x-rst",
    ".safetensors": "application/octet-stream",
    ".onnx": "application/octet-stream",
}
#: an absolute path of the machine inside a string (not the // of a URL): what the crate never records
_ABSOLUTE = re.compile(r"(?:file://)?(?<![\w/.~-])/(?!/)[^\s\"'<>,;]+")


def encoding_format(path: Path) -> str:
    """The media type of a file, by its suffix."""
    return _FORMATS.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _ref(eid: str) -> dict[str, str]:
    return {"@id": eid}


def _flat(graph: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each one-element list as its single value (RO-Crate 1.1 recommends no singleton arrays)."""
    return [{k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in e.items()} for e in graph]


def _slug(text: str) -> str:
    return re.sub(r"\W+", "-", text.lower()).strip("-")


def _portable(text: str, base: Path) -> str:
    """``text`` with every absolute path relative to ``base`` (the folder holding the results), or reduced to
    its name when outside it."""

    def one(m: re.Match[str]) -> str:
        p = Path(m.group(0).removeprefix("file://"))
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            return p.name

    return _ABSOLUTE.sub(one, text)


class _Crate:
    """The crate being built: ro-crate-py's ROCrate plus the bookkeeping of which ids exist."""

    def __init__(self, results: Path, root: Path | None = None) -> None:
        from rocrate.rocrate import ROCrate

        self.results = results
        #: where relative paths in the records start: the folder the workflow ran in (given, as for a workflow
        #: imported with a prefix), else the folder holding the results folder (or its link)
        self.base = Path(os.path.abspath(root)) if root is not None else Path(os.path.abspath(results)).parent
        self.crate = ROCrate(version="1.1")
        self.ids: set[str] = set()

    def portable(self, value: Any) -> Any:
        """A string, or the JSON of anything else, with no path of the machine in it."""
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        return _portable(text, self.base)

    def inside(self, path: Path) -> str | None:
        """The crate-relative id of a file or folder inside the results folder, else None."""
        here = Path(os.path.abspath(self.results))
        for p, top in ((Path(os.path.abspath(path)), here), (path.resolve(), here.resolve())):
            try:  # as found under the results folder (through a link, maybe), else where it really is
                rel = p.relative_to(top).as_posix()
            except ValueError:
                continue
            return rel + ("/" if path.is_dir() else "")
        return None

    def part(self, path: Path, props: dict[str, Any]) -> dict[str, str]:
        """A file or folder of the crate (listed in the root's hasPart), described once."""
        eid = self.inside(path)
        assert eid is not None, path
        if eid not in self.ids:
            self.ids.add(eid)
            if path.is_dir():
                self.crate.add_dataset(dest_path=eid, properties=props)
            else:
                props = {"encodingFormat": encoding_format(path), "contentSize": str(path.stat().st_size), **props}
                self.crate.add_file(dest_path=eid, properties=props)
        return _ref(eid)

    def context(self, eid: str, props: dict[str, Any]) -> dict[str, str]:
        """A contextual entity (outside the crate's files), described once."""
        if eid not in self.ids:
            self.ids.add(eid)
            self.crate.add_jsonld({"@id": eid, **props})
        return _ref(eid)


def _agent(c: _Crate) -> dict[str, str]:
    """The crate's author, publisher and the agent of every action: the package's authors (an Organization)."""
    try:
        name = (md.metadata("qkdissect").get_all("Author") or [AUTHORS])[0]
    except md.PackageNotFoundError:  # run from a source tree
        name = AUTHORS
    return c.context("#" + _slug(name), {"@type": "Organization", "name": name, "url": PROJECT_URL})


def _version(code: dict[str, Any]) -> str:
    return str((code.get("packages") or {}).get("qkdissect") or package_versions()["qkdissect"])


def _instrument(c: _Crate, code: dict[str, Any]) -> dict[str, str]:
    """The qkdissect release that made an artefact (its commit and source digest are in the action's
    description)."""
    url = f"{PROJECT_URL}{_version(code)}/"
    props = {"@type": "SoftwareApplication", "name": "qkdissect", "softwareVersion": _version(code), "url": url}
    return c.context(url, props)


def _describe(art: Artefact) -> str:
    """What an artefact is and the code that made it."""
    code = art.record.get("code") or {}
    git = code.get("git") or {}
    where = (
        f"git commit {git['commit']}{' with uncommitted changes' if git.get('dirty') else ''}, "
        if git.get("commit")
        else ""
    )
    return (
        f"{art.kind} {art.path.name}, made by qkdissect {_version(code)} "
        f"({where}package source sha256 {code.get('source_sha256')})"
    )


def _input(c: _Crate, dep: dict[str, Any]) -> dict[str, str]:
    """One recorded input: a part of the crate when it lies inside it, else a contextual entity with its role and
    sha256 (a weights file, a source notebook, an image set or mask dataset as read)."""
    role, digest = str(dep.get("role", "input")), dep.get("sha256")
    if "path" in dep:
        p = Path(dep["path"])
        p = p if p.is_absolute() else c.base / p
        if c.inside(p) is not None and p.exists():
            return c.part(p, {"name": p.name, "description": role, "sha256": digest})
        name, fmt = p.name, encoding_format(p)
    else:
        name, fmt = c.portable(str(dep.get("spec"))), None
    props: dict[str, Any] = {"@type": "CreativeWork", "name": f"{role} {name}", "roleName": role, "sha256": digest}
    if fmt:
        props["encodingFormat"] = fmt
    if "count" in dep:
        props["description"] = f"{dep['count']} items; sha256 of (id, item sha256) lines"
    return c.context(f"#{_slug(role)}-{(digest or _slug(name))[:16]}", props)


def _parameters(c: _Crate, record: dict[str, Any]) -> list[dict[str, str]]:
    """The artefact's parameters and the config sections it was made from, as PropertyValues."""
    pairs = [(k, v) for k, v in (record.get("parameters") or {}).items()]
    pairs += [(f"config {k}", v) for k, v in ((record.get("config") or {}).get("values") or {}).items()]
    out = []
    for name, value in pairs:
        value = value if isinstance(value, bool | int | float) else c.portable(value)
        key = hashlib.sha256(json.dumps([name, value]).encode()).hexdigest()[:16]
        out.append(c.context(f"#parameter-{key}", {"@type": "PropertyValue", "name": name, "value": value}))
    return out


def _made(c: _Crate, art: Artefact) -> list[dict[str, str]]:
    """The files of the crate an artefact is: a figure's PNG/PDF (or the claims page's JSON/HTML, or the mode
    atlas's page and data folder), its provenance sidecar and page and its executed notebook; a store or manifest
    itself."""
    if art.kind not in ("figure", "atlas"):
        return [c.part(art.path, {"name": art.path.name, "description": art.kind, "sha256": tree_sha256(art.path)})]
    title = art.record.get("figure", art.path.name)
    stem = art.path.name.removesuffix(".provenance.json")
    names = list(art.record.get("outputs") or (stem + ext for ext in (".png", ".pdf")))
    files = [art.path.with_name(n) for n in names]
    made = [c.part(f, {"name": title, "sha256": tree_sha256(f)}) for f in files if f.exists()]
    made.append(c.part(art.path, {"name": f"provenance of {title}"}))
    if (page := art.path.with_name(stem + ".provenance.html")).exists():
        made.append(c.part(page, {"name": f"provenance page of {title}"}))
    if (nb := c.results / "notebooks" / f"{stem}.ipynb").exists():
        made.append(c.part(nb, {"name": f"executed notebook of {title}", "sha256": tree_sha256(nb)}))
    return made


def _action(c: _Crate, art: Artefact, agent: dict[str, str]) -> None:
    from .audit import dependencies

    made = _made(c, art)
    objects = [_input(c, d) for d in dependencies(art)] + _parameters(c, art.record)
    props: dict[str, Any] = {
        "@type": "CreateAction",
        "name": f"made {art.path.name}",
        "description": _describe(art),
        "agent": agent,
        "result": made,
    }
    if end := art.record.get("finished") or art.record.get("resolved"):
        props["endTime"] = end
    if objects:
        props["object"] = objects
    action = c.crate.add_action(
        _instrument(c, art.record.get("code") or {}), identifier=f"#make-{c.inside(art.path)}", properties=props
    )
    c.crate.root_dataset.append_to("mentions", action)


def _copy_run(results: Path, config_files: Sequence[Path], workflow: Path | None) -> None:
    """Copy the config files in force and the workflow into ``results/run``, replacing what a former run left
    (given neither, what is there stays: rewriting the crate by hand keeps the run's config and workflow)."""
    from ..stores import atomic_path

    if not config_files and workflow is None:
        return
    for f in (*config_files, *([workflow] if workflow else [])):
        if not f.exists():
            raise QKDissectError(f"{f} does not exist: name the config files and workflow folder of the run")
    if len({f.name for f in config_files}) < len(config_files):
        raise QKDissectError(f"config files with the same name ({', '.join(map(str, config_files))}): rename one")
    with atomic_path(results / RUN_FOLDER, owned=holding_only(["config", "workflow"])) as tmp:
        (tmp / "config").mkdir(parents=True)
        for f in config_files:
            shutil.copy2(f, tmp / "config" / f.name)
        if workflow:
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".snakemake", ".test")
            shutil.copytree(workflow, tmp / "workflow", ignore=ignore)


def _add_run(c: _Crate) -> None:
    run = c.results / RUN_FOLDER
    for f in sorted((run / "config").glob("*")):
        c.part(f, {"name": f"config {f.name}", "description": "a config file of the run", "sha256": tree_sha256(f)})
    if (wf := run / "workflow").is_dir():
        c.part(wf, {"name": "workflow", "description": "the Snakemake workflow that ran", "sha256": tree_sha256(wf)})
    for nb in sorted((c.results / "notebooks").glob("*.ipynb")):
        c.part(nb, {"name": f"executed notebook {nb.name}", "sha256": tree_sha256(nb)})


def _root(c: _Crate, agent: dict[str, str]) -> None:
    c.context(PROCESS_CRATE, {"@type": "CreativeWork", "name": "Process Run Crate", "version": "0.5"})
    c.context(LICENSE, {"@type": "CreativeWork", "name": "MIT License", "identifier": "MIT"})
    c.crate.name = "qkdissect results"
    c.crate.description = (
        "Query-key interaction modes of vision transformers: stores, figures, executed notebooks and their provenance"
    )
    root = c.crate.root_dataset
    root["license"] = _ref(LICENSE)
    root["author"] = agent
    root["publisher"] = agent
    root["conformsTo"] = _ref(PROCESS_CRATE)


def config_files_in_force() -> list[Path]:
    """The config files the workflow exported to its jobs (none outside the workflow)."""
    return [Path(f) for f in os.environ.get(CONFIG_FILES_ENV, "").split(os.pathsep) if f]


def write_crate(
    results: str | Path,
    config_files: Iterable[str | Path] = (),
    workflow: str | Path | None = None,
    root: str | Path | None = None,
) -> Path:
    """Write ``ro-crate-metadata.json`` into ``results``: every figure, store, manifest and executed notebook (with
    its sha256), the config files and workflow (copied into ``results/run``), the inputs recorded in their
    provenance, and one CreateAction per artefact linking its inputs and parameters to it. ``root``: where the
    records' relative paths start (default: the results folder's parent)."""
    from ..stores import atomic_path
    from .audit import find_artefacts

    results = Path(results)
    if not results.is_dir():
        raise QKDissectError(f"{results} is not a folder: name a results folder (`qkdissect crate results`)")
    _copy_run(results, [Path(f) for f in config_files], Path(workflow) if workflow else None)
    c = _Crate(results, Path(root) if root is not None else None)
    agent = _agent(c)
    _root(c, agent)
    for art in find_artefacts(results)[0]:
        if not art.findings:  # not a figure whose provenance is gone
            _action(c, art, agent)
    _add_run(c)
    meta = c.crate.metadata.generate()
    meta["@graph"] = _flat(meta["@graph"])
    out = results / "ro-crate-metadata.json"
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return out
