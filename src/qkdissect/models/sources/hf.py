"""``hf:ORG/NAME`` (a Hugging Face hub id, from the ``HF_HOME`` cache; ``HF_HUB_OFFLINE`` respected), a bare
``ORG/NAME``, and ``hf:/path/to/dir`` (a local ``save_pretrained`` directory)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import CheckpointReadError, QKDissectError, WeightsUnavailableError
from ...locations import HF_EXTRA_FILES, HF_WEIGHT_FILES
from ...util.hashing import sha256_file
from ..hubcache import check_blob, download_again, read_config, snapshot_revision
from ..load_report import load_report, quiet_load_report, random_weights
from ..spec import ModelSpec, hf_spec
from .base import LoadedModel, Resolved, Source, file_record, hub_offline, option_error, register

if TYPE_CHECKING:
    from torch import nn


def parse(rest: str, part: str, options: tuple[tuple[str, Any], ...]) -> ModelSpec:
    return hf_spec(rest, options)


WEIGHT_FILES = HF_WEIGHT_FILES
EXTRA_FILES = HF_EXTRA_FILES


def resolve(spec: ModelSpec, name: str) -> Resolved:
    if spec.weights is not None:
        d = Path(spec.weights)
        if not d.is_dir():
            raise WeightsUnavailableError(f"{name}: local Hugging Face model directory {d} does not exist")
        files = [file_record(d / f, f) for f in EXTRA_FILES if (d / f).exists()]
        weights = [d / f for f in WEIGHT_FILES if (d / f).exists()]
        if not weights:
            raise WeightsUnavailableError(f"{name}: {d} has no {' or '.join(WEIGHT_FILES)}")
        return [*files, file_record(weights[0], "weights")], None, "local directory"
    files, revision = resolve_hub(spec.name, WEIGHT_FILES, name)
    return files, revision, "Hugging Face hub cache"


def availability(spec: ModelSpec) -> str:
    if spec.weights is not None:
        return "local directory" if Path(spec.weights).exists() else "missing"
    try:
        cached = any(cached_hub_file(spec.name, f) for f in WEIGHT_FILES)
    except Exception:  # a broken cache must not break the listing
        return "unknown"
    return "hub cache" if cached else "not cached (needs the hub)"


def cached_hub_file(repo_id: str, filename: str) -> str | None:
    """The path of a hub file in the cache, or None (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename)
    return hit if isinstance(hit, str) else None


def load_hf(spec: ModelSpec) -> LoadedModel:
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModel

    target = str(spec.weights) if spec.weights is not None else spec.name
    if spec.weights is not None and not spec.weights.exists():
        raise WeightsUnavailableError(f"local Hugging Face model directory {spec.weights} does not exist")
    config_file = _here(spec, "config.json")
    if config_file is not None:
        read_config(config_file)  # not JSON: named, not blamed on the hub (transformers says it is not available)
    offline = hub_offline()
    try:
        config = AutoConfig.from_pretrained(target, local_files_only=offline)
        with quiet_load_report():  # the heads a checkpoint has and the base model not: recorded, not printed
            model, info = AutoModel.from_pretrained(
                target, config=config, local_files_only=offline, output_loading_info=True, **spec.kwargs
            )
    except StrictDataclassError as e:  # a setting of the wrong type (hidden_size: "abc")
        raise _bad_setting(config_file or Path(target, "config.json"), e) from e
    except SafetensorError as e:  # a weights file cut short or damaged
        raise _damaged_weights(spec, e) from e
    except OSError as e:
        raise WeightsUnavailableError(
            f"Hugging Face model {target!r} is not available here"
            + (" (HF_HUB_OFFLINE is set)" if offline else "")
            + f": {e}. Download it on a machine with internet (`hf download {spec.name}`) into the cache "
            "($HF_HOME, default ~/.cache/huggingface) and copy the cache here, or save it with "
            "save_pretrained and pass hf:/path/to/dir."
        ) from e
    except (TypeError, RuntimeError, MemoryError) as e:  # an option of the spec the model does not take, or too big
        err = option_error(f"hf:{target}", spec.options, e, _transformers_class)
        if err is None:
            raise
        raise err from e
    wpath = _hf_weights_file(model, target)
    revision = getattr(config, "_commit_hash", None) or snapshot_revision(wpath)
    report = load_report(info)
    random_weights(report, f"hf:{target}")
    return LoadedModel(
        spec,
        model.eval(),
        weights_path=wpath,
        weights_sha256=sha256_file(wpath) if wpath else None,
        revision=revision,
        origin="local directory" if spec.weights is not None else "hugging face hub cache",
        load_report=report,
    )


