"""The model engine: the only part of fastsam-geo that imports torch, ultralytics and open_clip,
always lazily (inside functions), so importing this package is cheap.

* :mod:`.weights` - where weights come from (paths, names, the bundled model; never downloads)
* :mod:`.fastsam` - :class:`FastSAMSegmenter`, everything-mode inference at native resolution
* :mod:`.train` - offline ultralytics training and slim checkpoints
* :mod:`.clip` - CLIP image/text embeddings for text prompts (the ``[text]`` extra)
"""

from ._torch import pick_device, release_freed_memory, torch_threads
from .fastsam import FastSAMSegmenter
from .train import export_checkpoint, make_untrained_checkpoint, train_yolo
from .weights import BUNDLED, BUNDLED_PATH, OFFICIAL, resolve_weights, weights_dirs

__all__ = ["BUNDLED", "BUNDLED_PATH", "OFFICIAL", "FastSAMSegmenter", "export_checkpoint",
           "make_untrained_checkpoint", "pick_device", "release_freed_memory", "resolve_weights", "torch_threads",
           "train_yolo", "weights_dirs"]
