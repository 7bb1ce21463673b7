"""What each of the paper's 13 Hugging Face hub repositories holds: the class its ``config.json`` names, the
configuration values, its ``preprocessor_config.json`` in the form the repository writes it (legacy
``FeatureExtractor`` files with an integer ``size``), and which weights files it ships. :mod:`rehearsal.hub`
builds a hub cache of randomly initialised models from these, so that a rehearsal loads exactly what the paper's
run will load, with only the tensor values made up.

Where each value comes from (tags used in the comments below):

- **[conv-vit]** transformers' ``models/vit/convert_vit_timm_to_pytorch.py``, the script that made the
  ``google/vit-*`` repositories: ``ViTConfig()`` defaults (``layer_norm_eps`` 1e-12, ``hidden_act`` gelu,
  ``qkv_bias`` true), sizes by name (large: 1024 / 24 layers / 16 heads / 4096; huge: 1280 / 32 / 16 / 5120),
  and ``ViTFeatureExtractor(size=image_size)`` with its defaults (bilinear, mean = std = 0.5).
- **[conv-dino]** transformers' ``models/vit/convert_dino_to_pytorch.py``: ``ViTConfig()`` defaults, small =
  384 / 6 heads / 1536, saved as ``ViTModel(config, add_pooling_layer=False)``.
- **[conv-deit]** transformers' ``models/deit/convert_deit_timm_to_pytorch.py``: ``DeiTConfig()`` defaults, tiny
  = 192 / 3 heads / 768, small = 384 / 6 / 1536, saved as ``DeiTForImageClassificationWithTeacher`` with
  ``DeiTFeatureExtractor(size=int(256 / 224 * 224), crop_size=224)`` (bicubic, ImageNet mean and std).
- **[clip-json]** the ``config.json`` of openai/clip-vit-base-patch32 as published (quoted in full in
  github.com/whaler404/Hf-Learn, ``clip.md``) and the CLIP preprocessor file as many projects quote it;
  ViT-L/14 sizes from the CLIP paper (Radford et al. 2021, table 20: text width 768 / 12 heads, vision 1024 /
  24 layers / 16 heads, embedding 768).
- **[dino-print]** a third-party print of ``facebook/dino-vits16``'s loaded processor (ImageNet mean and std,
  ``resample`` 2, size 224), matching paper.md section 3 ("DINO: resize to 224², ImageNet mean/std").
- **[card]** the repositories' model cards (``DeiT``: "resized to 256x256, center-cropped at 224x224", ImageNet
  mean/std; ``vit-huge-patch14-224-in21k``: the pre-trained pooler is kept).
- **[paper]** /work/shared/paper.md section 3 (layers, heads, widths, token grids, extra tokens).
- **[mem]** recollection of the repository's file listing, not confirmed from a stored copy: the weights file
  formats and the ``transformers_version`` stamps. A wrong weights format changes which loading path the
  rehearsal exercises, never a number.

Only tensor values are made up. Not reproduced: the TensorFlow / Flax weights (``tf_model.h5``,
``flax_model.msgpack``) and CLIP's tokenizer files, which the package never reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"

IMAGENET_MEAN = [0.485, 0.456, 0.406]  # [conv-deit] IMAGENET_DEFAULT_MEAN; [dino-print]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # [clip-json] (OpenAI CLIP's own normalisation)
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class HubRepo:
    """One hub repository: ``config`` and ``preprocessor`` are its two JSON files as the repository writes
    them; ``weights`` the weights files it ships; ``pooler``: whether a ``ViTModel`` checkpoint holds the
    pooler (DINO's were saved without it)."""

    repo_id: str
    family: str
    config: dict[str, Any]
    preprocessor: dict[str, Any]
    weights: tuple[str, ...]
    pooler: bool = True
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return str(self.config["architectures"][0])

    @property
    def key(self) -> str:
        """The catalogue's short name (the repository name)."""
        return self.repo_id.split("/", 1)[1]


@cache
def _imagenet_labels() -> dict[str, Any]:
    """``id2label`` / ``label2id`` of the 1000 ImageNet classes, as the converted repositories write them (the
    names of huggingface/label-files ``imagenet-1k-id2label.json``; timm bundles the same WordNet lemmas)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    id2label = {str(i): info.index_to_description(i) for i in range(1000)}
    return {"id2label": id2label, "label2id": {v: int(k) for k, v in id2label.items()}}


def _vit_config(
    arch: str, d: int, layers: int, heads: int, mlp: int, patch: int, image: int, labels: bool, version: str
) -> dict[str, Any]:
    """A ``google/vit-*`` / DINO ``config.json`` ([conv-vit], [conv-dino]: ``ViTConfig()`` defaults)."""
    return {
        "architectures": [arch],
        "attention_probs_dropout_prob": 0.0,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": d,
        **(_imagenet_labels() if labels else {}),
        "image_size": image,
        "initializer_range": 0.02,
        "intermediate_size": mlp,
        "layer_norm_eps": 1e-12,
        "model_type": "vit",
        "num_attention_heads": heads,
        "num_channels": 3,
        "num_hidden_layers": layers,
        "patch_size": patch,
        "qkv_bias": True,
        "torch_dtype": "float32",
        "transformers_version": version,  # [mem]
    }


def _vit_processor(size: int, mean: list[float], std: list[float]) -> dict[str, Any]:
    """A legacy ``ViTFeatureExtractor`` file: an integer ``size`` (a square resize), bilinear (2), no crop."""
    return {
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "ViTFeatureExtractor",
        "image_mean": mean,
        "image_std": std,
        "resample": 2,
        "size": size,
    }


def _google_vit(name: str, d: int, layers: int, heads: int, mlp: int, patch: int, image: int) -> HubRepo:
    """The ImageNet-1k fine-tuned ``google/vit-*`` ([conv-vit]; [paper] rows 1-4): a classifier with 1000
    labels, mean = std = 0.5, both weights formats ([mem]; the hub lists ``safetensors`` and ``pytorch`` tags
    for vit-base-patch16-224)."""
    return HubRepo(
        f"google/{name}",
        "ViT",
        _vit_config("ViTForImageClassification", d, layers, heads, mlp, patch, image, True, "4.13.0.dev0"),
        _vit_processor(image, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        (SAFETENSORS, PYTORCH_BIN),
        sources={"config": "conv-vit, paper", "preprocessor": "conv-vit", "weights": "mem"},
    )


def _dino(name: str, d: int, heads: int, mlp: int) -> HubRepo:
    """``facebook/dino-vit*16`` ([conv-dino]; [paper] rows 6-7): a bare ViTModel saved without its pooler,
    ImageNet mean and std ([dino-print])."""
    return HubRepo(
        f"facebook/{name}",
        "DINO",
        _vit_config("ViTModel", d, 12, heads, mlp, 16, 224, False, "4.10.0.dev0"),
        _vit_processor(224, IMAGENET_MEAN, IMAGENET_STD),
        (SAFETENSORS, PYTORCH_BIN),
        pooler=False,
        sources={"config": "conv-dino, paper", "preprocessor": "dino-print, paper", "weights": "mem"},
    )


_CLIP_TEXT = {  # [clip-json] text_config of every OpenAI CLIP repository (widths differ for ViT-L/14)
    "bos_token_id": 0,
    "eos_token_id": 2,  # sic: the published configs say 2 (the tokenizer's end token is 49407)
    "pad_token_id": 1,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_hidden_layers": 12,
    "vocab_size": 49408,
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
}


def _clip(name: str, proj: int, text: tuple[int, int, int], vision: tuple[int, int, int, int, int]) -> HubRepo:
    """``openai/clip-vit-*`` ([clip-json]; [paper] rows 8-10): the full CLIPModel (text and vision towers), the
    legacy ``CLIPFeatureExtractor`` file (shortest side 224, bicubic, centre crop 224, CLIP mean and std)."""
    t_d, t_heads, t_mlp = text
    v_d, v_layers, v_heads, v_mlp, patch = vision
    config = {
        "architectures": ["CLIPModel"],
        "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592,
        "model_type": "clip",
        "projection_dim": proj,
        "text_config": {
            **_CLIP_TEXT,
            "hidden_size": t_d,
            "intermediate_size": t_mlp,
            "num_attention_heads": t_heads,
            "projection_dim": proj,
        },
        "vision_config": {
            "attention_dropout": 0.0,
            "dropout": 0.0,
            "hidden_act": "quick_gelu",
            "hidden_size": v_d,
            "image_size": 224,
            "initializer_factor": 1.0,
            "initializer_range": 0.02,
            "intermediate_size": v_mlp,
            "layer_norm_eps": 1e-05,
            "model_type": "clip_vision_model",
            "num_attention_heads": v_heads,
            "num_channels": 3,
            "num_hidden_layers": v_layers,
            "patch_size": patch,
            "projection_dim": proj,
        },
        "torch_dtype": "float32",
        "transformers_version": None,  # [clip-json] writes null at the top level
    }
    processor = {
        "crop_size": 224,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "resample": 3,
        "size": 224,
    }
    return HubRepo(
        f"openai/{name}",
        "CLIP",
        config,
        processor,
        (SAFETENSORS, PYTORCH_BIN),
        sources={"config": "clip-json, CLIP paper, paper", "preprocessor": "clip-json", "weights": "mem"},
    )


def _deit(name: str, d: int, heads: int, mlp: int) -> HubRepo:
    """``facebook/deit-*-distilled-patch16-224`` ([conv-deit]; [paper] rows 11-13): the classifier with teacher
    (CLS and distillation tokens), a square resize to 256 then a centre crop to 224 ([card]), bicubic, ImageNet
    mean and std; ``pytorch_model.bin`` only ([mem])."""
    config = {
        "architectures": ["DeiTForImageClassificationWithTeacher"],
        "attention_probs_dropout_prob": 0.0,
        "encoder_stride": 16,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": d,
        **_imagenet_labels(),
        "image_size": 224,
        "initializer_range": 0.02,
        "intermediate_size": mlp,
        "layer_norm_eps": 1e-12,
        "model_type": "deit",
        "num_attention_heads": heads,
        "num_channels": 3,
        "num_hidden_layers": 12,
        "patch_size": 16,
        "qkv_bias": True,
        "torch_dtype": "float32",
        "transformers_version": "4.13.0.dev0",  # [mem]
    }
    processor = {
        "crop_size": 224,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "DeiTFeatureExtractor",
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "resample": 3,
        "size": 256,
    }
    return HubRepo(
        f"facebook/{name}",
        "DeiT",
        config,
        processor,
        (PYTORCH_BIN,),
        sources={"config": "conv-deit, paper", "preprocessor": "conv-deit, card", "weights": "mem"},
    )


def _hub_repos() -> list[HubRepo]:
    vit_huge = HubRepo(
        "google/vit-huge-patch14-224-in21k",  # [conv-vit] huge sizes; [paper] row 5; [card]: pooler kept
        "ViT",
        _vit_config("ViTModel", 1280, 32, 16, 5120, 14, 224, False, "4.13.0.dev0"),
        _vit_processor(224, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        (SAFETENSORS, PYTORCH_BIN),
        sources={"config": "conv-vit, paper, card", "preprocessor": "conv-vit", "weights": "mem"},
    )
    return [
        _google_vit("vit-base-patch16-224", 768, 12, 12, 3072, 16, 224),
        _google_vit("vit-base-patch32-384", 768, 12, 12, 3072, 32, 384),
        _google_vit("vit-large-patch16-224", 1024, 24, 16, 4096, 16, 224),
        _google_vit("vit-large-patch32-384", 1024, 24, 16, 4096, 32, 384),
        vit_huge,
        _dino("dino-vits16", 384, 6, 1536),
        _dino("dino-vitb16", 768, 12, 3072),
        _clip("clip-vit-base-patch16", 512, (512, 8, 2048), (768, 12, 12, 3072, 16)),
        _clip("clip-vit-base-patch32", 512, (512, 8, 2048), (768, 12, 12, 3072, 32)),
        _clip("clip-vit-large-patch14", 768, (768, 12, 3072), (1024, 24, 16, 4096, 14)),
        _deit("deit-tiny-distilled-patch16-224", 192, 3, 768),
        _deit("deit-small-distilled-patch16-224", 384, 6, 1536),
        _deit("deit-base-distilled-patch16-224", 768, 12, 3072),
    ]


HUB_REPOS: dict[str, HubRepo] = {r.repo_id: r for r in _hub_repos()}


# ------------------------------------------------------------------------------------ local checkpoints
@dataclass(frozen=True)
class LocalCheckpoint:
    """One of the paper's non-hub checkpoints, as its upstream repository writes it."""

    key: str  # the catalogue's short name
    filename: str  # the released file name (the catalogue's spec points at weights/<filename>)
    family: str
    layout: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)


