"""Where weights come from: one module per source, each registering itself (:func:`.base.register`) when it is
imported here. A new source is a new module and one line below."""

from . import hf, ijepa, imgfocus, minilm, simmim, smollm2, timm
from .base import REGISTRY, LoadedModel, Source

__all__ = ["REGISTRY", "LoadedModel", "Source", "hf", "ijepa", "imgfocus", "minilm", "simmim", "smollm2", "timm"]
