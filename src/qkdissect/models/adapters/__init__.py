"""One adapter per architecture family: it turns a loaded ``nn.Module`` into :class:`~qkdissect.models.qk.QKWeights`
(per layer the query and key weights split per head exactly as the model splits them, the biases, the norm
module that feeds the attention, the logit scale, and the token layout)."""

from __future__ import annotations

from torch import nn

from ...errors import UnsupportedModelError
from ..qk import QKWeights
from ..sources.base import is_hf_model
from .hf import adapt_hf
from .timm import adapt_timm


def extract_qk(model: nn.Module, model_id: str = "model") -> QKWeights:
    """Dispatch to the adapter of the model's family."""
    if is_hf_model(model):
        return adapt_hf(model, model_id)
    if hasattr(model, "blocks"):
        return adapt_timm(model, model_id)
    raise UnsupportedModelError(
        f"no adapter for {type(model).__module__}.{type(model).__name__}: supported are timm models with "
        "`blocks` (VisionTransformer, Eva, Beit) and Hugging Face ViT/DeiT/Dinov2/CLIP encoders"
    )