#: SimMIM ViT-B/16 (github.com/microsoft/SimMIM, configs/vit_base__800ep/*.yaml, config.py, models/
#: vision_transformer.py, models/simmim.py, utils.py save_checkpoint): width 768, 12 blocks, 12 heads, MLP ratio 4,
#: patch 16, image 224, LayerNorm eps 1e-6, qkv without bias plus q_bias / v_bias (QKV_BIAS True), layer scale
#: gamma_1 / gamma_2 (INIT_VALUES 0.1), no absolute position embedding (USE_APE False). The state dict is saved
#: under the checkpoint's "model" key.
SIMMIM_VIT_B = dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4, patch_size=16, img_size=224)

#: I-JEPA ViT-H/14 (github.com/facebookresearch/ijepa, configs/in1k_vith14_ep300.yaml, src/models/
#: vision_transformer.py, src/helper.py init_model, src/train.py save_checkpoint): vit_huge = width 1280, 32
#: blocks, 16 heads, MLP ratio 4, qkv with bias, LayerNorm eps 1e-6, fixed sin-cos position embedding, no CLS
#: token; the predictor: predictor_embed 1280 -> 384, 12 blocks of width 384 with the encoder's 16 heads
#: (pred_depth 12, pred_emb_dim 384, num_heads=encoder.num_heads), predictor_norm, predictor_proj 384 -> 1280.
#: encoder, predictor and target_encoder are saved through DistributedDataParallel ("module." prefixes) with
#: "opt", "scaler", "epoch", "loss", "batch_size", "world_size", "lr".
IJEPA_VIT_H = dict(
    embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4, patch_size=14, img_size=224, pred_dim=384, pred_depth=12
)

