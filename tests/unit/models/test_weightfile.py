"""A modes job reads W_q and W_k straight from the weights file (qkdissect.models.weightfile), without torch for a
safetensors file (a pytorch_model.bin is unpickled with torch, without transformers):
the adapters' weights bit for bit, the same layout, weights record and manifest check, and modes equal to the
torch path's to float64 rounding; a Llama decoder's file (rotary, grouped heads) gives the model path's store bit
for bit, never importing transformers; what it cannot read builds the model as before."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import (
    BeitConfig,
    BeitModel,
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPModel,
    DeiTConfig,
    DeiTForImageClassificationWithTeacher,
    Dinov2Config,
    Dinov2Model,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)

from qkdissect.errors import QKDissectError
from qkdissect.models import describe_loaded, load_qk
from qkdissect.models.layernorm import norm_parameters
from qkdissect.models.weightfile import TIMM_VITS, FileQK, read_qk_file
from qkdissect.passes import weights
from qkdissect.passes.weights import compute_modes
from tests.helpers import STORIES, make_ijepa_checkpoint, make_simmim_checkpoint, make_tiny_vit, randomise_
from tests.helpers.modes import compare_modes

VIT = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8, intermediate_size=96
)
TEXT = dict(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
HF: dict[str, Callable[[], Any]] = {
    "vit": lambda: ViTModel(ViTConfig(**VIT)),
    "vit-classifier": lambda: ViTForImageClassification(ViTConfig(**VIT)),  # keys under vit.
    "deit-teacher": lambda: DeiTForImageClassificationWithTeacher(DeiTConfig(**VIT)),  # + distillation token
    "dinov2": lambda: Dinov2Model(Dinov2Config(**{**VIT, "image_size": 32})),
    "beit": lambda: BeitModel(BeitConfig(**VIT)),  # no key bias
    "clip": lambda: CLIPModel(CLIPConfig(vision_config=VIT, text_config=dict(TEXT, num_hidden_layers=1))),
    "bert": lambda: BertModel(BertConfig(**TEXT)),  # post-LayerNorm
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=3, n_head=4)),  # fused c_attn
}


def _save(build: Callable[[], Any], folder: Path) -> str:
    randomise_(build()).save_pretrained(str(folder))
    return f"hf:{folder}"


def _reads_as_built(spec: str) -> FileQK:
    """The file read of ``spec`` (folded: with the norms' gamma) is what the built model gives, bit for bit: W_q,
    W_k, gamma, the provenance's model record (layout, notes) and its weights record. (load_report: what
    transformers said of the checkpoint against the model class; a file read builds no class.)"""
    fq = read_qk_file(spec, "folded")
    assert fq is not None
    qk, loaded = load_qk(spec)
    assert np.array_equal(fq.w_q, qk.w_q.numpy()) and np.array_equal(fq.w_k, qk.w_k.numpy())
    gamma, _, _ = norm_parameters(qk)
    assert fq.gamma is not None and np.array_equal(fq.gamma.astype(np.float64), gamma.numpy())
    assert fq.describe() == qk.describe()
    assert {k: v for k, v in fq.weights().items() if k not in ("model_class", "read")} == {
        k: v for k, v in describe_loaded(loaded).items() if k not in ("model_class", "load_report")
    }
    return fq


@pytest.mark.parametrize("case", list(HF))
def test_hf_files_give_the_adapters_weights_bit_for_bit(case: str, tmp_path: Path) -> None:
    assert _reads_as_built(_save(HF[case], tmp_path / case)).w_q.dtype == np.float32


@pytest.mark.parametrize("folding", ["raw", "folded-centred"])
def test_modes_from_the_file_equal_the_models(folding: str, tmp_path: Path, monkeypatch) -> None:
    """The stores of both paths for a Hugging Face stand-in (DeiT with its distillation token, under deit.)."""
    spec = _save(HF["deit-teacher"], tmp_path / "deit")
    fast = compute_modes(spec, tmp_path / "fast.zarr", device="cpu", folding=folding)
    monkeypatch.setattr(weights, "read_qk_file", lambda *a: None)  # the model built, as before
    slow = compute_modes(spec, tmp_path / "slow.zarr", device="cpu", folding=folding)
    compare_modes(fast, slow)
    one, other = (ds.attrs["provenance"] for ds in (fast, slow))
    assert one["weights"].pop("read") and one["weights"].pop("model_class") is None
    other["weights"].pop("model_class")
    for record in (other["weights"], *other["dependencies"]):  # what transformers said of the class: no class here
        record.pop("load_report", None)
    assert [one[k] for k in ("model", "weights", "dependencies", "device")] == [
        other[k] for k in ("model", "weights", "dependencies", "device")
    ]


def _bin(spec: str, folder: Path, **save: Any) -> str:
    """The checkpoint of ``spec`` (a ``save_pretrained`` folder) saved as a ``pytorch_model.bin``: ``torch.save`` of
    its tensors, under the checkpoint's names, beside its config.json, as the paper's DeiT repositories ship them."""
    from safetensors.torch import load_file

    folder.mkdir()
    source = Path(spec.removeprefix("hf:"))
    state = save.pop("state", None) or load_file(source / "model.safetensors")
    torch.save(state, folder / "pytorch_model.bin", **save)
    shutil.copy(source / "config.json", folder)
    return f"hf:{folder}"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_a_pytorch_model_bin_is_read_from_its_file(legacy: bool, tmp_path: Path, monkeypatch) -> None:
    """A ``pytorch_model.bin`` (memory-mapped; the legacy format, which cannot be, read whole): the adapter's
    weights, layout and weights record, and the model path's store."""
    spec = _bin(_save(HF["deit-teacher"], tmp_path / "st"), tmp_path / "bin", _use_new_zipfile_serialization=not legacy)
    assert _reads_as_built(spec).path.name == "pytorch_model.bin"  # (its sha256 in the weights record)
    fast = compute_modes(spec, tmp_path / "fast.zarr", device="cpu")
    record = fast.attrs["provenance"]["weights"]
    assert record["model_class"] is None and "read from pytorch_model.bin" in record["read"]  # read from the file
    monkeypatch.setattr(weights, "read_qk_file", lambda *a: None)  # the model built, as before
    compare_modes(fast, compute_modes(spec, tmp_path / "slow.zarr", device="cpu"))


