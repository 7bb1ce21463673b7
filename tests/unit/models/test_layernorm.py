"""LayerNorm folding (beyond the paper): the folded weights on LayerNorm-normalised residual tokens give the
model's own attention logits, and the folded modes are the SVD of the folded d x d matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from qkdissect.core.layernorm import normalise
from qkdissect.models import load_qk
from qkdissect.models.layernorm import folded_factors, norm_parameters
from qkdissect.passes.weights import compute_modes
from tests.helpers import make_tiny_vit
from tests.helpers.layernorm import folded_logit_error, residual_tokens


def test_folding_is_exact_on_a_random_model(tmp_path: Path) -> None:
    """Random gamma, beta, biases (conftest.randomise_), so no term can vanish by accident."""
    spec = make_tiny_vit(tmp_path)
    err = folded_logit_error(spec, torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert err["folded"] < 1e-5 and err["folded-centred"] < 1e-5, err
    assert err["raw"] > 1e-2, err  # the unfolded weights do not describe what the attention sees


def test_folded_modes_are_the_svd_of_the_folded_matrix(tmp_path: Path) -> None:
    spec = make_tiny_vit(tmp_path, depth=2)
    qk, _ = load_qk(spec)
    gamma, _, _ = norm_parameters(qk)
    d = qk.d_model
    centre = np.eye(d) - np.ones((d, d)) / d
    for folding in ("folded", "folded-centred"):
        ds = compute_modes(spec, device="cpu", folding=folding)  # type: ignore[arg-type]
        assert ds.attrs["folding"] == folding and ds.attrs["provenance"]["parameters"]["weights_processing"] == folding
        for layer in range(qk.n_layers):
            g = np.diag(gamma[layer].numpy())
            for h in range(qk.n_heads):
                m = g @ qk.layers[layer].w_q[h].double().numpy().T @ qk.layers[layer].w_k[h].double().numpy() @ g
                if folding == "folded-centred":
                    m = centre @ m @ centre
                s = np.linalg.svd(m, compute_uv=False)[: qk.d_head]
                np.testing.assert_allclose(ds.S.values[layer, h], s, rtol=1e-9, atol=1e-12)
                u, sv, v = (ds[n].values[layer, h] for n in ("U", "S", "V"))
                np.testing.assert_allclose((u * sv) @ v.T, m, atol=1e-10)


def _tiny_llama() -> torch.nn.Module:
    """A Llama decoder (RMSNorm, RoPE, 4 query heads on 2 key-value heads), small, with random weights and gains."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, rms_norm_eps=1e-5)  # fmt: skip
    model = LlamaModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # the norms' gains too (ones at init): no term can vanish by accident
            p.add_(torch.randn_like(p) * 0.3)
    return model


def test_rms_norm_folding_is_the_models_own_projections_and_has_no_centring() -> None:
    """An RMS norm (g x / rms(x)) folds its gains: the folded factors on x / rms(x) of the residual stream give the
    model's own q and k projections (of its norm's output); it has nothing to centre, so the folded-centred modes
    are the folded ones, bit for bit, and the store and its scores say so."""
    from qkdissect.models import extract_qk
    from qkdissect.passes.scores import compute_scores

    model = _tiny_llama()
    qk = extract_qk(model)
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    res, out = residual_tokens(qk, model, input_ids=ids), {}
    hooks = [getattr(layer.attention, side).register_forward_hook(
                 lambda _m, _i, o, key=(i, side): out.__setitem__(key, o.detach().double()))
             for i, layer in enumerate(qk.layers) for side in ("q_proj", "k_proj")]  # fmt: skip
    with torch.inference_mode():
        model(input_ids=ids)
    for h in hooks:
        h.remove()
    gamma, beta, eps = norm_parameters(qk)
    assert torch.equal(gamma, torch.stack([layer.norm.weight.double() for layer in qk.layers])) and not beta.any()
    a, b = folded_factors(qk, "folded")
    kv = torch.as_tensor(qk.kv_heads)
    for layer in range(qk.n_layers):
        xh = normalise(res[layer], eps[layer], centring=False)
        q = out[(layer, "q_proj")].unflatten(-1, (qk.n_heads, qk.d_head))
        k = out[(layer, "k_proj")].unflatten(-1, (-1, qk.d_head))[:, :, kv]  # each query head's key head
        torch.testing.assert_close(torch.einsum("btd,hed->bthe", xh, a[layer]), q, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.einsum("btd,hed->bthe", xh, b[layer]), k, rtol=1e-5, atol=1e-5)
    folded = compute_modes(model, device="cpu", folding="folded")
    centred = compute_modes(model, device="cpu", folding="folded-centred")
    assert all(np.array_equal(folded[n].values, centred[n].values) for n in ("U", "S", "V"))
    assert folded.attrs["norm"] == {"kind": "rms", "module": "LlamaRMSNorm", "centring": False}
    assert "no centring" in centred.attrs["norm"]["note"]
    assert compute_scores(centred).attrs["norm"]["centring"] is False  # what the folding figure reads
    g = np.diag(gamma[1].numpy())
    full = g @ qk.layers[1].w_q[3].double().numpy().T @ qk.layers[1].w_k[3].double().numpy() @ g
    u, s, v = (folded[n].values[1, 3] for n in ("U", "S", "V"))
    np.testing.assert_allclose((u * s) @ v.T, full, atol=1e-10)


def test_rms_gains_are_read_off_what_the_norm_computes() -> None:
    """Gemma's RMS norm multiplies by (1 + w): the probe finds 1 + w; a LayerNorm (centring, beta) is not one."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    from qkdissect.models.layernorm import rms_gains

    gemma = Gemma3RMSNorm(16)
    with torch.no_grad():
        gemma.weight.copy_(torch.randn(16, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(rms_gains(gemma, 16), 1 + gemma.weight.double(), rtol=1e-6, atol=1e-6)
    assert rms_gains(torch.nn.LayerNorm(16), 16) is None
