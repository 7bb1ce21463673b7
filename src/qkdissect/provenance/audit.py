"""``qkdissect audit``: re-check where every result came from.

Every artefact under a results folder carries its provenance: stores in ``attrs["provenance"]``, weights
manifests in their JSON, figures in ``<name>.provenance.json`` beside the PNG/PDF. Each lists its
``dependencies`` (files and stores with their sha256, image sets and mask datasets with a digest of every item
as read), the config sections it was made from, and the code (git commit, dirty flag, digest of the package
source). The audit re-hashes all of them and reports, per artefact, the worst of:

- ``ok``
- ``unknown``: nothing records what it is: a Zarr store that no qkdissect command wrote (no ``qkdissect_schema``),
  an executed notebook that no figure and no RO-Crate lists
- ``dirty-tree``: made from a checkout with uncommitted changes (the commit alone does not reproduce it)
- ``different-code``: the package source differs from the code running the audit
- ``changed-input``: an input's content differs from what was recorded, or an artefact it was made from did
- ``modified``: the artefact itself (a figure's PNG/PDF or executed notebook, the mode atlas's page or data, a chunk
  or a root attribute of a store, a file of the run's config or workflow copied into the RO-Crate) was changed after
  it was made
- ``missing-input``: an input is gone, a chunk of the store itself is gone, or the artefact has no provenance (a
  figure or the mode atlas whose sidecar was deleted)

A store records the sha256 of each of its files and root attributes when it is written
(:mod:`qkdissect.stores.content`); the audit names every chunk and attribute that changed, is gone or was added since.
What the RO-Crate (``ro-crate-metadata.json``) lists with a sha256 and no record of its own covers (the executed
notebooks, the run's config and workflow under ``run/``) is checked against the crate's digest.

In results fetched from a published bundle (``qkdissect fetch``, which leaves ``fetched.json`` there), an input that
was not published with them and is not on this machine (a weights file, an image set read from a folder) is noted,
not counted as missing: what was made from it is checked against its own record and the crate's digests.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import QKDissectError
from ..stores.content import (
    attributes_line,
    changed_attributes,
    differences,
    recorded,
    recorded_attributes,
    stale_metadata,
)
from ..util.ownership import root_attrs
from .atlas import INDEX, SIDECAR, is_atlas
from .records import config_values, items_sha256, source_sha256, tree_digests

STATUSES = ("ok", "unknown", "dirty-tree", "different-code", "changed-input", "modified", "missing-input")
#: statuses that make the artefacts made from this one out of date too
_PROPAGATES = ("changed-input", "modified", "missing-input")


@dataclass
class Finding:
    status: str
    message: str


@dataclass
class Artefact:
    path: Path  # as found under the results folder
    kind: str  # "weights manifest", a store schema ("modes/v1", ...), "figure", "claims" or "atlas"
    record: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)
    #: a store's record of its own content ({file inside it: sha256}); None for a store written without one
    content: dict[str, str] | None = None
    #: a store's root attributes as found (its content record checks them)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return max((f.status for f in self.findings), key=STATUSES.index, default="ok")

    def add(self, status: str, message: str) -> None:
        self.findings.append(Finding(status, message))

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "status": self.status,
            "findings": [{"status": f.status, "message": f.message} for f in self.findings],
        }


# ----------------------------------------------------------------------------------------- discovery
def _is_partial(name: str) -> bool:
    return ".tmp-" in name or ".old-" in name


#: what a figure or the claims page is made of beside its ``<stem>.provenance.json`` sidecar
_DRAWN = (".png", ".pdf")


#: the files of a Zarr store (v3: zarr.json; v2: .zgroup, .zarray, .zattrs)
_ZARR = frozenset({"zarr.json", ".zgroup", ".zarray", ".zattrs"})
#: where the workflow's figure rules keep the executed notebooks (``<stem>.ipynb`` of ``figures/<stem>.*``)
NOTEBOOKS = "notebooks"
CRATE = "ro-crate-metadata.json"
#: written by ``qkdissect fetch`` into the results it unpacked: where they came from (:mod:`.fetch`); the inputs
#: of a fetched bundle that were not published with it (weights, image sets) are not counted as missing
FETCHED = "fetched.json"


def find_artefacts(results: Path) -> tuple[list[Artefact], list[Path]]:
    """Every store, weights manifest and figure under ``results`` (sorted by path; linked folders followed), and
    leftovers of interrupted writes (``*.tmp-*`` / ``*.old-*``), which are never read as results. A figure or
    claims page whose provenance sidecar is gone is an artefact too, with no record; so is a Zarr store that no
    qkdissect command wrote (a ``.zarr`` folder without a ``qkdissect_schema``: status ``unknown``)."""
    found: list[Artefact] = []
    leftovers: list[Path] = []
    seen: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(results, followlinks=True):
        here = Path(dirpath)
        if here.resolve() in seen:  # a link back into the tree
            dirnames.clear()
            continue
        seen.add(here.resolve())
        for d in list(dirnames):
            if _is_partial(d):
                leftovers.append(here / d)
                dirnames.remove(d)
        if here != results and (_ZARR & set(filenames) or here.suffix == ".zarr"):
            attrs = root_attrs(here)
            if attrs.get("qkdissect_schema"):
                prov = dict(attrs.get("provenance") or {})
                art = Artefact(here, str(attrs["qkdissect_schema"]), prov, content=recorded(attrs), attrs=attrs)
                found.append(art)
            else:
                found.append(_unknown_store(here, filenames))
            dirnames.clear()  # a store's arrays are not artefacts
            continue
        found += _files(here, filenames, leftovers)
    return sorted(found, key=lambda a: str(a.path)), sorted(leftovers)


def _unknown_store(here: Path, names: list[str]) -> Artefact:
    """A Zarr store (or a ``.zarr`` folder) under the results that no qkdissect command wrote."""
    what = (
        "a Zarr v2 store"
        if {".zgroup", ".zarray"} & set(names)
        else "a Zarr store without qkdissect's schema attribute"
        if "zarr.json" in names
        else "a .zarr folder that holds no Zarr store"
    )
    art = Artefact(here, "unknown store", {})
    art.add(
        "unknown",
        f"{what}: no qkdissect command wrote it, no record says what it holds, and the workflow never reads it; "
        "move it out of the results folder (or delete it)",
    )
    return art


def _files(here: Path, names: list[str], leftovers: list[Path]) -> list[Artefact]:
    """The manifests and figures of one folder (and its leftovers, added to ``leftovers``)."""
    found: list[Artefact] = []
    orphans: dict[str, list[Path]] = {}  # sidecar name -> the drawn files that have none
    for name in sorted(names):
        f = here / name
        if _is_partial(name):
            leftovers.append(f)
        elif name.endswith(".provenance.json"):
            record = _read_json(f)
            found.append(Artefact(f, "atlas" if record.get("kind") == "atlas" else "figure", record))
        elif name.endswith(".provenance.html"):
            continue
        elif f.suffix in _DRAWN or (f.suffix in (".json", ".html") and _is_claims(f)):
            if not (side := f.with_name(f.stem + ".provenance.json")).exists():
                orphans.setdefault(side.name, []).append(f)
        elif name.endswith(".json") and (data := _read_json(f)).get("qkdissect_manifest"):
            found.append(Artefact(f, "weights manifest", data))
    if INDEX in names and is_atlas(here) and not (here / SIDECAR).exists():
        orphans[SIDECAR] = [here / INDEX]
    for sidecar, files in orphans.items():
        shown = min(files, key=lambda p: (p.suffix not in (".png", ".json"), p.name))
        kind = "atlas" if sidecar == SIDECAR and is_atlas(here) else "claims" if _is_claims(shown) else "figure"
        art = Artefact(shown, kind, {})
        art.add(
            "missing-input",
            f"no provenance: its sidecar {sidecar} is gone, and with it the record of what "
            f"{' and '.join(p.name for p in files)} {'were' if len(files) > 1 else 'was'} made from; "
            "draw it again (`snakemake` does)",
        )
        found.append(art)
    return found


def _is_claims(path: Path) -> bool:
    """The claims page (JSON, and the HTML written beside it): ``{"claims": [...]}``."""
    if path.suffix == ".html":
        path = path.with_suffix(".json")
    return path.suffix == ".json" and isinstance(_read_json(path).get("claims"), list)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


# ----------------------------------------------------------------------------------------- checks
class _Hashes:
    """sha256 of files and trees, and the items of image sets and mask datasets, each read once per audit (a
    weights file, a modes store or an image set is an input of many artefacts)."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[str, dict[str, str]]] = {}
        self._items: dict[tuple[str, str, int | None], list[tuple[str, str | None]] | Exception] = {}

    def __call__(self, path: Path) -> str:
        return self._tree(path)[0]

    def files(self, path: Path) -> dict[str, str]:
        """sha256 of every file of a tree (a store), by path inside it; read with its tree digest."""
        return self._tree(path)[1]

    def _tree(self, path: Path) -> tuple[str, dict[str, str]]:
        key = path.resolve()
        if key not in self._cache:
            self._cache[key] = tree_digests(key)
        return self._cache[key]

    def items(self, role: str, spec: str, limit: int | None) -> list[tuple[str, str | None]]:
        """(id, sha256) of every item of an image set ("images"), a mask dataset or a text corpus, listed again now."""
        key = (role, spec, limit)
        if key not in self._items:
            try:
                if role == "images":
                    from ..data.sources import image_source, source_digests

                    self._items[key] = source_digests(image_source(spec, limit=limit))
                elif role == "text corpus":
                    from ..data.corpora import corpus

                    self._items[key] = corpus(spec, limit=limit).digests()
                else:
                    from ..data.masks import mask_dataset

                    self._items[key] = [(it.id, it.sha256()) for it in mask_dataset(spec, limit=limit).items]
            except Exception as e:  # a folder that is gone, or no longer a dataset
                self._items[key] = e
        got = self._items[key]
        if isinstance(got, Exception):
            raise got
        return got