LOCAL_CHECKPOINTS: dict[str, LocalCheckpoint] = {
    c.key: c
    for c in (
        LocalCheckpoint(
            "simmim-vit-b16-pretrain",
            "simmim_pretrain__vit_base__img224__800ep.pth",
            "SimMIM",
            # simmim_pretrain__vit_base__img224__800ep.yaml: USE_RPB False, USE_SHARED_RPB True, no mean pooling;
            # the SimMIM wrapper adds encoder.mask_token and a 1x1-conv pixel decoder (encoder_stride 16)
            {**SIMMIM_VIT_B, "pretrain": True, "shared_rel_pos_bias": True, "mean_pooling": False},
            {"layout": "microsoft/SimMIM configs, models, utils.py", "values": "paper.md section 3"},
        ),
        LocalCheckpoint(
            "simmim-vit-b16-finetune",
            "simmim_finetune__vit_base__img224__800ep.pth",
            "SimMIM",
            # simmim_finetune__vit_base__img224__800ep.yaml: USE_RPB True, USE_SHARED_RPB False, mean pooling
            # (fc_norm, no final norm), a 1000-class head
            {**SIMMIM_VIT_B, "pretrain": False, "shared_rel_pos_bias": False, "mean_pooling": True},
            {"layout": "microsoft/SimMIM configs, models, utils.py", "values": "paper.md section 3"},
        ),
        LocalCheckpoint(
            "ijepa-vith14-encoder",
            "IN1K-vit.h.14-300e.pth.tar",
            "I-JEPA",
            dict(IJEPA_VIT_H),
            {"layout": "facebookresearch/ijepa src/train.py, src/models", "values": "in1k_vith14_ep300.yaml"},
        ),
    )
}