def _here(spec: ModelSpec, filename: str) -> Path | None:
    """A file of the model on this machine: in its local directory, or in the hub cache (never downloads)."""
    if spec.weights is not None:
        return spec.weights / filename if (spec.weights / filename).is_file() else None
    try:
        hit = cached_hub_file(spec.name, filename)
    except ValueError:  # not a hub id: transformers says so
        return None
    return Path(hit) if hit else None


def _bad_setting(config: Path, e: Exception) -> QKDissectError:
    """huggingface_hub's validation of a configuration (``Validation error for field 'x':\n TypeError: Field 'x'
    expected int, got str (value: 'abc')``) as one line naming the file and the setting."""
    field = re.search(r"field '([^']+)'", str(e))
    cause = str(e.__cause__ or e).strip()
    if field:
        cause = re.sub(rf"^Field '{re.escape(field.group(1))}'\s*", "", cause)
    what = f"field '{field.group(1)}': " if field else ""
    fix = download_again(config) or "save the model again (save_pretrained)"
    return QKDissectError(f"{config}: {what}{' '.join(cause.split())}: correct it, or {fix}")


def _damaged_weights(spec: ModelSpec, e: Exception) -> CheckpointReadError:
    """The weights file that safetensors cannot read (transformers does not name it): the first of the model's
    folder that fails to open."""
    from safetensors import SafetensorError, safe_open

    weights = _here(spec, "model.safetensors") or _here(spec, "config.json")
    folder = weights.parent if weights is not None else Path(str(spec.weights or spec.name))
    for f in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            safe_open(str(f), framework="numpy")
        except SafetensorError as err:
            return CheckpointReadError(f, err, download_again(f))
    return CheckpointReadError(folder, e, download_again(folder / "model.safetensors"))


def _transformers_class(name: str) -> type | None:
    import transformers

    try:
        found = getattr(transformers, name, None)
    except Exception:  # (a class whose optional dependencies are missing)
        return None
    return found if isinstance(found, type) else None


def _hf_weights_file(model: nn.Module, target: str) -> Path | None:
    p = Path(target)
    roots = [p] if p.is_dir() else []
    name_or_path = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", "")
    if name_or_path and Path(name_or_path).is_dir():
        roots.append(Path(name_or_path))
    if not roots:
        try:
            from huggingface_hub import try_to_load_from_cache

            for fname in ("model.safetensors", "pytorch_model.bin"):
                hit = try_to_load_from_cache(target, fname)
                if isinstance(hit, str):
                    return Path(hit)
        except Exception:
            return None
    for r in roots:
        for fname in ("model.safetensors", "pytorch_model.bin"):
            if (r / fname).exists():
                return r / fname
    return None


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


def resolve_hub(repo_id: str, weight_files: tuple[str, ...], what: str) -> tuple[list[dict[str, Any]], str | None]:
    try:
        files: list[dict[str, Any]] = []
        revision = None
        for fname in EXTRA_FILES:
            got = _hub_file(repo_id, fname)
            if got:
                files.append(_cache_record(Path(got), fname))
                revision = revision or snapshot_revision(got)
        for fname in weight_files:
            got = _hub_file(repo_id, fname)
            if got:
                files.append(_cache_record(Path(got), "weights"))
                return files, revision or snapshot_revision(got)
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


def _cache_record(path: Path, role: str) -> dict[str, Any]:
    """The manifest's entry of a hub cache file, whose content must be what the cache's name for it says (and a
    config.json must be JSON)."""
    rec = file_record(path, role)
    check_blob(path, rec["sha256"])
    if path.name == "config.json":
        read_config(path)
    return rec


_HUB_ADVICE = (
    " On a machine with internet run `hf download {repo}` (cache: $HF_HOME, default ~/.cache/huggingface) and "
    "copy the cache here, or point the model's spec at a local copy (hf:/path/to/dir, timm:NAME@/path/to/file)."
)


SOURCE = register(Source("hf", parse, load_hf, resolve, availability))
