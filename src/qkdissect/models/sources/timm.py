"""``timm:NAME`` (timm's pretrained weights, through the Hugging Face hub cache) and ``timm:NAME@FILE`` (a timm
architecture and a local checkpoint: .safetensors, .pth, .bin)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import CheckpointReadError, QKDissectError, UnknownModelError, WeightsUnavailableError
from ...util.hashing import sha256_file
from ..hubcache import download_again
from ..spec import ModelSpec, local_path
from .base import (
    LoadedModel,
    Resolved,
    Source,
    checkpoint_file,
    file_record,
    hub_offline,
    load_checkpoint_into,
    option_error,
    read_state_dict,
    register,
)
from .hf import cached_hub_file, resolve_hub

if TYPE_CHECKING:
    import torch


def parse(rest: str, part: str, options: tuple[tuple[str, Any], ...]) -> ModelSpec:
    name, at, weights = rest.partition("@")
    return ModelSpec("timm", name, local_path(weights, "timm weights file") if at else None, options=options)


def resolve(spec: ModelSpec, name: str) -> Resolved:
    if spec.weights is not None:
        if not spec.weights.exists():
            raise WeightsUnavailableError(f"{name}: weights file {spec.weights} does not exist")
        return [file_record(checkpoint_file(spec.weights, name), "weights")], None, "local file"
    hub_id = _hub_id(spec.name, name)
    files, revision = resolve_hub(hub_id, HUB_FILES, name)
    return files, revision, "timm weights from the Hugging Face hub cache"


def availability(spec: ModelSpec) -> str:
    if spec.weights is not None:
        return "local file" if spec.weights.exists() else f"missing: put it at {spec.weights}"
    try:
        hub_id = _hub_id(spec.name, str(spec))
    except QKDissectError:
        return "unknown"
    return "hub cache" if any(cached_hub_file(hub_id, f) for f in HUB_FILES) else "not cached (needs the hub)"


#: the weights files of timm models on the hub, in the order timm looks for them
HUB_FILES = ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin")


def _hub_id(arch: str, name: str) -> str:
    import timm

    if not timm.is_model(arch.split(".")[0]):
        raise UnknownModelError(arch, timm.list_models(), "not a timm architecture")
    cfg = timm.models.get_pretrained_cfg(arch)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        raise WeightsUnavailableError(
            f"{name}: timm:{arch} has no Hugging Face hub id; download its weights yourself and use "
            f"timm:{arch}@/path/to/weights"
        )
    return str(hub_id)


def load_timm(spec: ModelSpec) -> LoadedModel:
    import timm

    base = spec.name.split(".")[0]
    if not timm.is_model(base):
        raise UnknownModelError(base, timm.list_models(), "not a timm architecture")
    if spec.weights is not None:
        checkpoint_file(spec.weights, f"timm:{spec.name}")
        model = _create(spec, pretrained=False)
        state = read_state_dict(spec.weights)
        state = _resample_pos_embed_if_needed(model, state)
        load_checkpoint_into(model, state, spec.weights, f"timm:{spec.name}")
        return LoadedModel(spec, model.eval(), spec.weights, sha256_file(spec.weights), origin="local file")
    _check_options(spec)  # an option the model does not take is named before any weights are looked for
    try:
        if hub_offline():
            _require_timm_cache(spec.name)
        model = _create(spec, pretrained=True)
    except Exception as e:  # hub errors differ between versions; keep the cause
        if isinstance(e, QKDissectError):
            raise
        damaged = _damaged_cache_file(spec.name, e)
        if damaged is not None:
            raise damaged from e
        raise WeightsUnavailableError(
            f"pretrained weights for timm:{spec.name} are not available here ({type(e).__name__}: {e}). "
            "On a machine with internet they download into the Hugging Face cache ($HF_HOME, default "
            "~/.cache/huggingface); offline (HF_HUB_OFFLINE=1) they must already be in that cache. Or pass a "
            f"local file: timm:{spec.name}@/path/to/weights.safetensors"
        ) from e
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return LoadedModel(
        spec, model.eval(), revision=str(cfg.get("hf_hub_id") or cfg.get("url") or ""), origin="timm hub"
    )


def _create(spec: ModelSpec, pretrained: bool) -> Any:
    """``timm.create_model`` with the spec's options; an option the model does not take, or options that make it
    too big to build, named in one line."""
    import timm

    try:
        return timm.create_model(spec.name, pretrained=pretrained, **spec.kwargs)
    except (TypeError, RuntimeError, MemoryError) as e:
        err = option_error(f"timm:{spec.name}", spec.options, e, lambda cls: _timm_class(spec.name, cls))
        if err is None:
            raise
        raise err from e


def _check_options(spec: ModelSpec) -> None:
    """Build the model on the meta device (no memory, no weights) to name an option it does not take; any other
    error of that build is left to the real one (some models cannot be built on the meta device)."""
    if not spec.options:
        return
    import torch

    try:
        with torch.device("meta"):
            _create(spec, pretrained=False)
    except QKDissectError:
        raise
    except Exception:
        return


def _timm_class(arch: str, name: str) -> type | None:
    """The class ``name`` among timm's modules, the module of the architecture ``arch`` first."""
    import sys

    import timm

    own = timm.models.model_entrypoint(arch.split(".")[0]).__module__
    modules = [sys.modules.get(own), *(m for k, m in list(sys.modules.items()) if k.startswith("timm.models"))]
    found = [getattr(m, name, None) for m in modules if m is not None]
    return next((c for c in found if isinstance(c, type)), None)


def _damaged_cache_file(arch: str, e: Exception) -> CheckpointReadError | None:
    """A weights file in the hub cache that safetensors cannot read (cut short, its header damaged), named: it is
    there, only damaged (not "not available")."""
    from safetensors import SafetensorError

    if not isinstance(e, SafetensorError):
        return None
    try:
        hub_id = _hub_id(arch, arch)
    except QKDissectError:
        return None
    path = next((p for f in HUB_FILES if f.endswith(".safetensors") and (p := cached_hub_file(hub_id, f))), None)
    return CheckpointReadError(path, e, download_again(path)) if path else None


def _resample_pos_embed_if_needed(model: Any, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    pe = state.get("pos_embed")
    own = getattr(model, "pos_embed", None)
    if pe is None or own is None or pe.shape == own.shape:
        return state
    from timm.layers import resample_abs_pos_embed

    n_prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 1))
    state = dict(state)
    state["pos_embed"] = resample_abs_pos_embed(pe, list(model.patch_embed.grid_size), num_prefix_tokens=n_prefix)
    return state


def _require_timm_cache(name: str) -> None:
    """Offline: fail at once (no network retries) unless timm's hub weights are in the cache."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = (getattr(cfg, "hf_hub_id", None) or "") if cfg is not None else ""
    for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        if hub_id and isinstance(try_to_load_from_cache(hub_id, fname), str):
            return
    raise OSError(f"HF_HUB_OFFLINE is set and {hub_id or name} is not in the Hugging Face cache")


SOURCE = register(Source("timm", parse, load_timm, resolve, availability))
