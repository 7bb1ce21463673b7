"""Where a model's tokens sit (prefix tokens, patch grid, causal or not), without torch: the adapters read it off a
built model, :mod:`.weightfile` off a weights file and its configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.rotary import Rotary
from ..options import PREFIX_KINDS

__all__ = ["PREFIX_KINDS", "TokenLayout", "as_pair", "describe_qk", "prefix_kinds", "rotary_group_notes"]


def prefix_kinds(cls: int = 0, distillation: int = 0, registers: int = 0) -> tuple[str, ...]:
    """The kind of each prefix token, in sequence order (CLS, then distillation, then registers)."""
    return ("cls",) * cls + ("distillation",) * distillation + ("register",) * registers


@dataclass(frozen=True)
class TokenLayout:
    """Where the patch tokens sit in the sequence: ``n_prefix`` leading tokens (CLS, distillation,
    registers), then ``grid[0] * grid[1]`` patches in row-major order. Text models have no grid; ``causal``
    marks decoders, whose query i attends to keys j <= i only. ``prefix_kinds`` names each prefix token by its
    kind (:data:`PREFIX_KINDS`), in sequence order; the adapters read it off the model."""

    n_prefix: int
    grid: tuple[int, int] | None
    patch_size: tuple[int, int] | None = None
    causal: bool = False
    prefix_kinds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        bad = [k for k in self.prefix_kinds if k not in PREFIX_KINDS]
        if len(self.prefix_kinds) != self.n_prefix or bad:
            raise ValueError(
                f"{self.n_prefix} prefix tokens named {list(self.prefix_kinds)}: name each one of "
                f"{', '.join(PREFIX_KINDS)}"
            )

    @property
    def modality(self) -> str:
        return "image" if self.grid is not None else "text"


def as_pair(x: Any) -> tuple[int, int] | None:
    if x is None:
        return None
    if isinstance(x, int):
        return (x, x)
    return (int(x[0]), int(x[1]))


def describe_qk(
    model_id: str, adapter: str, shape: tuple[int, int, int, int], layout: TokenLayout, notes: list[str]
) -> dict[str, Any]:
    """What the provenance says about a model's query-key weights; ``shape``: (layers, heads, d_head, d_model)."""
    n_layers, n_heads, d_head, d_model = shape
    return {
        "model_id": model_id,
        "adapter": adapter,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "d_head": d_head,
        "d_model": d_model,
        "n_prefix_tokens": layout.n_prefix,
        "prefix_tokens": list(layout.prefix_kinds),
        "grid": list(layout.grid) if layout.grid else None,
        "patch_size": list(layout.patch_size) if layout.patch_size else None,
        "modality": layout.modality,
        "causal": layout.causal,
        "notes": list(notes),
    }


#: the note of a model whose attention adds a relative position bias (BEiT, SimMIM: timm's Beit)
REL_POS_NOTE = "relative position bias is added to the logits; it does not depend on token content"


def rotary_group_notes(rotary: Rotary | None, kv_heads: list[int]) -> list[str]:
    """What a decoder's modes store notes of its rotary embedding (the modes are those at one offset; a partial
    rotary; per-layer frequencies) and of its grouped-query heads, whichever path read its weights."""
    notes = []
    if rotary is not None:
        notes.append(
            "rotary position embedding (RoPE): q and k are rotated by position after their projections, so the "
            "interaction depends on the offset d between query and key; these modes are its value at the offset "
            "in attrs.offset (0 when not given: two tokens at the same position), W_q^T R(-d) W_k"
        )
        if rotary.rotary_dim < rotary.d_head:
            notes.append(
                f"partial rotary: only the first {rotary.rotary_dim} of each head's {rotary.d_head} dimensions turn; "
                "the others pass unchanged (attrs.rotary.rotary_dim)"
            )
        if rotary.per_layer_only:
            notes.append(
                f"every layer turns at its own frequencies ({rotary.source}; attrs.rotary.inv_freq per layer): "
                "the modes at an offset use each layer's own"
            )
    if len(set(kv_heads)) < len(kv_heads):
        notes.append(
            f"grouped-query attention: {len(kv_heads)} query heads share {len(set(kv_heads))} key-value heads; "
            "each query head is paired with its own key head (coordinate kv_head)"
        )
    return notes
