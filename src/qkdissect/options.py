"""Every choice a user makes, defined once: its values, its default and what it means.

The command line takes its choices, defaults, range checks and help from here (:func:`add_option`); the Python
API takes the same defaults; an option's ``config`` is its key in the workflow's config, from which the rules pass
it to every pass that takes it (``qkdissect.workflow.commands.Options.pass_options``), and
``tests/unit/test_options.py`` checks the config schema's entry there (``workflow/schemas/config.schema.yaml``)
against this table, enums and defaults alike. This module imports nothing else of the package: every layer may use
it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

TokenSource = Literal["post-norm", "pre-norm"]
TOKEN_SOURCES: tuple[TokenSource, ...] = ("post-norm", "pre-norm")
Folding = Literal["raw", "folded", "folded-centred"]
FOLDINGS: tuple[Folding, ...] = ("raw", "folded", "folded-centred")
DType = Literal["float64", "float32"]
DTYPES: tuple[DType, ...] = ("float64", "float32")
NullLines = Literal["exact", "released", "both"]
NULL_LINES: tuple[NullLines, ...] = ("exact", "released", "both")
Sign = Literal["+", "-"]
SIGNS: tuple[Sign, ...] = ("+", "-")
#: the kinds of the tokens an image model puts before its patches, in the order models place them: class token,
#: DeiT's distillation token, registers (DINOv2 with registers, DINOv3)
PrefixKind = Literal["cls", "distillation", "register"]
PREFIX_KINDS: tuple[PrefixKind, ...] = ("cls", "distillation", "register")
#: a mode as figures and configs name it: (layer, head, mode, sign), 0-based
Mode = tuple[int, int, int, str]
#: the image score of a mode: the released code's product of extremes, or its clipped form (see passes.projections)
ImageScore = Literal["released", "clipped"]
IMAGE_SCORES: tuple[ImageScore, ...] = ("released", "clipped")
#: ``dedupe`` given without a distance: bits of the 64-bit perceptual hash (scikit-image's stereo pair differs in
#: 6; no two of 1000 ImageNet photographs are within 10, resized or re-encoded copies within 4)
DEDUPE_DISTANCE = 6
#: auto (CUDA when there is one), cpu, cuda or cuda:N
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"
#: a rotary model's offset: D (one axis: text) or DY,DX (an image grid), integers or decimals (1.5: between patches);
#: or the mean over the pairs of a grid (mean) or of a context of N tokens (mean:N), the content core
OFFSET_PATTERN = r"^(-?[0-9]+(\.[0-9]+)?(,-?[0-9]+(\.[0-9]+)?)?|mean(:[0-9]+)?)$"
#: the modes an ablation selects: auto, all, top:N or one mode L,H,M (0-based)
ABLATION_SELECT_PATTERN = r"^(auto|all|top:[1-9][0-9]*|[0-9]+,[0-9]+,[0-9]+)$"
#: the largest offset along any axis (and the longest context of a mean)
MAX_OFFSET = 10**6
#: an offset as the API takes it: one number (text) or one per axis (images: dy, dx); "mean" / "mean:N" the
#: interaction averaged over the pairs of tokens of the grid / of a context of N tokens
Offset = int | float | tuple[float, ...] | str


@dataclass(frozen=True)
class Option:
    """One user choice: its default, its allowed values (``choices``, or a ``pattern``, or a ``minimum`` /
    ``maximum``), its help text, and where the workflow's config sets it (``config``)."""

    default: Any
    help: str
    kind: type = str
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False  # the minimum itself is not allowed
    below: bool = False  # the maximum itself is not allowed
    #: turns the checked text into the value the API takes (a ValueError: the text is out of range)
    parse: Callable[[Any], Any] | None = None
    #: its key in the workflow's config, dotted ("projections.tokens"): the rules give its value there to every pass
    #: that takes the option (None: the config does not set it, or a rule works it out per job)
    config: str | None = None
    #: whether a store's provenance records that key: False for the options that change no number (batch sizes,
    #: worker processes, the device)
    recorded: bool = True

    def check(self, value: Any, name: str = "value") -> Any:
        """``value`` converted to the option's type, or a ValueError naming it and the allowed range."""
        try:
            v = self.kind(value)
        except (TypeError, ValueError):
            what = {int: "an integer", float: "a number"}.get(self.kind, self.kind.__name__)
            raise ValueError(f"{name} must be {what}, not {value!r}") from None
        if self.choices is not None and v not in self.choices:
            raise ValueError(f"{name} must be one of {', '.join(map(str, self.choices))}, not {value!r}")
        if self.pattern is not None and not re.fullmatch(self.pattern, str(v)):
            raise ValueError(f"{name} {value!r} is not valid: {self.help}")
        low, high = self.minimum, self.maximum
        if low is not None and (v < low or (self.above and v == low)):
            raise ValueError(f"{name} must be {'>' if self.above else '>='} {_num(low)}, not {value!r}")
        if high is not None and (v > high or (self.below and v == high)):
            raise ValueError(f"{name} must be {'<' if self.below else '<='} {_num(high)}, not {value!r}")
        if self.parse is not None:
            try:
                return self.parse(v)
            except ValueError as e:
                raise ValueError(f"{name} {value!r} is not valid: {e}") from None
        return v


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _count(default: int | None, help: str, maximum: int, **kw: Any) -> Option:
    return Option(default, help, int, minimum=1, maximum=maximum, **kw)


