"""Datasets of truth-env rollouts: the format, vectorised collection and the training-window loader.

- ``worldsim.data.format``: the on-disk layout (manifest + one ``.npz`` shard per episode).
- ``worldsim.data.collect``: ``collect(scene, episodes, out, ...)`` with ``AsyncVectorEnv``, resumable
  (import it from the submodule: ``from worldsim.data.collect import collect``).
- ``worldsim.data.loader``: ``load_dataset(path)`` and ``windows(dataset, context, horizon, ...)``.
"""

from worldsim.data.format import FORMAT_VERSION, DatasetError
from worldsim.data.loader import Dataset, Episode, WindowBatch, WindowSampler, load_dataset, windows

__all__ = [
    "FORMAT_VERSION",
    "Dataset",
    "DatasetError",
    "Episode",
    "WindowBatch",
    "WindowSampler",
    "load_dataset",
    "windows",
]
