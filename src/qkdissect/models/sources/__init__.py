"""Where weights come from: one module per source, each registering itself (:func:`.base.register`) when it is
imported here. A new source is a new module and one line below. None of them imports torch to read a spec or to
list the files of a weights manifest: only to read or build a model."""

from ...catalogue import KNOWN_MODELS, NOT_A_SPEC, spec_source
from ...errors import UnknownModelError
from ..spec import ModelSpec, parse_options
from . import hf, ijepa, imgfocus, minilm, simmim, smollm2, timm
from .base import REGISTRY, LoadedModel, Source

__all__ = ["REGISTRY", "LoadedModel", "Source", "hf", "ijepa", "imgfocus", "minilm", "parse_spec", "simmim", "smollm2",
           "timm"]  # fmt: skip


def parse_spec(spec: str | ModelSpec) -> ModelSpec:
    """Parse a model spec string (see :mod:`qkdissect.models`); known short names resolve through the catalogue.
    The text after ``SOURCE:`` is read by that source (none of them imports torch to read it)."""
    if isinstance(spec, ModelSpec):
        return spec
    if spec in KNOWN_MODELS:
        return parse_spec(KNOWN_MODELS[spec].spec)
    if spec_source(spec) is None:
        raise UnknownModelError(spec, list(KNOWN_MODELS), NOT_A_SPEC)
    source, sep, rest = spec.partition(":")
    if not sep:
        return ModelSpec("hf", spec)  # bare ORG/NAME hub id
    rest, _, query = rest.partition("?")
    rest, _, part = rest.partition("#")
    return REGISTRY[source].parse(rest, part, parse_options(query))