def parse_offset(text: str) -> Offset:
    """``D`` -> D, ``DY,DX`` -> (DY, DX): integers where they are whole numbers; ``mean`` and ``mean:N`` as they
    are (:func:`mean_context`); a ValueError beyond :data:`MAX_OFFSET`."""
    if str(text).startswith("mean"):
        mean_context(str(text))
        return str(text)
    parts = [float(t) for t in str(text).split(",")]
    if any(abs(v) > MAX_OFFSET for v in parts):
        raise ValueError(f"offsets are at most {MAX_OFFSET} in size")
    vals = tuple(int(v) if v.is_integer() else v for v in parts)
    return vals[0] if len(vals) == 1 else vals


def mean_context(text: str) -> int | None:
    """``mean`` -> None (the pairs of an image grid), ``mean:N`` -> N (the causal pairs of N tokens); a ValueError
    for anything else."""
    head, colon, n = text.partition(":")
    if head != "mean" or (colon and not n.isdigit()):
        raise ValueError(f"{text!r}: give mean (an image model's grid) or mean:N (a context of N tokens)")
    if colon and not 1 <= int(n) <= MAX_OFFSET:
        raise ValueError(f"{text!r}: a context of 1 to {MAX_OFFSET} tokens")
    return int(n) if colon else None


#: the largest top-k: the top-k arrays of a store are layer x head x mode x 2 x top_k, whatever the number of images
MAX_TOP_K = 1000
#: the largest batch of any pass (its memory grows with it: a batch that does not fit is split anyway)
MAX_BATCH = 4096


