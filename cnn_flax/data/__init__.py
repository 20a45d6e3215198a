"""Datasets and the Grain input pipeline.

`datasets` is the registry (`load`, `names`, `register`); the source modules imported below register their
datasets on import, so importing anything from `cnn_flax.data` makes every dataset available: `digits`
(bundled), `folder` (image folders), `tfds_source` (six TFDS datasets by name, any other TFDS
image-classification dataset through the TFDS catalogue).
"""
from cnn_flax.data import digits, folder, tfds_source  # noqa: F401  (registration)
