"""Each model's own image preprocessing, read from its timm data config or its Hugging Face image processor, as a
:class:`~qkdissect.data.geometry.Preprocess` every image pass uses.

"The model's own transform" is, for timm, ``create_transform(**resolve_data_config(model=...))`` (its eval
transform: ``crop_pct``, ``crop_mode`` center / squash / border, interpolation, non-square sizes); for Hugging Face,
the *PIL* (slow) image processor, which the paper (2024) ran — loaded explicitly (``backend="pil"`` in transformers
5, ``use_fast=False`` before), since transformers 5 gives the torchvision (fast) one by default, whose resize
differs by a few grey levels. Values are read from the processor object after it has normalised its own legacy
size forms (``size: 224``, ``size: 256`` with ``crop_size``)."""

from __future__ import annotations

import math
from typing import Any

from ..data.geometry import RESAMPLE, RESAMPLE_NAMES, Preprocess
from ..errors import QKDissectError
from .sources.base import LoadedModel, hub_offline, is_hf_model


def _interpolation(value: Any, who: str) -> str:
    name = RESAMPLE_NAMES.get(value) if isinstance(value, int) else str(getattr(value, "value", value)).lower()
    if name not in RESAMPLE:
        raise QKDissectError(f"{who}: interpolation {value!r} is not supported (use one of {', '.join(RESAMPLE)})")
    return name


def _rgb(v: Any) -> tuple[float, float, float]:
    vals = [float(x) for x in (v if isinstance(v, list | tuple) else [v])]
    return (vals[0],) * 3 if len(vals) == 1 else (vals[0], vals[1], vals[2])  # type: ignore[return-value]


def _timm_preprocess(model: Any) -> Preprocess:
    """As timm's ``transforms_imagenet_eval`` builds it from the model's data config."""
    from timm.data import resolve_data_config
    from timm.data.constants import DEFAULT_CROP_PCT

    cfg = resolve_data_config({}, model=model)
    _, h, w = cfg["input_size"]
    own = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if own is not None and tuple(own) != (h, w):  # created at another size than its pretrained config says
        h, w = (int(own[0]), int(own[1]))
    pct = float(cfg.get("crop_pct") or DEFAULT_CROP_PCT)
    mode = cfg.get("crop_mode") or "center"
    scale = (math.floor(h / pct), math.floor(w / pct))
    mean = _rgb(cfg["mean"])
    resize: int | tuple[int, int] = scale
    keep: float | None = None  # squash: both sides to scale
    if mode == "border":  # longer side fits, padded with the mean colour
        keep = 1.0
    elif mode != "squash":  # center (timm's default for any other value): shorter side fits
        resize, keep = (scale[0], None) if scale[0] == scale[1] else (scale, 0.0)
    return Preprocess(
        crop=(int(h), int(w)),
        resize=resize,
        mean=mean,
        std=_rgb(cfg["std"]),
        interpolation=_interpolation(cfg.get("interpolation") or "bilinear", "timm data config"),
        origin=f"timm transforms_imagenet_eval (crop_pct {pct}, crop_mode {mode})",
        keep_ratio=keep,
        rounding="round",
        fill=tuple(round(255 * v) for v in mean) if mode == "border" else (0, 0, 0),  # type: ignore[arg-type]
    )


def _hf_preprocess(proc: Any) -> Preprocess:
    """As the Hugging Face PIL image processor runs it: resize (``size``: ``shortest_edge`` or height/width),
    centre crop (``crop_size``; floor rounding, zero padding), ``rescale_factor``, ``image_mean``/``image_std``, each
    step only when its ``do_*`` flag is set."""
    who = f"Hugging Face {type(proc).__name__.removesuffix('Pil')}"
    known = {"do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb"}
    other = sorted(
        k for k, v in proc.to_dict().items() if v and ((k.startswith("do_") and k not in known) or k == "crop_pct")
    )
    if other:
        raise QKDissectError(
            f"{who}: {', '.join(other)} is not supported (only resize, centre crop, rescale, normalise)"
        )
    resize: int | tuple[int, int] | None = None
    if getattr(proc, "do_resize", False):
        size = dict(proc.size) if proc.size is not None else {}
        if set(size) == {"shortest_edge"}:
            resize = int(size["shortest_edge"])
        elif set(size) == {"height", "width"}:
            resize = (int(size["height"]), int(size["width"]))
        else:
            raise QKDissectError(f"{who}: size {size} is not supported (shortest_edge, or height and width)")
    if getattr(proc, "do_center_crop", False):
        c = dict(proc.crop_size)
        crop = (int(c["height"]), int(c["width"]))
    elif isinstance(resize, tuple):
        crop = resize
    else:
        raise QKDissectError(
            f"{who}: without a centre crop or a height/width resize its output size varies with each image; set "
            "do_center_crop and crop_size in preprocessor_config.json"
        )
    norm = bool(getattr(proc, "do_normalize", False))
    return Preprocess(
        crop=crop,
        resize=resize,
        mean=_rgb(proc.image_mean) if norm else (0.0, 0.0, 0.0),
        std=_rgb(proc.image_std) if norm else (1.0, 1.0, 1.0),
        interpolation=_interpolation(getattr(proc, "resample", 2), who),
        origin=f"{who} values, run as its PIL backend (the slow processor)",
        rounding="floor",
        scale=float(proc.rescale_factor) if getattr(proc, "do_rescale", False) else 1.0,
    )


def load_image_processor(target: str) -> Any:
    """The PIL (slow) image processor of a model directory or hub id."""
    import transformers
    from transformers import AutoImageProcessor

    pil = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {"use_fast": False}
    return AutoImageProcessor.from_pretrained(target, local_files_only=hub_offline(), **pil)


def preprocess_for(loaded: LoadedModel) -> Preprocess:
    """The model's own preprocessing: a Hugging Face model's image processor (from its directory or hub id, or for
    a model object in memory the ``name_or_path`` it was loaded from), any other model's timm data config."""
    if not is_hf_model(loaded.model):
        return _timm_preprocess(loaded.model)
    spec = loaded.spec
    if spec.source == "hf":
        target = str(spec.weights) if spec.weights is not None else spec.name
    else:
        target = str(getattr(loaded.model, "name_or_path", "") or "")
    try:
        proc = load_image_processor(target)
    except (OSError, ValueError) as e:
        raise QKDissectError(
            f"no image processor for {target or type(loaded.model).__name__} ({e}); the model directory or hub "
            "cache needs its preprocessor_config.json"
        ) from e
    return _hf_preprocess(proc)
