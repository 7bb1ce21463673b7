"""The data that models run on: images (sources, decoding, the model-input geometry), images with object masks,
and text corpora. Nothing here loads a model."""
