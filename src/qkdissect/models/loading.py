"""From a spec (or a model object already in memory) to a loaded model and its query-key weights."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..catalogue import KNOWN_MODELS
from .adapters import extract_qk
from .qk import QKWeights
from .sources import REGISTRY, LoadedModel, parse_spec
from .spec import ModelSpec

__all__ = ["ModelLike", "availability", "describe_loaded", "in_memory", "load_model", "load_qk", "parse_spec"]


def load_model(spec: str | ModelSpec) -> LoadedModel:
    """Load a model from its spec, on CPU, in eval mode."""
    s = parse_spec(spec)
    return REGISTRY[s.source].load(s)


def in_memory(model: nn.Module, name: str | None = None) -> LoadedModel:
    """A timm or Hugging Face model object already in memory, as a loaded model (its weights are not a file: the
    provenance records its class and a digest of its state dict instead)."""
    from .sources.wheels import state_dict_digest

    cls = f"{type(model).__module__}.{type(model).__name__}"
    spec = ModelSpec("object", name or type(model).__name__)
    digest = state_dict_digest(model.state_dict())
    return LoadedModel(
        spec, model.eval(), None, None, revision=f"state dict digest {digest}", origin=f"in memory: {cls}"
    )


#: what every step takes as "the model": a spec string, a parsed spec, or a model object already in memory
ModelLike = str | ModelSpec | nn.Module


def load_qk(spec: ModelLike) -> tuple[QKWeights, LoadedModel]:
    """Load a model (or take one in memory) and extract its query-key weights."""
    loaded = in_memory(spec) if isinstance(spec, nn.Module) else load_model(spec)
    return extract_qk(loaded.model, str(loaded.spec)), loaded


def availability(key: str) -> str:
    """Whether the weights of a known model are on this machine, without downloading anything."""
    spec = parse_spec(KNOWN_MODELS[key].spec)
    return REGISTRY[spec.source].availability(spec)


def describe_loaded(loaded: LoadedModel) -> dict[str, Any]:
    """What the provenance says about the weights a model was loaded from."""
    return {
        "spec": str(loaded.spec),
        "origin": loaded.origin,
        "path": str(loaded.weights_path) if loaded.weights_path else None,
        "sha256": loaded.weights_sha256,
        "revision": loaded.revision,
        "model_class": f"{type(loaded.model).__module__}.{type(loaded.model).__name__}",
        **({"load_report": loaded.load_report} if loaded.load_report else {}),
    }