OPTIONS: dict[str, Option] = {
    "tokens": Option(
        "post-norm",
        "post-norm: the tokens W_q and W_k see (the output of the block's norm); pre-norm: the residual stream "
        "entering the block, as the released code projects it",
        choices=TOKEN_SOURCES,
        config="projections.tokens",
    ),
    "folding": Option(
        "raw",
        "raw: W_q^T W_k as the paper; folded: diag(gamma) W_q^T W_k diag(gamma) (the LayerNorm's scale); "
        "folded-centred: also its centring P (beyond the paper)",
        choices=FOLDINGS,
    ),
    "dtype": Option(
        "float64",
        "precision of the SVD (float64: reconstruction errors ~1e-13)",
        choices=DTYPES,
        config="analysis.dtype",
    ),
    #: (the rules give it with the model, beside --name and --manifest)
    "device": Option(
        "auto",
        "auto (CUDA when available), cpu, cuda, cuda:N",
        pattern=DEVICE_PATTERN,
        config="analysis.device",
        recorded=False,
    ),
    "block_rtol": Option(
        1e-3,
        "singular values closer than this fraction of the largest form one degenerate block",
        float,
        minimum=0,
        maximum=1,
        above=True,
        config="analysis.block_rtol",
    ),
    "null_level": Option(
        0.95,
        "level of the per-mode null interval",
        float,
        minimum=0,
        maximum=1,
        above=True,
        below=True,
        config="analysis.null_level",
    ),
    "null_lines": Option(
        "exact",
        "the null lines of Fig. 3, S1 and S2: exact (the interval of two isotropic vectors), released (the released "
        "notebook's baseline as published, with its errors) or both",
        choices=NULL_LINES,
        config="figures.null_lines",
    ),
    "null_rtol": Option(
        1e-4,
        "modes with s_n / s_0 below this (s_0: the head's largest) are numerically null: left out of the plain "
        "mean (head_mean, layer_mean); layer_mean_all keeps every mode, as the released code (0: every mode)",
        float,
        minimum=0,
        maximum=1,
        config="analysis.null_rtol",
    ),
    "score": Option(
        "released",
        "image score of a mode: released = max q * max k (sign +) and min q * min k (sign -), as the released code "
        "(two negative extremes give a positive score); clipped = [max q]_+ [max k]_+ and [-min q]_+ [-min k]_+",
        choices=IMAGE_SCORES,
        config="projections.score",
    ),
    "dedupe": Option(
        None,
        "drop exact and near-duplicate images: those whose 64-bit perceptual hash is within T bits of an image kept "
        f"before them in sorted id order (given without T: {DEDUPE_DISTANCE}; default: keep every image)",
        int,
        minimum=0,
        maximum=64,
    ),
    "sign": Option("+", "+: the mode (u, v); -: the opposite sign (-u, -v)", choices=SIGNS),
    "top_k": _count(
        8, "images (or passages) kept per (layer, head, mode, sign)", MAX_TOP_K, config="projections.top_k"
    ),
    "batch_size": _count(
        16, "images per batch of the projection pass", MAX_BATCH, config="projections.batch_size", recorded=False
    ),
    "logits_batch_size": _count(
        4,
        "images per batch of the logits pass (its memory grows with tokens^2)",
        MAX_BATCH,
        config="projections.logits_batch_size",
        recorded=False,
    ),
    "preference_batch_size": _count(8, "images per batch of the preference pass", MAX_BATCH),
    "same_object_batch_size": _count(4, "images per batch of the same-object pass", MAX_BATCH),
    "text_batch_size": _count(
        16, "passages per batch of the text pass", MAX_BATCH, config="projections.text_batch_size", recorded=False
    ),
    #: (a text model's own text.max_tokens replaces it for that model: the rule gives it per job)
    "max_tokens": Option(
        128, "passages are truncated to this many tokens", int, minimum=2, maximum=8192, config="projections.max_tokens"
    ),
    "same_object_top": _count(
        5, "top images per mode in the same-object probability (paper: 5)", MAX_TOP_K, config="figures.fig6.top"
    ),
    "limit": _count(None, "only the first N items, in sorted id order", 10**9),
    "atlas_grid": _count(
        16,
        "the mode atlas keeps each query and key map at most this many cells a side: a larger patch grid is "
        "averaged down to it (DINOv2 at 518 px: 37 x 37 -> 16 x 16)",
        128,
    ),
    "thumbnail": _count(224, "the mode atlas's thumbnails are at most this many pixels a side", 1024),
    "atlas_batch_size": _count(8, "images per batch of the atlas pass", MAX_BATCH),
    "ablation_select": Option(
        "auto",
        "the modes ablated, one at a time: auto (the 4 strongest of every head), top:N (the N strongest of every "
        "head), all, or L,H,M (layer, head, mode; 0-based)",
        pattern=ABLATION_SELECT_PATTERN,
        config="ablation.select",
    ),
    "ablation_batch_size": _count(
        16,
        "images per batch of the ablation pass (its ablations then run in chunks of (image, ablation) rows)",
        MAX_BATCH,
        config="ablation.batch_size",
        recorded=False,
    ),
    "offset": Option(
        None,
        "rotary (RoPE) models: the modes of the interaction of a query and a key at offset D, W_q^T R(-D) W_k, the "
        "query's position minus the key's: D in tokens for text, DY,DX in patches (rows, columns) for an image "
        "model (write --offset=-1,2 when it starts with a minus; default: 0, two tokens at the same position); "
        "mean: the interaction averaged over every pair of patches of an image model's grid, mean:N over the causal "
        "pairs of N tokens of a language model (the content core)",
        pattern=OFFSET_PATTERN,
        parse=parse_offset,
    ),
    "distance_bin": Option(
        1.0,
        "the rotary spectrum's weighted cosine by distance averages the offsets whose distance |d| rounds to the same "
        "multiple of this width (tokens; patches for images: sqrt(dy^2 + dx^2))",
        float,
        minimum=0,
        above=True,
        maximum=1e6,
        config="rotary.distance_bin",
    ),
    "workers": Option(
        None,
        "image-decoding processes (default: cores - 1, at most 4)",
        int,
        minimum=0,
        maximum=256,
        config="projections.workers",
        recorded=False,
    ),
}


