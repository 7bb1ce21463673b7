"""The stores of a results folder the atlas is made from, found where the workflow writes them::

    RESULTS/modes/<model>.zarr, RESULTS/scores/<model>.zarr       every mode's singular value and cosine
    RESULTS/projections/<model>/<images>.zarr                     the top images per mode (the atlas pass reads it)
    RESULTS/atlas_maps/<model>/<images>.zarr                      their maps (made by the atlas pass when missing)
    RESULTS/ablation/<model>/<images>.zarr                        each mode's ablation effect, when there
    RESULTS/weights/<model>.json                                  the weights manifest the pass checks, when there

The image models are those with a projections store (text models have none: the atlas leaves them out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import QKDissectError
from ..provenance.records import store_attrs, tree_sha256
from .payload import NAME, AtlasStores


@dataclass(frozen=True)
class FoundModel:
    """One model of a results folder, its stores (the atlas maps store may not exist yet) and how to load it."""

    key: str
    images: str
    projections: Path
    stores: AtlasStores
    manifest: Path | None

    @property
    def spec(self) -> str:
        """The model's spec, as its projections store records it."""
        return str(store_attrs(self.projections)["spec"])

    def maps_current(self) -> bool:
        """Whether the atlas maps store exists and was made from the projections store as it is now."""
        if not self.stores.maps.exists():
            return False
        inputs = (store_attrs(self.stores.maps).get("provenance") or {}).get("inputs") or {}
        recorded = (inputs.get("projections store") or {}).get("sha256")
        return bool(recorded) and recorded == tree_sha256(self.projections)


def _named(path: Path, what: str) -> str:
    name = path.name.removesuffix(".zarr")
    if not NAME.fullmatch(name):
        raise QKDissectError(f"{what} {name!r} ({path}) is not a name the atlas takes: letters, digits, '.', '_', '-'")
    return name


def _image_set(results: Path, key: str, images: str | None) -> tuple[str, Path]:
    found = sorted((results / "projections" / key).glob("*.zarr"))
    if images is not None:
        want = results / "projections" / key / f"{images}.zarr"
        if want not in found:
            raise QKDissectError(f"{key} has no projections store on the image set {images!r} ({want})")
        return images, want
    if len(found) != 1:
        sets = ", ".join(p.stem for p in found)
        raise QKDissectError(f"{key} is projected on several image sets ({sets}): choose one with --images")
    return _named(found[0], "image set"), found[0]


def find_models(
    results: str | Path, models: Sequence[str] | None = None, images: str | None = None
) -> list[FoundModel]:
    """The image models of ``results`` (or the ``models`` named) with the stores the atlas reads."""
    root = Path(results)
    projected = sorted(p for p in (root / "projections").glob("*") if p.is_dir() and any(p.glob("*.zarr")))
    keys = [_named(p, "model") for p in projected]
    if models:
        unknown = [m for m in models if m not in keys]
        if unknown:
            raise QKDissectError(
                f"no projections store of {', '.join(unknown)} under {root / 'projections'} (projected: "
                f"{', '.join(keys) or 'none'}): project the model on an image set first"
            )
        keys = list(dict.fromkeys(models))
    if not keys:
        raise QKDissectError(f"no image model is projected under {root}: the atlas shows projected image models")
    out = []
    for key in keys:
        name, proj = _image_set(root, key, images)
        ablation = root / "ablation" / key / f"{name}.zarr"
        stores = AtlasStores(
            root / "modes" / f"{key}.zarr",
            root / "scores" / f"{key}.zarr",
            root / "atlas_maps" / key / f"{name}.zarr",
            ablation if ablation.exists() else None,
        )
        for p in (stores.modes, stores.scores):
            if not p.exists():
                raise QKDissectError(f"{key} has no {p.parent.name} store at {p}: make it first (snakemake does)")
        manifest = root / "weights" / f"{key}.json"
        out.append(FoundModel(key, name, proj, stores, manifest if manifest.exists() else None))
    return out