def _short(digest: str | None) -> str:
    return f"{digest[:12]}…" if digest else "none"


def _code(art: Artefact, allow_dirty: bool) -> None:
    code = art.record.get("code") or {}
    git = code.get("git") or {}
    recorded = code.get("source_sha256")
    commit = git.get("commit")
    if recorded is None:
        art.add("different-code", "no code version recorded (made before qkdissect recorded its source digest)")
    elif recorded != source_sha256():
        art.add(
            "different-code",
            f"made by qkdissect source {_short(recorded)} (commit {str(commit)[:10]}), "
            f"this is {_short(source_sha256())}",
        )
    if git.get("dirty") and not allow_dirty:
        art.add("dirty-tree", f"made from a checkout with uncommitted changes (commit {str(commit)[:10]})")


def _config(art: Artefact, hashes: _Hashes) -> None:
    cfg = art.record.get("config")
    if not cfg:
        return
    files = [Path(f["path"]) for f in cfg.get("files", [])]
    gone = [f for f in files if not f.exists()]
    if gone:
        art.add("missing-input", f"config file {gone[0]} is gone")
        return
    if all(hashes(Path(f["path"])) == f["sha256"] for f in cfg["files"]):
        return
    recorded = cfg.get("values", {})
    now = config_values(files, [k.split("/") for k in recorded])
    for key, value in recorded.items():
        if now.get(key) != value:
            art.add("changed-input", f"config {key} changed: {json.dumps(value)} -> {json.dumps(now.get(key))}")


