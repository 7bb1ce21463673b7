"""Figures: stores in, matplotlib figures out. Nothing here loads a model, decodes an image or runs a pass:
every number and every pixel a figure draws comes from a store (the maps of image and text figures from a maps
store, :mod:`qkdissect.passes.maps`). Saving a figure with its provenance: :mod:`qkdissect.provenance.figures`.

- :mod:`.layers`: per-layer curves against depth and per-layer grids (Fig. 3, S1, S2, S3, S4, LayerNorm folding)
- :mod:`.logits`: the logit terms (beyond the paper)
- :mod:`.masks`: attention preference (Fig. 2) and same-object probability (Fig. 6)
- :mod:`.images`: top images per mode with query/key overlays (Fig. 1, 4, S5-S16), one image's modes (Fig. 5,
  S17-S19)
- :mod:`.text`: top passages per mode, shaded by the maps (beyond the paper)
- :mod:`.style`: each model's colour, line style and marker
"""
