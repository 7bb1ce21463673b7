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


_ROPE_2D = "tests/unit/models/test_rotary2d.py::test_modes_at_every_offset_reconstruct_every_pair_of_tokens"
_ROPE_1D = "tests/unit/models/test_rotary.py::test_stand_ins_of_rotary_families_reconstruct_their_logits"
_VISION = "tests/unit/models/test_families.py::test_vision_stand_ins_reconstruct_their_logits"
_GEMMA3 = "tests/unit/models/test_rotary.py::test_gemma3_sliding_and_global_layers_reconstruct_their_logits"
_REFUSED = "tests/unit/models/test_rotary.py::test_unchecked_attention_is_refused_in_one_line"
FAMILIES: tuple[Family, ...] = (
    Family("ViT (ViT-B/16)", "timm", "absolute positions, CLS", "exact", "W_q^T W_k, biases as their own terms",
           f"{_VISION}[timm-vit]"),
    Family("DeiT distilled", "timm", "absolute positions, CLS + distillation token", "exact", "as ViT",
           f"{_VISION}[timm-deit-distilled]"),
    Family("DINO (ViT-S/16)", "timm", "absolute positions, CLS", "exact", "as ViT", f"{_VISION}[timm-dino]"),
    Family("CLIP image tower (ViT-B/16)", "timm", "absolute positions, CLS, pre-LayerNorm", "exact", "as ViT",
           f"{_VISION}[timm-clip]"),
    Family("DINOv2", "timm", "absolute positions, CLS, layer scale", "exact", "as ViT", f"{_VISION}[timm-dinov2]"),
    Family("DINOv2 with registers", "timm", "absolute positions, CLS + 4 registers", "exact",
           "as ViT; registers are prefix tokens", f"{_VISION}[timm-dinov2-registers]"),
    Family("DINOv2-S/14 (real weights)", "timm", "absolute positions", "exact", "W_q^T W_k, at 224 and 518 px",
           "tests/integration/test_adapters.py::test_real_dinov2_timm_reproduces_logits[224]"),
    Family("SigLIP", "timm", "absolute positions, no CLS, attention-pool head", "exact",
           "as ViT, for the blocks (the pool head's learned query is not a layer)", f"{_VISION}[timm-siglip]"),
    Family("BEiT", "timm", "relative position bias", "exact", "W_q^T W_k; the bias table adds a content-free term",
           f"{_VISION}[timm-beit]"),
    Family("ViT with qk_norm", "timm", "LayerNorm on each head's q and k", "exact",
           "W_q^T C diag(g_q g_k) C W_k (C centres); per-pair factor and beta terms recorded",
           f"{_VISION}[timm-qk-norm]"),
    Family("EVA (absolute positions)", "timm", "absolute positions", "exact", "W_q^T W_k",
           "tests/unit/models/test_adapters.py::test_timm_adapter_reproduces_logits[eva]"),
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
    Family("ViT (vit-base-patch16-224)", "transformers", "absolute positions, CLS", "exact",
           "W_q^T W_k, biases as their own terms", f"{_VISION}[hf-vit]"),
    Family("DeiT distilled", "transformers", "absolute positions, CLS + distillation token", "exact", "as ViT",
           f"{_VISION}[hf-deit]"),
    Family("DINO (dino-vits16)", "transformers", "ViT class, DINO's configuration", "exact", "as ViT",
           f"{_VISION}[hf-dino]"),
    Family("CLIP vision (ViT-B/32)", "transformers", "absolute positions, CLS, pre-LayerNorm", "exact", "as ViT",
           f"{_VISION}[hf-clip]"),
    Family("DINOv2 (dinov2-small)", "transformers", "absolute positions, CLS, layer scale", "exact", "as ViT",
           f"{_VISION}[hf-dinov2]"),
    Family("SigLIP vision", "transformers", "absolute positions, no CLS, attention-pool head", "exact",
           "as ViT, for the encoder layers", f"{_VISION}[hf-siglip]"),
    Family("BERT-style encoders, GPT-2", "transformers", "absolute positions (post-LayerNorm for BERT)", "exact",
           "W_q^T W_k, LayerNorm folding exact too",
           "tests/unit/models/test_text.py::test_text_adapters_reproduce_logits_and_fold_exactly"),
    Family("Llama (stories260K, real weights)", "transformers", "1-D RoPE, 8 query on 4 key-value heads", "exact",
           "W_q^T R(-d) W_k at every offset; each query head with its key head",
           "tests/unit/models/test_rotary.py::test_stories260k_logits_are_the_modes_at_each_offset"),
    Family("Mistral", "transformers", "1-D RoPE, grouped-query heads", "exact", "as Llama", f"{_ROPE_1D}[mistral]"),
    Family("Qwen2", "transformers", "1-D RoPE, grouped-query heads, q and k biases", "exact",
           "as Llama, the biases rotated alike", f"{_ROPE_1D}[qwen2]"),
    Family("Llama multi-query", "transformers", "1-D RoPE, one key-value head", "exact", "as Llama",
           f"{_ROPE_1D}[llama]"),
    Family("GPT-NeoX (Pythia)", "transformers", "1-D RoPE on a quarter of each head, fused per-head q, k, v", "exact",
           "W_q^T R(-d) W_k, R turning 16 of 64 dimensions; biases rotated alike", f"{_ROPE_1D}[gpt_neox]"),
    Family("Qwen3", "transformers", "1-D RoPE, QK-norm per head", "exact",
           "W_q^T diag(g_q) R(-d) diag(g_k) W_k; a positive factor per pair recorded",
           "tests/unit/models/test_rotary.py::test_qk_norm_gains_are_in_the_modes_and_the_factor_is_recorded[qwen3]"),
    Family("OLMo 2", "transformers", "1-D RoPE, QK-norm over all heads, post-norm blocks", "exact", "as Qwen3",
           "tests/unit/models/test_rotary.py::test_qk_norm_gains_are_in_the_modes_and_the_factor_is_recorded[olmo2]"),
    Family("Gemma 3 (1B)", "transformers",
           "sliding and global layers with their own RoPE, QK-norm (1 + weight), one key-value head", "exact",
           "as Qwen3, each layer at its own frequencies", f"{_GEMMA3}[1b]"),
    Family("Gemma 3 (27B)", "transformers", "as 1B; q . k scaled by query_pre_attn_scalar ** -0.5, 16 key heads",
           "exact", "as Qwen3, each layer at its own frequencies (global ones scaled by 8)", f"{_GEMMA3}[27b]"),
    Family("Gemma 2", "transformers", "soft-capped logits", "refused", "c tanh(a / c) is not bilinear", _REFUSED),
    Family("Phi-3", "transformers", "fused qkv projection", "refused", "no q and k projections to read", _REFUSED),
    Family("ViT with qk_norm by RmsNorm, or with RoPE", "timm", "other norms on q and k", "refused",
           "not checked against their own logits",
           "tests/unit/models/test_adapters.py::test_timm_adapter_rejects_qk_norm_other_than_layer_norm"),
    Family("NaFlexViT with RoPE, SAM with use_rope, MRoPE", "timm", "other rotary embeddings", "refused",
           "not checked against their own logits",
           "tests/unit/models/test_rotary2d.py::test_unchecked_timm_rope_variants_are_refused_in_one_line"),
)  # fmt: skip


def table() -> str:
    """The families as a plain-text table, one line each."""
    rows = [("family", "library", "attention", "status", "what the modes are")]
    rows += [(f.name, f.library, f.attention, f.status, f.what) for f in FAMILIES]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)), r[4]]) for r in rows)
