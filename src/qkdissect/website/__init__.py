"""The mode atlas as a static web site: every mode of every image model of a results folder, browsable offline.

Stores in, a static folder out (:mod:`.writer`): nothing here loads a model, runs a pass or decodes an image. The
maps it shows come from the atlas pass (:mod:`qkdissect.passes.atlas`), the singular values and cosines from the
modes and scores stores (:mod:`.payload`); the page itself is ``static/`` (HTML, CSS, JavaScript).
"""

from .payload import AtlasStores
from .writer import write_atlas

__all__ = ["AtlasStores", "write_atlas"]
