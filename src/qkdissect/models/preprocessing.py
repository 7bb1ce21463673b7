"""Each model's own image preprocessing (resize, centre crop, normalisation), read from its Hugging Face image
processor or its timm data config, as a :class:`~qkdissect.data.images.Preprocess` every image pass uses."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.images import Preprocess
from ..errors import QKDissectError
from .sources.base import LoadedModel, hub_offline


def _timm_preprocess(model: Any) -> Preprocess:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    _, h, w = cfg["input_size"]
    own = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if own is not None and tuple(own) != (h, w):  # created at another size than its pretrained config says
        h, w = (int(own[0]), int(own[1]))
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    return Preprocess(
        crop=(h, w),
        resize=int(np.floor(min(h, w) / crop_pct)),
        mean=tuple(cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(cfg["std"]),  # type: ignore[arg-type]
        interpolation=str(cfg.get("interpolation") or "bicubic"),
        origin="timm data config",
    )


def _hf_preprocess(proc: Any) -> Preprocess:
    """The geometry and normalisation of a Hugging Face image processor: ``size`` as a shortest edge (resize the
    shorter side) or as a height and width (resize to exactly that), then the ``crop_size`` centre crop when
    ``do_center_crop`` is set (CLIP: 224 from a shorter side of 224; DeiT: 224 x 224 from 256 x 256)."""
    d = proc.to_dict() if hasattr(proc, "to_dict") else dict(proc)
    size = d.get("size") or {}
    crop = d.get("crop_size") or {}
    resample = d.get("resample", 3)
    names = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}
    interp = names.get(int(resample), "bicubic") if isinstance(resample, int) else "bicubic"
    resize: int | tuple[int, int] | None
    if "shortest_edge" in size:
        resize = int(size["shortest_edge"])
        full = (resize, resize)
    else:
        full = (int(size.get("height", 224)), int(size.get("width", 224)))
        resize = None
    if d.get("do_center_crop") and crop:
        cropped = (int(crop.get("height", full[0])), int(crop.get("width", full[1])))
        if resize is None and cropped != full:
            resize = full
    else:
        cropped = full
    mean = tuple(float(v) for v in d.get("image_mean", (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in d.get("image_std", (0.5, 0.5, 0.5)))
    return Preprocess(cropped, resize, mean, std, interp, origin=f"Hugging Face {type(proc).__name__}")  # type: ignore[arg-type]


def preprocess_for(loaded: LoadedModel) -> Preprocess:
    """The model's own preprocessing: a Hugging Face model's image processor (from its directory or hub id, or for
    a model object in memory the ``name_or_path`` it was loaded from), any other model's timm data config."""
    from transformers import PreTrainedModel

    if not isinstance(loaded.model, PreTrainedModel):
        return _timm_preprocess(loaded.model)
    from transformers import AutoImageProcessor

    spec = loaded.spec
    if spec.source == "hf":
        target = str(spec.weights) if spec.weights is not None else spec.name
    else:
        target = str(getattr(loaded.model, "name_or_path", "") or "")
    try:
        proc = AutoImageProcessor.from_pretrained(target, local_files_only=hub_offline())
    except (OSError, ValueError) as e:
        raise QKDissectError(
            f"no image processor for {target or type(loaded.model).__name__} ({e}); the model directory or hub "
            "cache needs its preprocessor_config.json"
        ) from e
    return _hf_preprocess(proc)