def test_a_pytorch_model_bin_the_file_cannot_give(tmp_path: Path) -> None:
    """bfloat16 weights, or a pickle without the tensors, build the model (transformers says what it makes of
    them); model.safetensors is read where both are (as transformers does); a file cut short is named with its path,
    and the model path refuses it too."""
    spec = _save(HF["vit"], tmp_path / "vit")
    from safetensors.torch import load_file

    state = {k: v.bfloat16() for k, v in load_file(tmp_path / "vit" / "model.safetensors").items()}
    assert read_qk_file(_bin(spec, tmp_path / "bf16", state=state)) is None
    both = _bin(spec, tmp_path / "both")
    shutil.copy(tmp_path / "vit" / "model.safetensors", tmp_path / "both")
    fq = read_qk_file(both)
    assert fq is not None and fq.path.name == "model.safetensors"
    short = _bin(spec, tmp_path / "short")
    data = (tmp_path / "short" / "pytorch_model.bin").read_bytes()
    (tmp_path / "short" / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    assert read_qk_file(_bin(spec, tmp_path / "other", state={"step": 3, "note": "not weights"})) is None
    with pytest.raises(QKDissectError, match=r"pytorch_model\.bin"):
        read_qk_file(short)
    with pytest.raises(Exception):  # noqa: B017 (transformers' own error: the model cannot be built either)
        load_qk(short)


@pytest.mark.parametrize("part", ["encoder", "target_encoder", "predictor"])
def test_an_ijepa_checkpoint_is_read_from_its_file(part: str, tmp_path: Path, monkeypatch) -> None:
    """Each part of an I-JEPA checkpoint in the released layout (``module.`` prefixes; the predictor's mask token,
    position embedding and projection beside its blocks): the built model's weights, gamma, layout and weights
    record, and the model path's store."""
    path, _, _ = make_ijepa_checkpoint(tmp_path)
    spec = f"ijepa:{path}#{part}?heads=4"
    _reads_as_built(spec)
    fast = compute_modes(spec, tmp_path / "fast.zarr", device="cpu", folding="folded")
    assert f"read from {path.name}" in fast.attrs["provenance"]["weights"]["read"]
    monkeypatch.setattr(weights, "read_qk_file", lambda *a: None)  # the model built, as before
    compare_modes(fast, compute_modes(spec, tmp_path / "slow.zarr", device="cpu", folding="folded"))


def test_an_ijepa_checkpoint_the_file_cannot_give(tmp_path: Path) -> None:
    """A width whose head count is not known without ?heads=N, a tensor the model does not take, a missing one,
    float16 weights: the model is built (and says what is wrong, where it is wrong); a file cut short is named."""
    path, _, _ = make_ijepa_checkpoint(tmp_path)
    assert read_qk_file(f"ijepa:{path}#encoder") is None  # width 64: the head count is not known
    with pytest.raises(QKDissectError, match="heads=N"):
        load_qk(f"ijepa:{path}#encoder")
    ckpt = torch.load(path, weights_only=True)
    changes = {
        "extra": lambda sd: sd | {"module.blocks.0.attn.extra": torch.zeros(3)},
        "missing": lambda sd: {k: v for k, v in sd.items() if k != "module.norm.bias"},
        "float16": lambda sd: {k: v.half() for k, v in sd.items()},
    }
    for name, change in changes.items():
        other = tmp_path / f"{name}.pth.tar"
        torch.save({**ckpt, "encoder": change(ckpt["encoder"])}, other)
        assert read_qk_file(f"ijepa:{other}#encoder?heads=4") is None, name
        assert read_qk_file(f"ijepa:{other}#predictor?heads=4") is not None, name  # the other part is intact
    for name in ("extra", "missing"):
        with pytest.raises(QKDissectError, match="checkpoint"):
            load_qk(f"ijepa:{tmp_path / name}.pth.tar#encoder?heads=4")
    short = tmp_path / "short.pth.tar"
    short.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(QKDissectError, match=r"short\.pth\.tar"):
        read_qk_file(f"ijepa:{short}#encoder?heads=4")


@pytest.mark.parametrize("pretrain", [True, False], ids=["pretrain", "finetune"])
def test_a_simmim_checkpoint_is_read_from_its_file(pretrain: bool, tmp_path: Path, monkeypatch) -> None:
    """SimMIM's pretrain and finetune layouts (mapped onto timm's Beit): the built model's weights, gamma, layout,
    relative-position note and weights record, and the model path's store; a tensor Beit does not take, or one it
    takes missing, builds the model (which names it)."""
    path, _ = make_simmim_checkpoint(tmp_path, pretrain)
    spec = f"simmim:{path}"
    _reads_as_built(spec)
    fast = compute_modes(spec, tmp_path / "fast.zarr", device="cpu", folding="folded")
    with monkeypatch.context() as m:
        m.setattr(weights, "read_qk_file", lambda *a: None)  # the model built, as before
        compare_modes(fast, compute_modes(spec, tmp_path / "slow.zarr", device="cpu", folding="folded"))
    ckpt = torch.load(path, weights_only=True)
    some = next(k for k in ckpt["model"] if k.endswith("blocks.1.norm2.bias"))
    for name, sd in {"extra": ckpt["model"] | {some.replace("norm2.bias", "extra"): torch.zeros(3)},
                     "missing": {k: v for k, v in ckpt["model"].items() if k != some}}.items():  # fmt: skip
        other = tmp_path / f"{name}.pth"
        torch.save({"model": sd}, other)
        assert read_qk_file(f"simmim:{other}") is None, name
        with pytest.raises(QKDissectError, match="checkpoint"):
            load_qk(f"simmim:{other}")


@pytest.mark.parametrize("pool", ["token", "avg"])
@pytest.mark.parametrize("bias", ["shared", "per-block", "none"])
def test_beit_shapes_are_timms(pool: str, bias: str) -> None:
    """What the SimMIM file path checks a checkpoint against is the state dict of the Beit loading builds."""
    from timm.models.beit import Beit

    from qkdissect.models.weightfile import beit_shapes

    kwargs = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, use_abs_pos_emb=bias == "none",
                  use_rel_pos_bias=bias == "per-block", use_shared_rel_pos_bias=bias == "shared",
                  init_values=0.1 if pool == "token" else None, global_pool=pool)  # fmt: skip
    own = {k: tuple(v.shape) for k, v in Beit(num_classes=0, **kwargs).state_dict().items()}  # type: ignore[arg-type]
    assert beit_shapes(**kwargs) == own  # type: ignore[arg-type]


