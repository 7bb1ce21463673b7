"""The results folder as an RO-Crate (``ro-crate-metadata.json``, RO-Crate 1.1 with the Workflow Run Crate 0.5
profile, and so the Process Run Crate and Workflow RO-Crate ones), built with ``rocrate`` (ro-crate-py): every
figure, store, weights manifest and executed notebook with its sha256 (a folder's files each with theirs: the crate
is the bundle's table of contents), the run's config and workflow (copied into ``run/``; the workflow's Snakefile is
the crate's ``mainEntity``, its rule files parts of it), the run as a CreateAction with the workflow as
instrument, one CreateAction per artefact linking its inputs and parameters to it, and the paper and the software
cited. Every id is relative to the crate: an input outside it (a weights file, a source
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
from ..util.ownership import holding_only
from .records import CONFIG_FILES_ENV, package_versions, tree_digests

if TYPE_CHECKING:
    from .audit import Artefact

PROCESS_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
WORKFLOW_RUN_CRATE = "https://w3id.org/ro/wfrun/workflow/0.5"
WORKFLOW_CRATE = "https://w3id.org/workflowhub/workflow-ro-crate/1.0"
BIOSCHEMAS_WORKFLOW = "https://bioschemas.org/profiles/ComputationalWorkflow/1.0-RELEASE"
RO_CRATE = "https://w3id.org/ro/crate/1.1"
SNAKEMAKE = "https://w3id.org/workflowhub/workflow-ro-crate#snakemake"
#: the paper the package implements (CITATION.cff's preferred-citation)
PAPER = "https://arxiv.org/abs/2405.14880"
PAPER_PROPS = {
    "@type": "ScholarlyArticle",
    "name": "Dissecting Query-Key Interaction in Vision Transformers",
    "author": "Xu Pan, Aaron Philip, Ziqian Xie, Odelia Schwartz",
    "identifier": "arXiv:2405.14880",
    "isPartOf": "Advances in Neural Information Processing Systems 37 (NeurIPS 2024), pp. 54595-54631",
    "sameAs": "https://openreview.net/forum?id=dIktpSgK4F",
    "datePublished": "2024",
}
#: the crate's README (what a Zenodo record's reader sees first), and its first line: written by qkdissect
README = "README.md"
README_HEAD = "# qkdissect results"
README_TEXT = """{head}

