"""Rotary position embeddings and grouped-query heads, exactly: the modes at each offset d (W_q^T R(-d) W_k, each
query head with its own key-value head) reconstruct the model's own attention logits for every pair of tokens, on
a real trained Llama-architecture model (stories260K: RoPE, 8 query heads sharing 4 key-value heads) and on
stand-ins of Mistral and Qwen2 (their transformers classes and real configuration values, random weights; Qwen2
with its q and k biases as their own terms). The rotation matrices against transformers' own apply_rotary_pos_emb,
for random positions (hypothesis). Stand-ins of GPT-NeoX (Pythia's partial rotary and fused per-head q|k|v rows,
biases as their own terms), of the QK-norm families Qwen3 and OLMo 2 (up to the recorded per-pair factor) and of
Gemma 3 (sliding and global layers at their own frequencies, QK-norm with 1 + weight gains, query_pre_attn_scalar,
grouped heads) too. Unchecked attention is refused in one line."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import qkdissect as qk
from qkdissect.core.rotary import Rotary
from qkdissect.errors import UnsupportedModelError
from qkdissect.models import extract_qk as adapt
from tests.helpers import STORIES, need_assets
from tests.helpers.rotary import assert_reconstructs, language_stand_in

#: tokens of the test sentences: a few dozen, so that offsets up to 15 and below -15 are all seen
T = 16


@pytest.fixture(scope="module")
def stories() -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(need_assets(STORIES) / Path(STORIES).parent)


def test_stories260k_logits_are_the_modes_at_each_offset(stories: Any) -> None:
    """A real trained model: 5 layers, 8 query heads on 4 key-value heads, RoPE (rotate-half, theta 1e4)."""
    qkw = adapt(stories)
    assert qkw.kv_heads == [0, 0, 1, 1, 2, 2, 3, 3] and qkw.rotary is not None and qkw.layout.causal
    ids = torch.as_tensor([[1, *range(40, 40 + T - 1)]])
    assert_reconstructs(stories, ids)


def test_offset_zero_is_the_paper_matrix_and_the_store_says_what_it_holds(stories: Any, tmp_path: Path) -> None:
    out = tmp_path / "m.zarr"
    ds = qk.modes(stories, device="cpu", output=out)
    assert ds.attrs["offset"] == 0 and ds.attrs["rotary"]["pairing"] == "rotate-half"
    assert ds.attrs["rotary"]["rotary_dim"] == 8 and len(ds.attrs["rotary"]["inv_freq"]) == 4
    assert list(ds.kv_head.values) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert any("offset" in n for n in ds.attrs["notes"]) and any("grouped-query" in n for n in ds.attrs["notes"])
    # offset 0 is W_q^T W_k of each query head with its key head, by brute force
    qkw = adapt(stories)
    full = np.einsum("lhed,lhef->lhdf", qkw.w_q.double().numpy(), qkw.w_k.double().numpy())
    u, s, v = ds.U.values, ds.S.values, ds.V.values
    np.testing.assert_allclose(np.einsum("lhdm,lhm,lhfm->lhdf", u, s, v), full, atol=1e-12)
    far = qk.modes(stories, device="cpu", offset=7)
    assert far.attrs["offset"] == 7 and far.attrs["provenance"]["parameters"]["offset"] == 7
    assert not np.allclose(far.S.values, ds.S.values)  # the interaction does depend on the offset


@pytest.mark.parametrize(
    ("model_type", "cfg"),
    [
        # Mistral 7B's heads: 32 query on 8 key-value, theta 1e6 (scaled down: 8 on 2, d_head 16)
        ("mistral", {"hidden_size": 128, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 16,
                     "intermediate_size": 64, "rope_theta": 1e6}),
        # Qwen2.5-0.5B: 14 query heads on 2 key-value heads, q and k biases (scaled: 6 on 2)
        ("qwen2", {"hidden_size": 96, "num_attention_heads": 6, "num_key_value_heads": 2, "intermediate_size": 64,
                   "rope_theta": 1e6}),
        # multi-query: every query head reads one key head
        ("llama", {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 1, "intermediate_size": 64}),
        # Pythia-70m's attention: 8 heads of 64 on a 512-d stream, a quarter of each head turns (rotary_pct 0.25,
        # base 1e4), q|k|v rows fused per head, biases; parallel residual
        ("gpt_neox", {"hidden_size": 512, "num_attention_heads": 8, "intermediate_size": 64, "rotary_pct": 0.25,
                      "rotary_emb_base": 10000, "use_parallel_residual": True, "layer_norm_eps": 1e-5}),
    ],
)  # fmt: skip
def test_stand_ins_of_rotary_families_reconstruct_their_logits(model_type: str, cfg: dict[str, Any]) -> None:
    model = language_stand_in(model_type, **cfg)
    qkw = adapt(model)
    assert qkw.rotary is not None and (qkw.kv_heads is not None or model_type == "gpt_neox")
    if model_type == "gpt_neox":  # Pythia: the first 16 of 64 dimensions turn; head h's k rows are 192 h + [64, 128)
        assert qkw.rotary.rotary_dim == 16 and qkw.d_head == 64 and any("partial rotary" in n for n in qkw.notes)
        fused = model.gpt_neox.layers[0].attention.query_key_value.weight
        assert torch.equal(qkw.layers[0].w_k[2], fused[2 * 192 + 64 : 2 * 192 + 128])
    if model_type in ("qwen2", "gpt_neox"):
        assert float(qkw.b_q.abs().max()) > 0 and float(qkw.b_k.abs().max()) > 0  # the bias terms are exercised
    # Pythia: the pairs its causal mask keeps, 6 tokens (6 offsets, not 31: every offset sign is checked above)
    n, causal = (6, True) if model_type == "gpt_neox" else (T, False)
    assert_reconstructs(model, torch.randint(0, 97, (1, n), generator=torch.Generator().manual_seed(1)), causal)


@pytest.mark.parametrize(
    ("model_type", "over"),
    [("qwen3", "head"), ("olmo2", "all heads")],  # Qwen3: an RMS norm per head; OLMo 2: over all heads at once
)
def test_qk_norm_gains_are_in_the_modes_and_the_factor_is_recorded(model_type: str, over: str) -> None:
    model = language_stand_in(model_type, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      intermediate_size=64)  # fmt: skip
    qkw = adapt(model)
    assert qkw.qk_norm is not None and qkw.qk_norm["over"] == {"q": over, "k": over}
    assert_reconstructs(model, torch.randint(0, 97, (1, T), generator=torch.Generator().manual_seed(2)))
    ds = qk.modes(model, device="cpu")
    assert ds.attrs["qk_norm"]["kind"] == "rms" and any("QK-norm" in n for n in ds.attrs["notes"])


#: Gemma 3's text attention, a sliding (local) layer then a global one: 1B (4 query heads on 1 key-value head of 256
#: dims, query_pre_attn_scalar 256, window 512, theta 1e6 global / 1e4 local) and 27B (32 on 16 heads of 128,
#: query_pre_attn_scalar 168, so q . k is not scaled by 1/sqrt(d_head); global frequencies linearly scaled by 8).
#: Their streams (1152, 5376) narrowed to 512 and 256: head_dim is given, so the heads keep their shape
GEMMA3 = {
    "1b": {"hidden_size": 512, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
           "query_pre_attn_scalar": 256, "sliding_window": 512},
    "27b": {"hidden_size": 256, "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
            "query_pre_attn_scalar": 168, "sliding_window": 1024,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0}},
}  # fmt: skip


@pytest.mark.parametrize("size", list(GEMMA3))
def test_gemma3_sliding_and_global_layers_reconstruct_their_logits(size: str) -> None:
    from qkdissect.passes.offsets import compute_offsets

    model = language_stand_in("gemma3_text", intermediate_size=64, rope_theta=1e6, rope_local_base_freq=1e4,
                      layer_types=["sliding_attention", "full_attention"], **GEMMA3[size])  # fmt: skip
    qkw = adapt(model)
    rot, cfg = qkw.rotary, GEMMA3[size]
    assert rot is not None and rot.per_layer_only and qkw.qk_norm is not None and qkw.qk_norm["gains"] == "1 + weight"
    d = int(cfg["head_dim"])
    local = 1e4 ** -(np.arange(0, d, 2) / d)
    factor = 8.0 if size == "27b" else 1.0
    np.testing.assert_allclose(rot.frequencies[:, 0, :, 0], [local, 1e6 ** -(np.arange(0, d, 2) / d) / factor])
    assert [a.scale for a in qkw.layers] == [float(cfg["query_pre_attn_scalar"]) ** -0.5] * 2
    # every pair its causal mask keeps (6 tokens, 4 for 27B's 64 heads; all within the window), up to the QK-norm
    # factor
    n = 6 if size == "1b" else 4
    assert_reconstructs(model, torch.randint(0, 97, (1, n), generator=torch.Generator().manual_seed(3)), causal=True)
    ds = qk.modes(model, device="cpu", offset=5)
    assert ds.attrs["rotary"]["frequencies"].endswith("every layer has its own") and ds.attrs["qk_norm"]["gains"]
    assert any(n.startswith("sliding window: in layers 0 ") for n in ds.attrs["notes"])
    assert any("query_pre_attn_scalar" in n for n in ds.attrs["notes"]) == (size == "27b")
    if size == "27b":
        return
    # the offsets pass turns each layer at its own frequencies too
    spectrum = compute_offsets(model, [5], device="cpu", progress=False)
    np.testing.assert_allclose(spectrum.S.sel(offset=5).values, ds.S.values, rtol=1e-9, atol=1e-12)


def test_unchecked_attention_is_refused_in_one_line() -> None:
    gemma2 = language_stand_in("gemma2", hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                       intermediate_size=64)  # fmt: skip
    with pytest.raises(UnsupportedModelError, match="caps its logits"):
        adapt(gemma2)  # a soft cap c tanh(a / c) on the logits
    phi3 = language_stand_in("phi3", hidden_size=64, num_attention_heads=4, num_key_value_heads=4, intermediate_size=64)
    with pytest.raises(UnsupportedModelError):
        adapt(phi3)  # fused qkv_proj: no q and k projections to read


def test_an_offset_for_a_model_without_rotary_embedding_is_refused(tmp_path: Path) -> None:
    from tests.helpers import make_tiny_vit

    spec = make_tiny_vit(tmp_path / "w", depth=1)
    with pytest.raises(Exception, match="has no rotary position embedding"):
        qk.modes(spec, offset=3, device="cpu")
    assert "offset" not in qk.modes(spec, device="cpu").attrs


@settings(max_examples=60, deadline=None)
@given(
    i=st.integers(-300, 300),
    j=st.integers(-300, 300),
    half=st.integers(1, 8),
    theta=st.sampled_from([1e4, 5e5, 1e6]),
    seed=st.integers(0, 2**16),
)
def test_rotations_are_transformers_own_and_depend_on_the_offset_only(
    i: int, j: int, half: int, theta: float, seed: int
) -> None:
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    d = 2 * half
    inv_freq = 1.0 / (theta ** (np.arange(0, d, 2) / d))
    rot = Rotary(inv_freq, "rotate-half", d, d)
    rng = np.random.default_rng(seed)
    q, k = rng.normal(size=(2, d))
    angles = np.array([i, j])[:, None] * inv_freq[None]
    emb = np.concatenate([angles, angles], axis=-1)
    cos, sin = (torch.as_tensor(f(emb))[None] for f in (np.cos, np.sin))  # (1, 2 positions, d)
    qt = torch.as_tensor(np.stack([q, q]))[None, None]  # (1, 1 head, 2 positions, d)
    kt = torch.as_tensor(np.stack([k, k]))[None, None]
    q_rot, k_rot = apply_rotary_pos_emb(qt, kt, cos, sin)
    np.testing.assert_allclose(q_rot[0, 0, 0].numpy(), rot.rotation(i) @ q, atol=1e-9)
    np.testing.assert_allclose(k_rot[0, 0, 1].numpy(), rot.rotation(j) @ k, atol=1e-9)
    logit = float(q_rot[0, 0, 0] @ k_rot[0, 0, 1])  # query at i, key at j: offset d = i - j
    assert logit == pytest.approx(float(q @ rot.key_rotation(i - j) @ k), rel=1e-9, abs=1e-9)
    # partial rotary: the dimensions past rotary_dim pass unchanged; interleaved pairs (2p, 2p + 1) too
    part = Rotary(inv_freq[: max(1, half // 2)], "interleaved", 2 * max(1, half // 2), d)
    r = part.rotation(i - j)
    np.testing.assert_allclose(r.T @ r, np.eye(d), atol=1e-12)
    np.testing.assert_allclose(r[part.rotary_dim :, part.rotary_dim :], np.eye(d - part.rotary_dim))
    np.testing.assert_allclose(part.rotation(i).T @ part.rotation(j), part.rotation(j - i), atol=1e-9)


def test_every_family_of_the_table_names_a_test_that_exists(capsys: pytest.CaptureFixture[str]) -> None:
    """`qkdissect models --families`: each row's proof is a test of this suite (its function, and its case among
    the parameters), so the table cannot claim a family no test checks."""
    from qkdissect.cli import main
    from qkdissect.families import FAMILIES
    from tests.helpers import REPO

    for f in FAMILIES:
        path, _, name = f.test.partition("::")
        func, _, case = name.partition("[")
        text = (REPO / path).read_text()
        assert f"def {func}(" in text, f.test
        case = case.rstrip("]")
        assert not case or f'"{case}"' in text or (case.isdigit() and f"[{case}," in text), f.test
        assert f.status in ("exact", "refused")
    assert main(["models", "--families"]) == 0
    out = capsys.readouterr().out
    assert all(f.name in out for f in FAMILIES) and out.splitlines()[0].startswith("family")
    assert "<!-- families-table -->" in (REPO / "docs/reference/models.md").read_text()  # the docs' table: generated
    hook = importlib.util.spec_from_file_location("reference_hook", REPO / "docs/hooks/reference.py")
    assert hook is not None and hook.loader is not None
    module = importlib.util.module_from_spec(hook)
    hook.loader.exec_module(module)
    table = module.families_table()
    assert all(f"| {f.name} | {f.library} | {f.attention} | {f.status}: " in table for f in FAMILIES)