def test_what_the_file_cannot_give_builds_the_model(tmp_path: Path, monkeypatch) -> None:
    """Options in the spec, an unknown family and a timm file build the model; a changed file is refused by its
    manifest on both paths."""
    spec = _save(HF["vit"], tmp_path / "vit")
    assert read_qk_file(spec + "?num_attention_heads=2") is None
    assert read_qk_file("timm:vit_tiny_patch16_224@/x.safetensors") is None
    cfg = (tmp_path / "vit" / "config.json").read_text()
    (tmp_path / "vit" / "config.json").write_text(cfg.replace('"vit"', '"vit_mae"'))
    assert read_qk_file(spec) is None
    manifest = {"files": [{"role": "weights", "sha256": "0" * 64, "path": "elsewhere"}]}
    with pytest.raises(QKDissectError, match="are not the ones resolved in the manifest"):
        compute_modes(_save(HF["bert"], tmp_path / "bert"), device="cpu", manifest=manifest)


@pytest.mark.parametrize("folding", ["raw", "folded"])
def test_a_timm_vit_of_other_sizes_is_read_from_its_file(folding: str, tmp_path: Path, monkeypatch) -> None:
    """A timm ViT whose spec changes its sizes (the tests' tiny ViT: ?img_size=32&patch_size=8&embed_dim=64&
    num_heads=4&depth=3): the model's weights and layout from the file, and both paths' stores; an option that is
    not a size, or sizes the file does not hold, build the model."""
    spec = make_tiny_vit(tmp_path / "w")
    fq, (qk, loaded) = read_qk_file(spec, folding), load_qk(spec)
    assert fq is not None and fq.describe() == qk.describe() and fq.sha256 == loaded.weights_sha256
    assert np.array_equal(fq.w_q, qk.w_q.numpy()) and np.array_equal(fq.w_k, qk.w_k.numpy())
    assert fq.layout.grid == (4, 4) and fq.shape == (3, 4, 16, 64)
    fast = compute_modes(spec, tmp_path / "fast.zarr", device="cpu", folding=folding)
    monkeypatch.setattr(weights, "read_qk_file", lambda *a: None)  # the model built, as before
    compare_modes(fast, compute_modes(spec, tmp_path / "slow.zarr", device="cpu", folding=folding))
    assert read_qk_file(spec + "&num_classes=10") is None  # not a size: the model is built
    assert read_qk_file(spec.replace("depth=3", "depth=4")) is None  # the file holds 3 blocks
    assert read_qk_file(spec.replace("num_heads=4", "num_heads=3")) is None  # 64 does not split in 3 heads
    assert read_qk_file(spec.replace("patch_size=8", "patch_size=16")) is None  # the file's patches are 8 px


