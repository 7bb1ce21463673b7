"""What a pass is asked to do, declared once per pass: a frozen dataclass of its model, its inputs, its output and
its options.

The command line builds its commands from these declarations (:mod:`qkdissect.cli`: every field with a ``cli``
entry is a flag or an argument; an option's choices, default, range check and help come from
:data:`qkdissect.options.OPTIONS`), the Python API (:mod:`qkdissect.api`) takes the same fields as keyword arguments
and its signatures show them, and the pass (``qkdissect.passes.*``) reads them from the request it is given. The
workflow's rules call the command line: the fields the config sets (:meth:`Request.configured`: an option's
``config`` key, or a ``given`` field's) reach it as the flags of one ``params.options``
(``qkdissect.workflow.commands.Options.pass_options``), and the provenance records their keys. So adding an option
to a pass is one field here, where the pass reads it, and the option's entry in the options table (with its config
key: then also the config schema's entry and the default config's line).

The model a pass loads travels as one :class:`ModelContext` (spec, device, name, manifest). This module imports
nothing heavy: ``qkdissect --help`` reads it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self

from .errors import QKDissectError
from .options import (
    DEDUPE_DISTANCE,
    OPTIONS,
    DType,
    Folding,
    ImageScore,
    Offset,
    TokenSource,
    dedupe_distance,
    default,
    flag_name,
)

#: a model as the passes take it: a spec string (or parsed spec), or a model object in memory (models.ModelLike)
Spec = Any
#: a store a pass reads: its path, or the Dataset in memory (passes.io.StoreLike)
Store = Any
#: a weights manifest: the dict, or the path of its JSON file (then recorded as an input)
Manifest = dict[str, Any] | str | Path | None


@dataclass(frozen=True)
class ModelContext:
    """The model a pass loads: its spec (or the model in memory), the device it runs on, its name in the stores
    (None: the spec as loaded) and the weights manifest the loaded weights must match."""

    spec: Spec
    device: str = default("device")
    name: str | None = None
    manifest: Manifest = None


# ------------------------------------------------------------------------------------------- field declarations
def option(key: str, **cli: Any) -> Any:
    """A field that is the option ``OPTIONS[key]``: its default here, its flag, choices, check and help on the
    command line (``cli``: argparse arguments that differ, e.g. ``metavar``)."""
    return field(default=OPTIONS[key].default, metadata={"option": key, "cli": cli})


def given(
    *flags: str, default: Any = dataclasses.MISSING, parse: Any = None, config: str | None = None, **cli: Any
) -> Any:
    """An input or a choice that is not in the options table: ``flags`` on the command line (none: a positional
    argument; a flag without a default is required there), ``parse`` turns the command line's text into the value
    (raising :class:`~qkdissect.errors.QKDissectError` for a bad one), ``config`` its key in the workflow's config
    (dotted; for a switch, whether the switch is given), which the provenance records."""
    if flags and default is dataclasses.MISSING:
        cli = {"required": True, **cli}
    meta = {"cli": cli, "flags": flags, "parse": parse, "config": config}
    return field(metadata=meta) if default is dataclasses.MISSING else field(default=default, metadata=meta)


def model_field(help: str, *, device: bool = True, **cli: Any) -> Any:
    """The model: a positional argument (``help``), with ``--device`` (where the pass takes one), ``--name`` and
    ``--manifest``."""
    return field(metadata={"model": True, "cli": {"help": help, **cli}, "device": device})


def output_field(help: str | None = None) -> Any:
    """``-o``: the store the pass writes (optional in the API: without it the result stays in memory)."""
    return field(default=None, metadata={"cli": {"required": True, "help": help}, "flags": ("-o", "--output")})


def shard_field(what: str) -> Any:
    """``--shard K/N``: only shard K of N of ``what`` (a string or a :class:`~qkdissect.passes.shards.Shard`)."""
    help = (
        f"only shard K of N of {what} (whole batches; the same --batch-size for every shard), into a shard store "
        "that `qkdissect merge-shards` merges with the others into the store one job writes"
    )
    return field(default=None, metadata={"cli": {"metavar": "K/N", "help": help}, "flags": ("--shard",)})


def _json(flag: str, example: str) -> Any:
    def parse(text: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise QKDissectError(f"{flag} is not JSON ({e}): e.g. {example}") from e

    return parse


@dataclass(frozen=True)
class Configured:
    """A field of a request that the workflow's config sets: the field, its key in the config (a path of keys), its
    flag on the command line, whether it is a switch (the config's true gives the flag alone), whether it takes
    several values after its flag, and whether the provenance records its key."""

    name: str
    key: tuple[str, ...]
    flag: str
    switch: bool
    many: bool
    recorded: bool


def configured_field(f: Field[Any]) -> Configured | None:
    """The field ``f`` as the config sets it (None: the config does not): an option with a ``config`` key, its flag
    the field's name; a :func:`given` field with one, its flag its long one."""
    meta = f.metadata
    if "option" in meta:
        opt = OPTIONS[meta["option"]]
        key, flag, recorded = opt.config, flag_name(f.name), opt.recorded
    else:
        key, flag, recorded = meta.get("config"), next((s for s in meta.get("flags", ()) if s[:2] == "--"), ""), True
    if key is None:
        return None
    cli = meta["cli"]
    switch = cli.get("action") in ("store_true", "store_false")
    return Configured(f.name, tuple(key.split(".")), flag, switch, cli.get("nargs") in ("+", "*"), recorded)


# ---------------------------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Request:
    """The base of every pass's request. ``COMMAND``: its command; ``HELP``: its one line; ``RUNS``: the pass
    (``module:function`` under :mod:`qkdissect.passes`); ``POSITIONAL``: the fields the pass's ``compute_*``
    takes by position."""

    COMMAND: ClassVar[str]
    HELP: ClassVar[str]
    RUNS: ClassVar[str]
    POSITIONAL: ClassVar[tuple[str, ...]]
    #: other names of fields (those of the passes' ``compute_*``)
    ALIASES: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        if "dedupe" in self.names():  # True: the default distance; range-checked
            object.__setattr__(self, "dedupe", dedupe_distance(self.dedupe))  # type: ignore[attr-defined]

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def build(cls, *args: Any, **kw: Any) -> Self:
        """The request of ``compute_*(*args, **kw)`` and of the API: the fields of :attr:`POSITIONAL` by position,
        the others by name; ``spec``, ``device``, ``name`` (or ``model_key``) and ``manifest`` make the model."""
        if len(args) > len(cls.POSITIONAL):
            raise TypeError(f"{cls.__name__} takes {len(cls.POSITIONAL)} positional arguments, not {len(args)}")
        values = dict(zip(cls.POSITIONAL, args, strict=False))
        for key, value in kw.items():
            key = {"model_key": "name", **cls.ALIASES}.get(key, key)
            if key in values:
                raise TypeError(f"{cls.__name__} got two values for {key}")
            values[key] = value
        if "model" in cls.names():
            parts = {k: values.pop(k) for k in ("device", "name", "manifest") if k in values}
            spec = values.pop("model", None)
            if not isinstance(spec, ModelContext):
                values["model"] = ModelContext(spec, **parts)
            else:
                values["model"] = dataclasses.replace(spec, **parts)
        return cls(**values)

    @classmethod
    def configured(cls) -> list[Configured]:
        """The fields the workflow's config sets, in the order of the fields."""
        return [c for c in map(configured_field, fields(cls)) if c is not None]

    def options(self) -> dict[str, Any]:
        """The pass's options (every field but the model, the inputs, the output and ``progress``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if "option" in f.metadata}


@dataclass(frozen=True)
class ModesRequest(Request):
    COMMAND = "modes"
    HELP = "SVD of every head's W_q^T W_k -> Zarr store(s)"
    RUNS = "weights:run_modes"
    POSITIONAL = ("model", "output")

    model: ModelContext = model_field("known model name or spec (see `qkdissect models`)", nargs="+")
    output: str | Path | None = output_field("OUT.zarr for one model, a directory for several")
    dtype: DType = option("dtype")
    block_rtol: float = option("block_rtol")
    folding: Folding = option("folding")
    offset: Offset | None = option("offset", metavar="D|DY,DX|mean[:N]")
    progress: bool = True


@dataclass(frozen=True)
class OffsetsRequest(Request):
    COMMAND = "offsets"
    HELP = "rotary (RoPE) models: singular values and cosines of W_q^T R(-d) W_k at many offsets d -> Zarr store"
    RUNS = "offsets:run_offsets"
    POSITIONAL = ("model", "offsets", "output")

    model: ModelContext = model_field("known model name or spec of a rotary model")
    #: "N" / "A:B" / "all" as the command line gives it (:func:`qkdissect.passes.offsets.parse_offsets`), or offsets
    offsets: Any = given(
        "--offsets",
        metavar="N|A:B|all",
        help="N: offsets 0..N-1 (the query's position minus the key's: a decoder's query and the N keys up to it); "
        "A:B: offsets A..B-1; all: an image model (2-D RoPE), every offset (dy, dx) between two patches of its grid",
    )
    output: str | Path | None = output_field("offsets store (.zarr)")
    progress: bool = True


@dataclass(frozen=True)
class SpectrumRequest(Request):
    COMMAND = "spectrum"
    HELP = (
        "rotary (RoPE) models: each rotation plane's share of every head's interaction, and with an offsets store the "
        "weighted cosine by distance |d| -> Zarr store"
    )
    RUNS = "spectrum:run_spectrum"
    POSITIONAL = ("model", "offsets_store", "output")
    ALIASES: ClassVar[dict[str, str]] = {"offsets": "offsets_store"}

    model: ModelContext = model_field("known model name or spec of a rotary model", device=False)
    offsets_store: Store | None = given(
        default=None, nargs="?", metavar="OFFSETS", help="offsets store of the same model (`qkdissect offsets`)"
    )
    output: str | Path | None = output_field("spectrum store (.zarr)")
    distance_bin: float = option("distance_bin")
    progress: bool = True


@dataclass(frozen=True)
class ScoresRequest(Request):
    COMMAND = "scores"
    HELP = "per-mode cosines and per-layer averages of a modes store"
    RUNS = "scores:run_scores"
    POSITIONAL = ("modes", "output")

    modes: Store = given(help="a store written by `qkdissect modes`")
    output: str | Path | None = output_field()
    released_code: bool = given(
        "--released-code",
        default=False,
        config="analysis.released_code",
        action="store_true",
        help="divide the weighted average by d_head as the released notebook does (a mean over modes, not the sum)",
    )
    level: float = option("null_level")
    null_rtol: float = option("null_rtol")
    progress: bool = True


#: the image sets a pass over images takes
IMAGES = "skimage | folder:/path | imagenet-val:/path | imagenet-hf[:/hub-cache][@rev]"
MODES = "modes store of that model"
OF_MODES = "the model the modes store was computed from"


@dataclass(frozen=True)
class ProjectRequest(Request):
    COMMAND = "project"
    HELP = "project image tokens onto every mode: per-image max/min maps, top-k images, anisotropy"
    RUNS = "projections:run_projections"
    POSITIONAL = ("model", "modes", "images", "output")

    model: ModelContext = model_field(f"{OF_MODES} (name or spec)")
    modes: Store = given("--modes", help=MODES)
    images: str = given(
        "--images", help="skimage | folder:/path (or a path) | imagenet-val:/path | imagenet-hf[:/hub-cache][@rev]"
    )
    output: str | Path | None = output_field("projections store (.zarr)")
    batch_size: int = option("batch_size")
    tokens: TokenSource = option("tokens")
    top_k: int = option("top_k")
    workers: int | None = option("workers")
    score: ImageScore = option("score")
    limit: int | None = option("limit")
    dedupe: int | None = option("dedupe", nargs="?", const=DEDUPE_DISTANCE, metavar="T")
    shard: Any = shard_field("the image set")
    progress: bool = True


@dataclass(frozen=True)
class TextRequest(Request):
    COMMAND = "project-text"
    HELP = "beyond the paper: project a text model's tokens onto every mode; top passages per mode"
    RUNS = "text:run_text_projections"
    POSITIONAL = ("model", "modes", "corpus", "output")
    ALIASES: ClassVar[dict[str, str]] = {"corpus_spec": "corpus"}

    model: ModelContext = model_field("the text model the modes store was computed from (name or spec)")
    modes: Store = given("--modes", help=MODES)
    corpus: str = given("--corpus", default="pydoc-topics", help="pydoc-topics (bundled with Python) | file:/path")
    output: str | Path | None = output_field("text projections store (.zarr)")
    batch_size: int = option("text_batch_size")
    tokens: TokenSource = option("tokens")
    top_k: int = option("top_k")
    max_tokens: int = option("max_tokens")
    limit: int | None = option("limit")
    progress: bool = True


@dataclass(frozen=True)
class LogitsRequest(Request):
    COMMAND = "logits"
    HELP = "beyond the paper: logit variance shares of the modes and bias terms, top-k modes, who wins the softmax"
    RUNS = "logits:run_logit_stats"
    POSITIONAL = ("model", "modes", "images", "output")

    model: ModelContext = model_field(OF_MODES)
    modes: Store = given("--modes", help=MODES)
    images: str = given("--images", help=IMAGES)
    output: str | Path | None = output_field("logits store (.zarr)")
    batch_size: int = option("logits_batch_size")
    workers: int | None = option("workers")
    limit: int | None = option("limit")
    dedupe: int | None = option("dedupe", nargs="?", const=DEDUPE_DISTANCE, metavar="T")
    progress: bool = True


@dataclass(frozen=True)
class AblationRequest(Request):
    COMMAND = "ablate"
    HELP = (
        "what removing a mode changes: each mode's term taken out of its head's attention logits; the head's "
        "attention change and the model's output change, on the image set and on the mode's top images"
    )
    RUNS = "ablation:run_ablation"
    POSITIONAL = ("model", "modes", "images", "output")

    model: ModelContext = model_field(f"{OF_MODES} (a timm vision transformer)")
    modes: Store = given("--modes", help=MODES)
    images: str = given("--images", help=IMAGES)
    output: str | Path | None = output_field("ablation store (.zarr)")
    #: "auto", "top:N", "all", or modes (layer, head, mode) (see passes.ablation.select_modes)
    select: Any = option("ablation_select", nargs="+", metavar="MODES")
    projections: Store | None = given(
        "--projections", default=None, help="its projections store: also average over each mode's own top images"
    )
    mean: bool = given(
        "--mean",
        default=False,
        config="ablation.mean",
        action="store_true",
        help="mean-ablation: replace the term by its mean over the images",
    )
    outputs: bool = given(
        "--attention-only",
        default=True,
        config="ablation.attention_only",
        action="store_false",
        help="the head's attention change only (not the model's output)",
    )
    batch_size: int = option("ablation_batch_size")
    workers: int | None = option("workers")
    limit: int | None = option("limit")
    dedupe: int | None = option("dedupe", nargs="?", const=DEDUPE_DISTANCE, metavar="T")
    progress: bool = True


@dataclass(frozen=True)
class PreferenceRequest(Request):
    COMMAND = "preference"
    HELP = "attention preference on images with masks (paper Fig. 2): same / different / background"
    RUNS = "preference:run_preference"
    POSITIONAL = ("model", "dataset", "output")

    model: ModelContext = model_field("known model name or spec")
    dataset: str = given("--dataset", help="synthetic[:N] | o3:/path | voc:/path")
    output: str | Path | None = output_field("preference store (.zarr)")
    example: int = given(
        "--example",
        default=0,
        config="figures.fig2.example",
        type=int,
        help="the image whose crop the store keeps (Fig. 2, panel A)",
    )
    batch_size: int = option("preference_batch_size")
    limit: int | None = option("limit")
    shard: Any = shard_field("the dataset")
    progress: bool = True


@dataclass(frozen=True)
class SameObjectRequest(Request):
    COMMAND = "same-object"
    HELP = "probability that a mode's query and key sides pick the same object (paper Fig. 6)"
    RUNS = "same_object:run_same_object"
    POSITIONAL = ("model", "modes", "dataset", "output")

    model: ModelContext = model_field(OF_MODES)
    modes: Store = given("--modes", help=MODES)
    dataset: str = given("--dataset", help="ade20k:/path | voc:/path | synthetic[:N] (object masks)")
    output: str | Path | None = output_field()
    top: int = option("same_object_top")
    batch_size: int = option("same_object_batch_size")
    tokens: TokenSource = option("tokens")
    score: ImageScore = option("score")
    limit: int | None = option("limit")
    shard: Any = shard_field("the dataset")
    progress: bool = True


@dataclass(frozen=True)
class MapsRequest(Request):
    COMMAND = "maps"
    HELP = (
        "what an image or text figure draws: the chosen modes, their top images (or passages) with their query and "
        "key maps, and the crops, so that figures never load a model"
    )
    RUNS = "maps:run_maps"
    POSITIONAL = ("model", "modes", "scores", "source", "request", "output")

    model: ModelContext = model_field("the model the stores were computed from")
    modes: Store = given("--modes", help=MODES)
    scores: Store = given("--scores", help="its scores store")
    source: Store = given("--source", help="its projections store (images) or text projections store")
    #: what to draw (see qkdissect.passes.maps)
    request: dict[str, Any] = given(
        "--request",
        parse=_json("--request", '\'{"kind": "top", "modes": "auto"}\''),
        help='JSON: {"kind": "top" | "image-modes" | "image-top" | "text-top", "modes": "auto" or [[l, h, m(, s)]], '
        '"k": 8, "image": ID, ...} (see qkdissect.passes.maps)',
    )
    output: str | Path | None = output_field("maps store (.zarr)")
    progress: bool = True


@dataclass(frozen=True)
class AtlasMapsRequest(Request):
    COMMAND = "atlas-maps"
    HELP = "the atlas pass: the query and key maps of every mode's top images (8-bit) and their thumbnails"
    RUNS = "atlas:run_atlas_maps"
    POSITIONAL = ("model", "modes", "projections", "output")

    model: ModelContext = model_field("the model the stores were computed from")
    modes: Store = given("--modes", help=MODES)
    projections: Store = given("--projections", help="its projections store (the top images per mode)")
    output: str | Path | None = output_field("atlas maps store (.zarr)")
    batch_size: int = option("atlas_batch_size")
    grid: int = option("atlas_grid")
    thumbnail: int = option("thumbnail")
    shard: Any = shard_field("the top images")
    progress: bool = True


#: every pass's request, in the order the command line lists them
REQUESTS: tuple[type[Request], ...] = (
    ModesRequest,
    OffsetsRequest,
    SpectrumRequest,
    ScoresRequest,
    ProjectRequest,
    TextRequest,
    LogitsRequest,
    AblationRequest,
    PreferenceRequest,
    SameObjectRequest,
    MapsRequest,
    AtlasMapsRequest,
)
