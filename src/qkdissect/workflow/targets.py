"""The figure table (workflow/figures.yaml: one row per kind of figure) read against a config: which figures the
config asks for, the rows and stores of each, its notebook's parameters, the maps stores the image and text
figures draw from, the stores of the claims, and every target of `all`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from ..locations import weights_files
from ..provenance.pages import report_categories
from .commands import config_keys, stores_of, wildcard_values
from .paths import figure_outputs, model_store, projections_store, store_path, text_store, weights_manifest
from .plan import Plan, Row

Wildcards = Mapping[str, str]

CLAIMS_CATEGORY = "The paper's claims"
ATLAS_CATEGORY = "The mode atlas"

#: what each kind of store a figure reads is made from (besides its model's weights manifest; a maps store also
#: from its row's projections or text store)
MADE_FROM = {
    "modes": [],
    "scores": ["modes"],
    "scores_folded": ["modes_folded"],
    "scores_folded_centred": ["modes_folded_centred"],
    "projections": ["modes"],
    "logits": ["modes"],
    "same_object": ["modes"],
    "preference": [],
    "maps": ["modes", "scores"],
    "offsets": [],
    "spectrum": ["offsets"],
    "ablation": ["modes"],
}


def to_yaml(value: Any) -> str:
    """One line of YAML (flow style), as papermill's -y takes it."""
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()