The stores, figures, claims and provenance of a run of [qkdissect](https://pypi.org/project/qkdissect/) {version},
the implementation of Pan et al., *Dissecting Query-Key Interaction in Vision Transformers* (NeurIPS 2024,
[arXiv:2405.14880](https://arxiv.org/abs/2405.14880)). `ro-crate-metadata.json` describes every file (with its
sha256), the job that made it, its inputs and parameters; `run/` holds the run's config files and workflow.

Redraw every figure from these stores, without the weights and without a GPU, with qkdissect {version}:

    qkdissect fetch SOURCE -o results   # this record's DOI, its id, its URL or the downloaded zip
    make figures                        # or: qkdissect run --workflow-profile workflow/profiles/default
    qkdissect audit results             # every artefact against its recorded provenance

Cite the paper and the software as `run/CITATION.cff` says.
"""
#: the software's own citation file, copied into the crate beside the workflow when the checkout has one
CITATION = "CITATION.cff"
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
        self._digests: dict[Path, tuple[str, dict[str, str]]] = {}

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

    def digests(self, path: Path) -> tuple[str, dict[str, str]]:
        """sha256 of a file or folder and of each file inside a folder (each read once per crate)."""
        key = path.resolve()
        if key not in self._digests:
            self._digests[key] = tree_digests(key)
        return self._digests[key]

    def part(self, path: Path, props: dict[str, Any]) -> dict[str, str]:
        """A file or folder of the crate (listed in the root's hasPart), described once with its sha256; a
        folder's files each a File of its ``hasPart`` with theirs (what a bundle is checked against)."""
        eid = self.inside(path)
        assert eid is not None, path
        if eid not in self.ids:
            self.ids.add(eid)
            digest, each = self.digests(path)
            props = {**props, "sha256": digest}
            if path.is_dir():
                files = [self._inner(path, eid, rel, sha) for rel, sha in sorted(each.items())]
                self.crate.add_dataset(dest_path=eid, properties={**props, "hasPart": files} if files else props)
            else:
                props = {"encodingFormat": encoding_format(path), "contentSize": str(path.stat().st_size), **props}
                self.crate.add_file(dest_path=eid, properties=props)
        return _ref(eid)

    def _inner(self, folder: Path, eid: str, rel: str, sha: str) -> dict[str, str]:
        """A file inside a folder of the crate: a File with its size and sha256 (part of the folder only)."""
        f = folder / rel
        props = {"@type": "File", "name": rel, "contentSize": str(f.stat().st_size), "sha256": sha}
        return self.context(eid + rel, {**props, "encodingFormat": encoding_format(f)})

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
        return [c.part(art.path, {"name": art.path.name, "description": art.kind})]
    title = art.record.get("figure", art.path.name)
    stem = art.path.name.removesuffix(".provenance.json")
    names = list(art.record.get("outputs") or (stem + ext for ext in (".png", ".pdf")))
    files = [art.path.with_name(n) for n in names]
    made = [c.part(f, {"name": title}) for f in files if f.exists()]
    made.append(c.part(art.path, {"name": f"provenance of {title}"}))
    if (page := art.path.with_name(stem + ".provenance.html")).exists():
        made.append(c.part(page, {"name": f"provenance page of {title}"}))
    if (nb := c.results / "notebooks" / f"{stem}.ipynb").exists():
        made.append(c.part(nb, {"name": f"executed notebook of {title}"}))
    return made


def _action(c: _Crate, art: Artefact, agent: dict[str, str]) -> list[dict[str, str]]:
    """The CreateAction of one artefact (one job of the workflow); returns what it made."""
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
    return made


def _copy_run(results: Path, config_files: Sequence[Path], workflow: Path | None) -> None:
    """Copy the config files in force and the workflow into ``results/run``, replacing what a former run left
    (given neither, what is there stays: rewriting the crate by hand keeps the run's config and workflow)."""
    from ..util.atomic import atomic_path

    if not config_files and workflow is None:
        return
    for f in (*config_files, *([workflow] if workflow else [])):
        if not f.exists():
            raise QKDissectError(f"{f} does not exist: name the config files and workflow folder of the run")
    if len({f.name for f in config_files}) < len(config_files):
        raise QKDissectError(f"config files with the same name ({', '.join(map(str, config_files))}): rename one")
    with atomic_path(results / RUN_FOLDER, owned=holding_only(["config", "workflow", CITATION])) as tmp:
        (tmp / "config").mkdir(parents=True)
        for f in config_files:
            shutil.copy2(f, tmp / "config" / f.name)
        if workflow:
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".snakemake", ".test")
            shutil.copytree(workflow, tmp / "workflow", ignore=ignore)
            if (cff := workflow.resolve().parent / CITATION).is_file():  # the checkout's citation file
                shutil.copy2(cff, tmp / CITATION)


def _add_run(c: _Crate) -> tuple[list[dict[str, str]], dict[str, str] | None]:
    """The run's config files, workflow and citation file as parts; returns the config files and the main
    workflow (its Snakefile: the crate's mainEntity, its rule files parts of it), None when no workflow was
    copied."""
    run = c.results / RUN_FOLDER
    configs = [
        c.part(f, {"name": f"config {f.name}", "description": "a config file of the run"})
        for f in sorted((run / "config").glob("*"))
    ]
    if (cff := run / CITATION).is_file():
        c.part(cff, {"name": "how to cite qkdissect", "encodingFormat": "application/yaml"})
    for nb in sorted((c.results / "notebooks").glob("*.ipynb")):
        c.part(nb, {"name": f"executed notebook {nb.name}"})
    wf = run / "workflow"
    if not (wf / "Snakefile").is_file():
        return configs, None
    c.part(wf, {"name": "workflow", "description": "the Snakemake workflow that ran"})
    return configs, _main_workflow(c, wf)


def _main_workflow(c: _Crate, wf: Path) -> dict[str, str]:
    """The workflow's Snakefile as a ComputationalWorkflow (Workflow RO-Crate, Bioschemas), its rule files as
    parts, Snakemake as its language."""
    lang = c.context(
        SNAKEMAKE,
        {
            "@type": "ComputerLanguage",
            "name": "Snakemake",
            "identifier": _ref("https://snakemake.readthedocs.io"),
            "url": _ref("https://snakemake.github.io"),
        },
    )
    profile = {"@type": "CreativeWork", "name": "Bioschemas ComputationalWorkflow profile", "version": "1.0-RELEASE"}
    c.context(BIOSCHEMAS_WORKFLOW, profile)
    main = c.inside(wf / "Snakefile")
    assert main is not None
    file = c.crate.get(main)  # a File of the workflow folder: described again, as the workflow (same id)
    props = {k: v for k, v in file.properties().items() if k not in ("@id", "@type")}
    c.crate.delete(file)
    rules = [r for f in sorted((wf / "rules").glob("*.smk")) if (r := c.inside(f))]
    props |= {
        "name": "qkdissect workflow",
        "description": "the Snakemake workflow of qkdissect as it ran (workflow/ of its checkout)",
        "version": _version({}),
        "url": f"{PROJECT_URL}{_version({})}/",
        "programmingLanguage": lang,
        "conformsTo": _ref(BIOSCHEMAS_WORKFLOW),
        "license": _ref(LICENSE),
        **({"hasPart": [_ref(r) for r in rules]} if rules else {}),
    }
    c.crate.add_jsonld({"@id": main, "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow"], **props})
    return _ref(main)


def _run_action(
    c: _Crate, agent: dict[str, str], main: dict[str, str], configs: list[dict[str, str]], made: list[dict[str, str]]
) -> None:
    """The run of the workflow: a CreateAction with the workflow as instrument, the config files as its objects
    and everything made as its results (each made by its own job's action too)."""
    ends = [str(e["endTime"]) for e in c.crate.get_entities() if e.type == "CreateAction" and e.get("endTime")]
    props: dict[str, Any] = {
        "@type": "CreateAction",
        "name": "the workflow run that made these results",
        "description": "the Snakemake run of the workflow with the config files in run/config; each of its jobs is "
        "an action of its own, with the inputs and parameters of what it made",
        "agent": agent,
        "instrument": main,
        "result": list({r["@id"]: r for r in made}.values()),
    }
    if configs:
        props["object"] = configs
    if ends:
        props["endTime"] = max(ends)
    action = c.crate.add_jsonld({"@id": "#run", **props})
    c.crate.root_dataset.append_to("mentions", action)


def _readme(c: _Crate) -> None:
    """The crate's README.md (a reader's first page: what the results are, how to redraw them, what to cite),
    written beside the metadata; a README.md that qkdissect did not write is left as it is, and not listed."""
    from ..util.atomic import atomic_path

    path = c.results / README
    if path.exists() and not (path.is_file() and path.read_text(errors="replace").startswith(README_HEAD)):
        return
    with atomic_path(path) as tmp:
        tmp.write_text(README_TEXT.format(head=README_HEAD, version=_version({})))
    c.part(path, {"name": "README", "about": _ref("./"), "encodingFormat": "text/markdown"})


def _root(c: _Crate, agent: dict[str, str], main: dict[str, str] | None) -> None:
    """The crate's name, license, authors, profiles (the Workflow Run Crate ones when the workflow is in it) and
    what it cites: the paper and the software."""
    profiles = [c.context(PROCESS_CRATE, {"@type": "CreativeWork", "name": "Process Run Crate", "version": "0.5"})]
    if main is not None:
        profiles += [
            c.context(WORKFLOW_RUN_CRATE, {"@type": "CreativeWork", "name": "Workflow Run Crate", "version": "0.5"}),
            c.context(WORKFLOW_CRATE, {"@type": "CreativeWork", "name": "Workflow RO-Crate", "version": "1.0"}),
        ]
        c.crate.root_dataset["mainEntity"] = main
    c.context(LICENSE, {"@type": "CreativeWork", "name": "MIT License", "identifier": "MIT"})
    c.crate.name = "qkdissect results"
    c.crate.description = (
        "Query-key interaction modes of vision transformers: stores, figures, executed notebooks and their provenance"
    )
    root = c.crate.root_dataset
    root["license"] = _ref(LICENSE)
    root["author"] = agent
    root["publisher"] = agent
    root["conformsTo"] = profiles
    root["citation"] = [c.context(PAPER, dict(PAPER_PROPS)), _instrument(c, {})]


def config_files_in_force() -> list[Path]:
    """The config files the workflow exported to its jobs (none outside the workflow)."""
    return [Path(f) for f in os.environ.get(CONFIG_FILES_ENV, "").split(os.pathsep) if f]


def write_crate(
    results: str | Path,
    config_files: Iterable[str | Path] = (),
    workflow: str | Path | None = None,
    root: str | Path | None = None,
) -> Path:
    """Write ``ro-crate-metadata.json`` (and its ``README.md``) into ``results``: every figure, store, manifest and
    executed notebook (with its sha256, and each file of a folder with its own), the config files and workflow
    (copied into ``results/run``; the workflow the crate's mainEntity), the inputs recorded in their provenance, one
    CreateAction per artefact linking its inputs and parameters to it, the run's CreateAction, and the paper and
    the software cited. ``root``: where the records' relative paths start (default: the results folder's
    parent)."""
    from ..util.atomic import atomic_path
    from .audit import find_artefacts

    results = Path(results)
    if not results.is_dir():
        raise QKDissectError(f"{results} is not a folder: name a results folder (`qkdissect crate results`)")
    _copy_run(results, [Path(f) for f in config_files], Path(workflow) if workflow else None)
    c = _Crate(results, Path(root) if root is not None else None)
    agent = _agent(c)
    made: list[dict[str, str]] = []
    for art in find_artefacts(results)[0]:
        if not art.findings:  # not a figure whose provenance is gone
            made += _action(c, art, agent)
    configs, main = _add_run(c)
    _readme(c)
    _root(c, agent, main)
    if main is not None:
        _run_action(c, agent, main, configs, made)
    meta = c.crate.metadata.generate()
    meta["@graph"] = _flat(meta["@graph"])
    if main is not None:  # the descriptor says the crate is a Workflow RO-Crate too
        for e in meta["@graph"]:
            if e["@id"] == "ro-crate-metadata.json":
                e["conformsTo"] = [_ref(RO_CRATE), _ref(WORKFLOW_CRATE)]
    out = results / "ro-crate-metadata.json"
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return out
