"""The architecture families qkdissect decomposes, and what is exact for each: ``qkdissect models --families``.

Every row marked exact names the test that proves it: the modes (at every offset, for rotary models), plus the
bias terms, give the family's own attention logits for every pair of tokens, on a stand-in of its real
configuration (its library's own classes, random weights) or on real weights. A row marked refused is a family
qkdissect stops on with one line naming what it does not decompose; nothing is ever computed silently. This
module imports nothing heavy: the table answers at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """One architecture family: its library, how its attention is built, what qkdissect does with it, and the
    test that proves it (``file::test[case]``)."""

    name: str
    library: str
    attention: str
    status: str  # exact | refused
    what: str
    test: str


_ROPE_2D = "tests/test_rotary2d.py::test_modes_at_every_offset_reconstruct_every_pair_of_tokens"
_ROPE_1D = "tests/test_rotary.py::test_stand_ins_of_rotary_families_reconstruct_their_logits"
FAMILIES: tuple[Family, ...] = (
    Family("ViT, DeiT (distilled), DINO, CLIP towers", "timm", "absolute positions", "exact",
           "W_q^T W_k, biases as their own terms", "tests/test_adapters.py::test_timm_adapter_reproduces_logits[vit]"),
    Family("DINOv2 with registers", "timm", "absolute positions, 4 registers", "exact",
           "W_q^T W_k; registers are prefix tokens",
           "tests/test_adapters.py::test_timm_adapter_reproduces_logits[dinov2-registers]"),
    Family("DINOv2-S/14 (real weights)", "timm", "absolute positions", "exact", "W_q^T W_k, at 224 and 518 px",
           "tests/test_adapters.py::test_real_dinov2_timm_reproduces_logits[224]"),
    Family("BEiT", "timm", "relative position bias", "exact", "W_q^T W_k; the bias table adds a content-free term",
           "tests/test_adapters.py::test_timm_adapter_reproduces_logits[beit]"),
    Family("EVA (absolute positions)", "timm", "absolute positions", "exact", "W_q^T W_k",
           "tests/test_adapters.py::test_timm_adapter_reproduces_logits[eva]"),
    Family("DINOv3", "timm", "2-D RoPE (rotate-half, normalised coordinates), CLS + 4 registers unrotated",
           "exact", "W_q^T R(-d) W_k at every (dy, dx); prefix tokens at the grid centre", f"{_ROPE_2D}[dinov3]"),
    Family("EVA-02", "timm", "2-D RoPE (interleaved, index rescaled to 16 x 16)", "exact",
           "W_q^T R(-d) W_k at every (dy, dx)", f"{_ROPE_2D}[eva02]"),
    Family("RoPE-ViT axial", "timm", "2-D RoPE (interleaved)", "exact", "W_q^T R(-d) W_k at every (dy, dx)",
           f"{_ROPE_2D}[rope-vit-axial]"),
    Family("RoPE-ViT mixed", "timm", "2-D RoPE, learned frequencies per layer and head", "exact",
           "W_q^T R(-d) W_k at every (dy, dx)", f"{_ROPE_2D}[rope-vit-mixed]"),
    Family("Perception Encoder", "timm", "2-D RoPE (interleaved, index rescaled to 24 x 24)", "exact",
           "W_q^T R(-d) W_k at every (dy, dx)", f"{_ROPE_2D}[pe]"),
    Family("ViT, DeiT, DINOv2, CLIP vision", "transformers", "absolute positions", "exact",
           "W_q^T W_k, biases as their own terms", "tests/test_adapters.py::test_hf_adapter_reproduces_logits[vit]"),
    Family("BERT-style encoders, GPT-2", "transformers", "absolute positions (post-LayerNorm for BERT)", "exact",
           "W_q^T W_k, LayerNorm folding exact too",
           "tests/test_text.py::test_text_adapters_reproduce_logits_and_fold_exactly"),
    Family("Llama (stories260K, real weights)", "transformers", "1-D RoPE, 8 query on 4 key-value heads", "exact",
           "W_q^T R(-d) W_k at every offset; each query head with its key head",
           "tests/test_rotary.py::test_stories260k_logits_are_the_modes_at_each_offset"),
    Family("Mistral", "transformers", "1-D RoPE, grouped-query heads", "exact", "as Llama", f"{_ROPE_1D}[mistral]"),
    Family("Qwen2", "transformers", "1-D RoPE, grouped-query heads, q and k biases", "exact",
           "as Llama, the biases rotated alike", f"{_ROPE_1D}[qwen2]"),
    Family("Llama multi-query", "transformers", "1-D RoPE, one key-value head", "exact", "as Llama",
           f"{_ROPE_1D}[llama]"),
    Family("Qwen3", "transformers", "1-D RoPE, QK-norm per head", "exact",
           "W_q^T diag(g_q) R(-d) diag(g_k) W_k; a positive factor per pair recorded",
           "tests/test_rotary.py::test_qk_norm_gains_are_in_the_modes_and_the_factor_is_recorded[qwen3]"),
    Family("OLMo 2", "transformers", "1-D RoPE, QK-norm over all heads, post-norm blocks", "exact", "as Qwen3",
           "tests/test_rotary.py::test_qk_norm_gains_are_in_the_modes_and_the_factor_is_recorded[olmo2]"),
    Family("Gemma 3", "transformers", "local and global RoPE, QK-norm", "refused", "two rotary embeddings",
           "tests/test_rotary.py::test_unchecked_attention_is_refused_in_one_line"),
    Family("Phi-3", "transformers", "fused qkv projection", "refused", "no q and k projections to read",
           "tests/test_rotary.py::test_unchecked_attention_is_refused_in_one_line"),
    Family("ViT with qk_norm", "timm", "LayerNorm on q and k", "refused", "centring and beta",
           "tests/test_adapters.py::test_timm_adapter_rejects_qk_norm"),
    Family("NaFlexViT with RoPE, SAM with use_rope, MRoPE", "timm", "other rotary embeddings", "refused",
           "not checked against their own logits",
           "tests/test_rotary2d.py::test_unchecked_timm_rope_variants_are_refused_in_one_line"),
)  # fmt: skip


def table() -> str:
    """The families as a plain-text table, one line each."""
    rows = [("family", "library", "attention", "status", "what the modes are")]
    rows += [(f.name, f.library, f.attention, f.status, f.what) for f in FAMILIES]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)), r[4]]) for r in rows)
