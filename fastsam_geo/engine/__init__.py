"""The model engine: the only part of fastsam-geo that imports torch, ultralytics and open_clip,
always lazily (inside functions), so importing this package is cheap.

* :mod:`.weights` - where weights come from (paths, names, the bundled model; never downloads)
* :mod:`.fastsam` - :class:`FastSAMSegmenter`, everything-mode inference at native resolution
* :mod:`.train` - offline ultralytics training and slim checkpoints
* :mod:`.clip` - CLIP image/text embeddings for text prompts (the ``[text]`` extra)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_WHERE = {"pick_device": "._torch", "release_freed_memory": "._torch", "torch_threads": "._torch",
          "FastSAMSegmenter": ".fastsam", "export_checkpoint": ".train", "make_untrained_checkpoint": ".train",
          "train_yolo": ".train", "BUNDLED": ".weights", "BUNDLED_PATH": ".weights", "OFFICIAL": ".weights",
          "resolve_weights": ".weights", "weights_dirs": ".weights"}
__all__ = ["BUNDLED", "BUNDLED_PATH", "OFFICIAL", "FastSAMSegmenter", "export_checkpoint",
           "make_untrained_checkpoint", "pick_device", "release_freed_memory", "resolve_weights", "torch_threads",
           "train_yolo", "weights_dirs"]


def __getattr__(name: str):
    """Names load their module on first use: the CLI's start-up needs only ``release_freed_memory``,
    and the inference module brings numpy, pandas and pyproj with it (~0.4 s)."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from ._torch import pick_device, release_freed_memory, torch_threads
    from .fastsam import FastSAMSegmenter
    from .train import export_checkpoint, make_untrained_checkpoint, train_yolo
    from .weights import BUNDLED, BUNDLED_PATH, OFFICIAL, resolve_weights, weights_dirs