def mode_label(m: Any) -> str:
    """The paper's mode code, 0-based: "L8 H9 M2" (with " (-)" for the opposite sign)."""
    layer, head, mode = (int(v) for v in m[:3])
    return f"L{layer} H{head} M{mode}" + (" (-)" if len(m) > 3 and m[3] == "-" else "")


def dedupe_distance(value: bool | int | None) -> int | None:
    """The ``dedupe`` of an image set as the passes take it: None (off) for None or False, :data:`DEDUPE_DISTANCE`
    for True, else the distance, range-checked."""
    if value is None or value is False:
        return None
    if value is True:
        return DEDUPE_DISTANCE
    return int(OPTIONS["dedupe"].check(value, "dedupe"))


def top_k_within(top_k: int, n: int, what: str) -> int:
    """``top_k`` when a set of ``n`` items (``what``: e.g. "images of folder:photos") can fill it, or up to the
    default's ranks (those beyond ``n`` stay empty); else a ValueError naming the largest top-k that fits."""
    OPTIONS["top_k"].check(top_k, "top-k")
    most = max(n, int(default("top_k")))
    if top_k > most:
        raise ValueError(
            f"top-k {top_k} is more than the {n} {what}: give at most {most} (--top-k; projections.top_k in the config)"
        )
    return top_k


def default(name: str) -> Any:
    """The default of an option."""
    return OPTIONS[name].default


def option_type(name: str, option: Option) -> Callable[[str], Any]:
    """An argparse ``type``: the option's conversion and range check, with the flag in the message."""

    def convert(text: str) -> Any:
        try:
            return option.check(text, flag_name(name))
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = option.kind.__name__  # argparse names the type in its own messages
    return convert


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the bad option and its allowed values), without the usage
    block that argparse prints before them."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def add_option(
    parser: argparse.ArgumentParser, name: str, *, flag: str | None = None, option: str | None = None, **kw: Any
) -> None:
    """``--FLAG`` (default: the option's name with dashes) with the choices, default, check and help of
    ``OPTIONS[option or name]``; ``kw`` overrides argparse arguments (e.g. ``help``)."""
    dest = flag or name
    parser.add_argument(flag_name(dest), **option_arguments(option or name, dest, **kw))


def flag_name(name: str) -> str:
    """The command line's flag of an option or a field: ``top_k`` -> ``--top-k``."""
    return f"--{name.replace('_', '-')}"


def option_arguments(name: str, dest: str | None = None, **kw: Any) -> dict[str, Any]:
    """The argparse arguments of the option ``OPTIONS[name]`` as the flag ``--DEST`` (default: its name): its
    default, check, choices and help; ``kw`` overrides them."""
    opt = OPTIONS[name]
    dest = dest or name
    args: dict[str, Any] = {
        "dest": dest,
        "default": opt.default,
        "type": option_type(dest, opt),
        "help": opt.help + (f" (default: {opt.default})" if opt.default is not None else ""),
    }
    if opt.choices is not None:
        args["choices"] = opt.choices
        args["type"] = str
    return args | kw
