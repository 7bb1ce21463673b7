"""qkdissect: the query-key interaction of vision (and language) transformers, dissected mode by mode.

The Python API (:mod:`qkdissect.api`): :func:`modes`, :func:`scores`, :func:`project`, :func:`open_store`,
:func:`preprocess`, :func:`atlas` (the mode atlas of a results folder; its pass: :func:`atlas_maps`),
:func:`merge_shards` (a sharded pass's stores into one), :func:`ablate` (what removing each mode changes). The package,
by stage: ``models`` (specs, weights sources, adapters), ``core`` (the math), ``data`` (images, masks, text),
``passes`` (running models over weights and data), ``stores`` (Zarr I/O and schemas), ``provenance`` (records,
audit, RO-Crate), ``plots`` (figures from stores), ``website`` (the mode atlas from stores), ``cli``; ``util``
(what every layer shares: atomic writes, output locks and ownership, a file's sha256).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qkdissect")
except PackageNotFoundError:  # a source checkout on PYTHONPATH, not installed
    __version__ = "0.1.0+source"

from .api import ablate, atlas, atlas_maps, merge_shards, modes, open_store, preprocess, project, scores

__all__ = [
    "__version__", "ablate", "atlas", "atlas_maps", "merge_shards", "modes", "open_store", "preprocess", "project",
    "scores",
]  # fmt: skip