@pytest.mark.parametrize("arch", sorted(TIMM_VITS))
def test_the_timm_architectures_read_from_files_are_timms(arch: str) -> None:
    """Each timm ViT whose file a modes job reads: the tensors and the token layout of the model timm builds (on
    the meta device: no memory, no weights)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    want = TIMM_VITS[arch]
    own = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("head.")}
    shapes = want.shapes()
    assert own.keys() == shapes.keys()
    assert all(own[k] == v for k, v in shapes.items() if v is not None)
    assert int(model.blocks[0].attn.num_heads) == want.heads
    assert int(model.num_prefix_tokens) == 1 + want.registers
    assert tuple(model.patch_embed.grid_size) == (want.img_size // want.patch,) * 2


LLAMA = dict(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
#: Llama decoders a modes job reads from their file: key-value heads, head width and RoPE base as real ones vary
LLAMAS: dict[str, Callable[[], Any]] = {
    "grouped": lambda: LlamaModel(LlamaConfig(**LLAMA, num_key_value_heads=2, rope_parameters=_rope(500_000.0))),
    "multi-query": lambda: LlamaForCausalLM(LlamaConfig(**LLAMA, num_key_value_heads=1, head_dim=16)),  # model.
    "smollm2-rope": lambda: LlamaModel(LlamaConfig(**LLAMA, head_dim=64, rope_parameters=_rope(100_000.0))),
}


def _rope(theta: float, kind: str = "default", **more: Any) -> dict[str, Any]:
    return {"rope_type": kind, "rope_theta": theta, **more}


def _same_stores(spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folding: str = "raw") -> None:
    """The modes store read from the file is the model path's, bit for bit (rotary, groups and norms included)."""
    fast = compute_modes(spec, tmp_path / f"fast-{folding}.zarr", device="cpu", folding=folding)
    assert fast.attrs["provenance"]["weights"]["model_class"] is None  # read from the file
    with monkeypatch.context() as m:
        m.setattr(weights, "read_qk_file", lambda *a: None)  # the model built
        slow = compute_modes(spec, tmp_path / f"slow-{folding}.zarr", device="cpu", folding=folding)
    compare_modes(fast, slow)  # attrs (the rotary frequencies, notes, offset) equal
    for name in slow.variables:
        assert np.array_equal(fast[name].values, slow[name].values), name
    assert fast.attrs["provenance"]["model"] == slow.attrs["provenance"]["model"]