class FigureTable:
    """The figure table against one config: ``table`` is workflow/figures.yaml as read (key -> row)."""

    def __init__(self, plan: Plan, table: Mapping[str, Any]) -> None:
        self.plan = plan
        self.table = table
        self.images = str(plan.config["projections"]["images"])
        self.corpus = str(plan.config["projections"]["texts"])
        #: the report's categories numbered in the paper's order (Fig. 1..6, S1..S19, the claims, then beyond the
        #: paper): the report lists categories alphabetically
        self.report_categories = report_categories(
            [f["category"] for f in table.values()] + [CLAIMS_CATEGORY, ATLAS_CATEGORY]
        )
        self._rows = self._rows_getters()
        #: every figure the config asks for: stem -> (table key, wildcards)
        self.stems = {table[key]["output"].format(**w): (key, w) for key in table for w in self.figure_instances(key)}
        #: the figures that draw from maps stores, and the rows each has: (stem, index, model)
        self.maps = [
            (stem, i, r["model"])
            for stem, (key, w) in self.stems.items()
            if table[key].get("maps")
            for i, r in enumerate(self.figure_rows(key, w))
        ]

    # ------------------------------------------------------------------------------------- rows and instances
    def _rows_getters(self) -> dict[str, Callable[[str | None], list[Row]]]:
        """figures.<rows> of the config -> the figure's rows [{model, ...}] (the argument: the instance's name,
        for galleries and s17)."""
        fig, plan = self.plan.figures, self.plan

        def models(key: str) -> Callable[[str | None], list[Row]]:
            return lambda name: [{"model": m} for m in plan.figure_models(key)]

        def entries(rows: list[Row]) -> list[Row]:
            return [{"modes": "auto", **r} for r in rows]

        return {
            **{k: models(k) for k in ("fig3", "s1", "s2", "ln_folding", "logits", "s4", "ablation")},
            "s3": lambda name: [{"model": fig["s3"][p]} for p in ("encoder", "predictor")] if fig["s3"] else [],
            "fig1": lambda name: entries(fig["fig1"]),
            "fig4": lambda name: entries(fig["fig4"]),
            "galleries": lambda name: entries(fig["galleries"][name]),
            "fig5": lambda name: [dict(fig["fig5"])] if fig["fig5"] else [],
            "s17": lambda name: [dict(fig["s17"][name])],
            "fig2": lambda name: [{"model": m} for m in plan.mask_figure_models("fig2")],
            "fig6": lambda name: [{"model": m} for m in plan.mask_figure_models("fig6")],
            "text_modes": lambda name: plan.text_mode_rows(),
            "rotary": lambda name: [{"model": m} for m in plan.rotary_models],
        }

    def rows_of(self, rows: str, name: str | None) -> list[Row]:
        return self._rows[rows](name)

    def figure_rows(self, key: str, wildcards: Wildcards) -> list[Row]:
        """The rows of one figure (its models, and for image and text figures what each row shows)."""
        fig = self.table[key]
        rows = self.rows_of(fig["rows"], wildcards.get("name"))
        if fig.get("each") == "model":
            rows = [r for r in rows if r["model"] == wildcards["model"]]
        return rows

    def figure_instances(self, key: str) -> list[dict[str, str]]:
        """The wildcards of every figure a row of the table makes under this config."""
        fig = self.table[key]
        each = fig.get("each")
        section: Any = self.plan.figures.get(fig["rows"])
        found: list[dict[str, str]]
        if each is None:
            found = [{}]
        elif each == "model":
            found = [{"model": r["model"]} for r in self.rows_of(fig["rows"], None)]
        elif each == "name":
            found = [{"name": n} for n in section]
        elif each == "dataset":
            found = [{"dataset": d} for d in section["datasets"]] if section else []
        else:
            ((wc, values),) = each.items()
            found = [{wc: v} for v in values]
        return [w for w in found if self.figure_rows(key, w)]

    def figure_wildcards(self, key: str) -> dict[str, str]:
        """Each wildcard of a figure rule matches the instances the config asks for, and nothing else."""
        values: dict[str, list[str]] = {}
        for w in self.figure_instances(key):
            for k, v in w.items():
                values.setdefault(k, []).append(v)
        names = re.findall(r"{(\w+)}", self.table[key]["output"])
        return {n: "|".join(re.escape(v) for v in values[n]) if n in values else "(?!)x" for n in names}

    def all_figures(self) -> list[str]:
        return [f for stem in self.stems for f in figure_outputs(stem)]

    # ------------------------------------------------------------------------------------- stores and parameters
    def figure_stores(self, key: str, wildcards: Wildcards) -> dict[str, Any]:
        """role -> the stores of the figure's rows (a list; one path when the figure is made per model)."""
        fig = self.table[key]
        stem = fig["output"].format(**wildcards)
        rows = self.figure_rows(key, wildcards)
        out: dict[str, Any] = {}
        for role, kind in fig["stores"].items():
            paths = [store_path(kind, r["model"], self.images, wildcards, stem, i) for i, r in enumerate(rows)]
            out[role] = paths[0] if fig.get("each") == "model" else paths
        return out

    def table_value(self, value: Any, wildcards: Wildcards) -> Any:
        """A value of the figure table: "config:KEY" is figures.KEY of the config, "{wildcard}" is filled in."""
        if isinstance(value, str) and value.startswith("config:"):
            return self.plan.figures[value.removeprefix("config:")]
        return value.format(**wildcards) if isinstance(value, str) else value

    def options_of(self, key: str, wildcards: Wildcards) -> dict[str, Any]:
        """A figure's notebook `options`: its figure-table options with the config's values, and its models'
        styles."""
        options = {k: self.table_value(v, wildcards) for k, v in (self.table[key].get("options") or {}).items()}
        options["styles"] = self.plan.model_styles(dict.fromkeys(r["model"] for r in self.figure_rows(key, wildcards)))
        return options

    def figure_config_keys(self, key: str) -> Callable[[Any], str]:
        """A `params:` value: the config sections a figure records, its figures.* key paths ("{name}" parts filled
        from wildcards)."""
        return config_keys(*(["figures", *k] for k in self.table[key]["config"]))

    def figure_parameters(self, key: str) -> Callable[[Any, Any], str]:
        """The `params:` function of a figure rule: its notebook's parameters `stores` and `options` as YAML."""

        def parameters(wildcards: Any, input: Any) -> str:
            w = wildcard_values(wildcards)
            return to_yaml({"stores": stores_of(self.figure_stores(key, w), input), "options": self.options_of(key, w)})

        return parameters

    def figure_options(self, key: str) -> Callable[[Any], str]:
        """A `params:` value: the figure's options and styles alone (YAML). Snakemake compares the params that do
        not depend on a job's input (a rerun trigger) and so redraws the figure when one of its options (null_lines,
        a variant) or a model's label, colour or line style changes in the config; `figure_parameters`, which reads
        the input, does not count."""

        def options(wildcards: Any) -> str:
            return to_yaml(self.options_of(key, wildcard_values(wildcards)))

        return options

    # ------------------------------------------------------------------------------------- maps
    def maps_row(self, wildcards: Any) -> tuple[str, dict[str, str], Row]:
        """(figure key, figure wildcards, row) of a maps store (wildcards: the job's, or a mapping of stem and
        index)."""
        wc = wildcard_values(wildcards)
        key, w = self.stems[wc["stem"]]
        return key, w, self.figure_rows(key, w)[int(wc["index"])]

    def maps_request(self, wildcards: Any) -> str:
        """The maps request of one figure row (JSON): the table's fixed fields, then the row's config entry."""
        key, _, row = self.maps_row(wildcards)
        request = {k: self.table_value(v, {}) for k, v in self.table[key]["maps"].items()}
        request.update({k: v for k, v in row.items() if k != "model"})
        return json.dumps(request, separators=(",", ":"))

    def maps_source(self, wildcards: Any) -> str:
        """What the maps pass reads the top images (or passages) from: the row's projections or text store."""
        key, _, row = self.maps_row(wildcards)
        model = row["model"]
        if self.table[key]["maps"]["kind"] == "text-top":
            return text_store(model, self.corpus)
        return projections_store(model, self.images)

    def maps_config_keys(self, wildcards: Any) -> str:
        """The config sections a maps store records: the model's entry and its figure's keys."""
        key, w, row = self.maps_row(wildcards)
        figure = [["figures", *(part.format(**w) for part in k)] for k in self.table[key]["config"]]
        return json.dumps([["models", row["model"]], *figure], separators=(",", ":"))

    # ------------------------------------------------------------------------------------- claims, `all`
    def claims_stores(self) -> dict[str, list[str]]:
        """role -> stores: the Fig. 3 image models' scores, the S4 models' projections, Fig. 2's and Fig. 6's first
        mask dataset, and the S3 encoder and predictor."""
        plan, fig = self.plan, self.plan.figures
        image_models = set(plan.image_models)
        stores = {"scores": [model_store("scores", m) for m in plan.figure_models("fig3") if m in image_models]}
        stores["projections"] = [projections_store(m, self.images) for m in plan.figure_models("s4")]
        for key, kind in (("fig2", "preference"), ("fig6", "same_object")):
            if fig[key]:
                dataset = fig[key]["datasets"][0]
                stores[kind] = [f"results/{kind}/{m}/{dataset}.zarr" for m in plan.mask_figure_models(key)]
        if fig["s3"]:
            stores["s3"] = [model_store("scores", fig["s3"][k]) for k in ("encoder", "predictor")]
        return stores

    def figure_models_used(self) -> set[str]:
        """Every model a figure the config asks for draws."""
        return {r["model"] for key, w in self.stems.values() for r in self.figure_rows(key, w)}

    def intermediates(self) -> list[str]:
        """Every store and weights manifest the figures are made from, upstream ones included, and the files
        converted from wheels: targets of `all`. Snakemake remakes a missing file only for a job that runs, so
        without this a store deleted after a run would stay missing (while `qkdissect audit` flags everything made
        from it); as a target it is made again, and what was made from it after it."""
        out: set[str] = set()
        models: set[str] = set()
        for stem, (key, w) in self.stems.items():
            rows = self.figure_rows(key, w)
            for kind in self.table[key]["stores"].values():
                for i, row in enumerate(rows):
                    m = row["model"]
                    models.add(m)
                    out.add(store_path(kind, m, self.images, w, stem, i))
                    out.update(model_store(k, m) for k in MADE_FROM[kind])
                    if kind == "maps":
                        out.add(self.maps_source({"stem": stem, "index": str(i)}))
        out.update(weights_manifest(m) for m in models)
        converted = {str(p) for m in models for p in weights_files(self.plan.spec_of(m)).converted}
        return sorted(out) + sorted(converted)

    def rotary_targets(self) -> list[str]:
        """What `all` makes beyond the figures: the content cores, when rotary.content_core asks for them."""
        if not self.plan.config["rotary"]["content_core"]:
            return []
        return [model_store("modes_core", m) for m in self.plan.rotary_models]