def _item_changes(art: Artefact, now: list[tuple[str, str | None]]) -> str:
    """Which items of an image set or mask dataset differ from those the store recorded."""
    from ..stores import open_store

    try:
        ds = open_store(art.path)
        text = "passage_id" in ds.coords
        ids, digests = (ds.passage_id, ds.passage_sha256) if text else (ds.image_id, ds.image_sha256)
        before = dict(zip(map(str, ids.values), map(str, digests.values), strict=True))
        dropped = ((ds.attrs.get("images") or {}).get("dedupe") or {}).get("dropped", [])
        before.update({str(d["id"]): d.get("sha256") or "" for d in dropped})  # read too, left out as duplicates
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return ""
    after = {i: d or "" for i, d in now}
    changed = sorted(i for i in before.keys() & after.keys() if before[i] != after[i])
    added, removed = sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys())
    parts = [f"{len(v)} {w} ({', '.join(v[:3])}{', …' if len(v) > 3 else ''})" for w, v in
             (("changed", changed), ("added", added), ("removed", removed)) if v]  # fmt: skip
    return "; ".join(parts)


def _shard_items(art: Artefact, now: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """The items of the set listed again now that a shard store holds (an item gone: no digest)."""
    from ..stores import open_store

    try:
        ids = [str(i) for i in open_store(art.path).image_id.values]
    except (OSError, ValueError, KeyError, AttributeError):
        return now
    found = dict(now)
    return [(i, found.get(i)) for i in ids]


def _items(art: Artefact, dep: dict[str, Any], hashes: _Hashes) -> None:
    role, spec = dep["role"], dep["spec"]
    try:
        now = hashes.items(role, spec, dep.get("limit"))
    except Exception as e:  # a folder that is gone, or no longer a dataset
        art.add("missing-input", f"{role} {spec}: {e}")
        return
    if dep.get("shard"):  # a shard of a pass read only its own images: those of its store, in its order
        now = _shard_items(art, now)
    if items_sha256(now) != dep.get("sha256"):
        detail = _item_changes(art, now)
        art.add("changed-input", f"{role} {spec}: " + (detail or "the items differ from those read"))


def _not_published(art: Artefact, what: str, digest: str | None) -> None:
    """An input of a fetched bundle that is not on this machine: not part of the published results (a weights
    file, an image set); its digest as the run recorded it stands."""
    art.add("ok", f"{what} is not here: not part of the published results (recorded sha256 {_short(digest)})")


def _dependency(art: Artefact, dep: dict[str, Any], hashes: _Hashes, fetched: bool = False) -> None:
    if dep.get("role") in ("images", "mask dataset", "text corpus"):
        if fetched and not _source_here(str(dep.get("spec"))):
            _not_published(art, f"{dep['role']} {dep.get('spec')}", dep.get("sha256"))
            return
        _items(art, dep, hashes)
        return
    path = Path(dep["path"])
    if not path.exists():
        if fetched and not _inside_results(path):
            _not_published(art, f"{dep['role']} {path}", dep.get("sha256"))
            return
        art.add("missing-input", f"{dep['role']} {path} is gone")
        return
    got = hashes(path)
    if got != dep.get("sha256"):
        art.add("changed-input", f"{dep['role']} {path}: sha256 {_short(dep.get('sha256'))} -> {_short(got)}")


def _source_here(spec: str) -> bool:
    """Whether an image set, mask dataset or corpus read from a folder or file is on this machine (a named one
    of the package's, with no path, always is)."""
    path = spec.split(":", 1)[1] if ":" in spec else spec
    path = path.split("@", 1)[-1].split("?", 1)[0]
    return not path.startswith(("/", ".")) or Path(path).exists()


def _inside_results(path: Path) -> bool:
    """Whether a recorded input path names something under the results folder (``results/...``)."""
    return not path.is_absolute() and path.parts[:1] == ("results",)


def dependencies(art: Artefact) -> list[dict[str, Any]]:
    """The inputs an artefact records (a weights manifest's files are its inputs)."""
    if art.kind == "weights manifest":
        return [{"role": f["role"], "path": f["path"], "sha256": f["sha256"]} for f in art.record.get("files", [])]
    return list(art.record.get("dependencies", []))


def _outputs(art: Artefact, hashes: _Hashes) -> None:
    for name, digest in (art.record.get("outputs") or {}).items():
        out = art.path.with_name(name)
        if not out.exists():
            art.add("missing-input", f"{out} (the {art.kind} itself) is gone")
        elif hashes(out) != digest:
            art.add("modified", f"{out} was changed after it was made")


def _listed(names: list[str], what: str) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"{'chunks' if len(names) > 1 else 'chunk'} {shown} {what}"


def _content(art: Artefact, hashes: _Hashes) -> None:
    """A store's files against the digests it recorded when it was written."""
    if art.content is None:
        art.add("missing-input", "no content digest recorded (made before qkdissect recorded one): make it again")
        return
    now = {k: v for k, v in hashes.files(art.path).items() if k != "zarr.json"}
    diff = differences(now, art.content)
    if diff["changed"]:
        art.add("modified", _listed(diff["changed"], "changed after the store was written"))
    if diff["added"]:
        art.add("modified", _listed(diff["added"], "added after the store was written"))
    if diff["gone"]:
        art.add("missing-input", _listed(diff["gone"], "gone: the store does not open"))
    stale = stale_metadata(art.path)
    if stale:
        shown = ", ".join(stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        art.add("modified", f"the consolidated metadata (root zarr.json) of {shown} is not the array's own")
    if recorded_attributes(art.attrs) is None:
        art.add(
            "ok",
            "its root attributes are not in its content record (written before qkdissect recorded them): they "
            "cannot be checked; make it again to have them checked",
        )
    elif changed := attributes_line(changed_attributes(art.attrs)):
        art.add("modified", f"{changed} after the store was written (root zarr.json): it does not open")


def crate_digests(results: Path) -> dict[str, str] | None:
    """{id inside the crate: sha256} of every file or folder the results folder's RO-Crate lists with a digest;
    None where there is no crate, {} where it cannot be read."""
    path = results / CRATE
    if not path.is_file():
        return None
    graph = _read_json(path).get("@graph")
    if not isinstance(graph, list):
        return {}
    return {
        str(e["@id"]): str(e["sha256"])
        for e in graph
        if isinstance(e, dict) and isinstance(e.get("@id"), str) and e.get("sha256") and not e["@id"].startswith("#")
    }


def executed_notebook(art: Artefact, results: Path) -> Path | None:
    """Where the workflow keeps the executed notebook of a figure (its sidecar's, or its PNG's where the sidecar is
    gone; the claims page and the atlas have none)."""
    if art.kind != "figure":
        return None
    name = art.path.name
    stem = name.removesuffix(".provenance.json") if name.endswith(".provenance.json") else art.path.stem
    return results / NOTEBOOKS / f"{stem}.ipynb"


def _notebook(art: Artefact, results: Path, listed: dict[str, str] | None, hashes: _Hashes) -> None:
    """A figure's executed notebook against the sha256 the RO-Crate lists (nothing else records it: papermill
    writes it after the figure's own record)."""
    nb = executed_notebook(art, results)
    if nb is None:
        return
    rel = nb.relative_to(results).as_posix()
    digest = (listed or {}).get(rel)
    if digest is None:
        if nb.exists():
            art.add(
                "unknown",
                f"its executed notebook {rel} is not in the RO-Crate ({CRATE}: "
                f"{'none there' if listed is None else 'written before it'}), which alone records its digest: "
                "run `snakemake` (it writes the crate at the end)",
            )
    elif not nb.exists():
        art.add("missing-input", f"its executed notebook {rel}, listed in the RO-Crate, is gone")
    elif hashes(nb) != digest:
        art.add(
            "modified",
            f"its executed notebook {rel} is not the one the RO-Crate lists (sha256 {_short(digest)} there, "
            f"{_short(hashes(nb))} now): edited, or drawn again after the crate was written",
        )


def _covered(arts: list[Artefact], results: Path) -> set[str]:
    """The crate ids whose content the artefacts' own records cover (stores, manifests, figures' outputs and
    executed notebooks)."""
    out: set[str] = set()
    for a in arts:
        for p in (a.path, *(a.path.with_name(n) for n in a.record.get("outputs") or {}), executed_notebook(a, results)):
            if p is None:
                continue
            with contextlib.suppress(ValueError):
                rel = p.relative_to(results).as_posix()
                out.update((rel, rel + "/"))
    return out


def _crate(results: Path, listed: dict[str, str], arts: list[Artefact], hashes: _Hashes) -> Artefact:
    """The RO-Crate itself: every part it lists with a sha256 that no record of its own covers (the run's config
    files and workflow copied into ``run/``), against that digest."""
    art = Artefact(results / CRATE, "RO-Crate", {})
    if not listed:
        art.add("modified", f"{CRATE} lists nothing with a sha256 (not an RO-Crate qkdissect wrote): write it again")
        return art
    covered = _covered(arts, results)
    folders = tuple(k for k in listed if k.endswith("/"))
    for rel, digest in sorted(listed.items()):
        if rel in covered or (rel.startswith(folders) and not rel.endswith("/")):  # a file of a listed folder: the
            continue  # folder's own digest (or a store's content record) checks it
        path = results / rel.rstrip("/")
        if not path.exists():
            art.add("missing-input", f"{rel}, listed in the crate, is gone")
        elif hashes(path) != digest:
            art.add("modified", f"{rel} was changed after the crate was written (sha256 {_short(digest)} in it)")
    return art


def _stray_notebooks(results: Path, arts: list[Artefact]) -> list[Artefact]:
    """Executed notebooks that belong to no figure of the results folder."""
    folder = results / NOTEBOOKS
    if not folder.is_dir():
        return []
    mine = {executed_notebook(a, results) for a in arts}
    found = []
    for nb in sorted(folder.glob("*.ipynb")):
        if nb not in mine:
            art = Artefact(nb, "executed notebook", {})
            art.add(
                "unknown",
                f"no figure {nb.stem}.provenance.json beside it in figures/: nothing records what drew it; "
                "delete it, or draw its figure again (`snakemake`)",
            )
            found.append(art)
    return found


def check_own(art: Artefact, hashes: _Hashes, results: Path, listed: dict[str, str] | None) -> None:
    """An artefact's own files against what was recorded when it was made (a store's content record, a figure's
    outputs, its executed notebook against the RO-Crate): what the workflow remakes when it changed in place."""
    if art.findings:  # found without a record (a figure whose sidecar is gone, an unknown store)
        return
    if art.path.is_dir():  # a store
        _content(art, hashes)
    if art.kind in ("figure", "atlas"):
        _outputs(art, hashes)
        _notebook(art, results, listed, hashes)


def _check(
    art: Artefact,
    hashes: _Hashes,
    allow_dirty: bool,
    results: Path,
    listed: dict[str, str] | None,
    fetched: bool = False,
) -> None:
    if art.findings:  # found without a record (a figure whose sidecar is gone): nothing to re-check
        return
    check_own(art, hashes, results, listed)
    if not art.record:
        art.add("missing-input", "no provenance recorded")
        return
    _code(art, allow_dirty)
    _config(art, hashes)
    if art.kind != "weights manifest" and "dependencies" not in art.record:
        art.add("missing-input", "no dependencies recorded (made before qkdissect recorded them)")
    for dep in dependencies(art):
        _dependency(art, dep, hashes, fetched)


def _propagate(arts: list[Artefact]) -> None:
    """An artefact made from one whose inputs changed is out of date too (transitively)."""
    by_path = {a.path.resolve(): a for a in arts}
    changed = True
    while changed:
        changed = False
        for a in arts:
            for dep in dependencies(a):
                up = by_path.get(Path(dep["path"]).resolve()) if "path" in dep else None
                if up is None or up is a or up.status not in _PROPAGATES:
                    continue
                msg = f"made from {up.path}, which is {up.status}"
                if all(f.message != msg for f in a.findings):
                    a.add("changed-input", msg)
                    changed = True


@contextlib.contextmanager
def _inside(root: Path) -> Iterator[None]:
    """Relative paths in records are relative to the workflow's working directory (the results folder's parent)."""
    old = Path.cwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(old)


def audit(results: str | Path, *, allow_dirty: bool = False, root: str | Path | None = None) -> list[Artefact]:
    """Check every artefact under ``results``; relative paths in the records are taken from ``root`` (default:
    the folder holding ``results``, the workflow's working directory)."""
    given = Path(results).absolute()
    results = given.resolve()
    if not results.is_dir():
        raise QKDissectError(f"no results folder at {given}: give the folder the workflow wrote (default: results)")
    arts, leftovers = find_artefacts(results)
    if not arts:
        raise QKDissectError(
            f"no artefacts under {given}: no store, weights manifest or figure (is this the results folder? "
            "run the workflow first)"
        )
    hashes = _Hashes()
    listed = crate_digests(results)
    fetched = (results / FETCHED).is_file()
    # the folder holding results/ as it was given (a link to results elsewhere leads there from the working dir)
    with _inside(Path(root).resolve() if root else given.parent):
        for a in arts:
            _check(a, hashes, allow_dirty, results, listed, fetched)
        _propagate(arts)
    arts += _stray_notebooks(results, arts)
    if listed is not None:
        arts.append(_crate(results, listed, arts, hashes))
    for p in leftovers:
        note = Finding("ok", "leftover of an interrupted write: never read as a result, safe to delete")
        arts.append(Artefact(p, "partial write", {}, [note]))
    return arts


def format_table(arts: list[Artefact], base: Path) -> str:
    """The human-readable report: one line per artefact, its findings indented below."""
    lines = []
    width = max((len(s) for s in STATUSES), default=10)
    for a in arts:
        try:
            shown = a.path.resolve().relative_to(base.resolve())
        except ValueError:
            shown = a.path
        lines.append(f"{a.status:<{width}}  {shown}  [{a.kind}]")
        lines += [f"{'':<{width}}    {f.status}: {f.message}" for f in a.findings]
    counts = {s: sum(a.status == s for a in arts if a.kind != "partial write") for s in STATUSES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no artefacts found")
    return "\n".join(lines)