@pytest.mark.parametrize("case", list(LLAMAS))
def test_a_llama_file_gives_the_adapters_weights_and_the_models_store(case: str, tmp_path: Path, monkeypatch) -> None:
    spec = _save(LLAMAS[case], tmp_path / case)
    fq, (qk, loaded) = read_qk_file(spec), load_qk(spec)
    assert fq is not None and fq.describe() == qk.describe() and fq.sha256 == loaded.weights_sha256
    assert np.array_equal(fq.w_q, qk.w_q.numpy()) and np.array_equal(fq.w_k, qk.w_k.numpy())
    assert fq.rotary is not None and qk.rotary is not None
    assert np.array_equal(fq.rotary.inv_freq, qk.rotary.inv_freq)  # transformers' float32 arithmetic, bit for bit
    gamma, _, _ = norm_parameters(qk)  # the adapter's probe of the RMS norms: their weights, to the last bit
    assert fq.gamma is not None and np.array_equal(fq.gamma.astype(np.float64), gamma.numpy())
    for folding in ("raw", "folded", "folded-centred"):  # (an RMS norm does not centre: the last two are equal)
        _same_stores(spec, tmp_path, monkeypatch, folding)


@pytest.mark.assets
def test_stories260k_is_read_from_its_file_as_its_model_reads(assets: Path, tmp_path: Path, monkeypatch) -> None:
    """A real trained Llama (8 query heads sharing 4 key-value heads, RoPE base 1e4 written as an integer)."""
    for folding in ("raw", "folded"):
        _same_stores(f"hf:{(assets / STORIES).parent}", tmp_path, monkeypatch, folding)


def test_a_llama_whose_rope_is_not_the_default_builds_the_model(tmp_path: Path) -> None:
    """Scaled frequencies (llama3, linear) and a config of the older form (rope_theta, rope_scaling) are the model's
    to compute; the older form without scaling is read, a scaled or partial one is not."""
    import json

    scaled = _rope(10_000.0, "llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=64)  # fmt: skip
    spec = _save(lambda: LlamaModel(LlamaConfig(**LLAMA, rope_parameters=scaled)), tmp_path / "llama3")
    assert load_qk(spec)[0].rotary is not None and read_qk_file(spec) is None
    spec = _save(lambda: LlamaModel(LlamaConfig(**LLAMA)), tmp_path / "old")
    config = tmp_path / "old" / "config.json"
    cfg = json.loads(config.read_text())
    cfg.pop("rope_parameters")
    config.write_text(json.dumps({**cfg, "rope_theta": 20_000.0, "rope_scaling": None}))
    fq, (qk, _) = read_qk_file(spec), load_qk(spec)
    assert fq is not None and fq.rotary is not None and qk.rotary is not None
    assert np.array_equal(fq.rotary.inv_freq, qk.rotary.inv_freq) and fq.describe() == qk.describe()
    for more in ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, {"partial_rotary_factor": 0.5}):
        config.write_text(json.dumps({**cfg, "rope_theta": 20_000.0, **more}))
        assert read_qk_file(spec) is None
