"""A segmenter factory for job and cluster tests, importable by subprocesses and Dask workers.

``factory()`` returns :class:`~fastsam_geo.synthetic.PerturbedSegmenter` (views that disagree
between tiles) that sleeps ``$FSG_TEST_DELAY`` seconds per image, so a run lasts long enough to
be killed at chosen moments, and appends each image's SHA-1 to ``$FSG_TEST_LOG`` (one line per
tile the model saw), so a test can tell which tiles were computed in which run.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from fastsam_geo.synthetic import PerturbedSegmenter

SPEC = "slow_segmenter:factory"


def image_hash(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class Slow:
    def __init__(self):
        self.inner = PerturbedSegmenter()
        self.delay = float(os.environ.get("FSG_TEST_DELAY", "0"))
        self.log = os.environ.get("FSG_TEST_LOG")

    def __call__(self, images):
        out = self.inner(images)
        for img in images:
            time.sleep(self.delay)
            if self.log:
                fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                try:
                    os.write(fd, (image_hash(img) + "\n").encode())
                finally:
                    os.close(fd)
        return out


def factory() -> Slow:
    return Slow()


class Flaky(Slow):
    """:class:`Slow`, failing every batch that holds an image whose hash ends in ``0``-``3`` (a
    quarter of the tiles) while ``$FSG_TEST_FAIL`` is set: a tile a real model cannot take."""

    def __call__(self, images):
        if os.environ.get("FSG_TEST_FAIL") and any(image_hash(i)[-1] in "0123" for i in images):
            raise RuntimeError("bad tile")
        return super().__call__(images)


def flaky() -> Flaky:
    return Flaky()


def record_hashes(job, tif, tile_size: int = 64, overlap: int = 16) -> set[str]:
    """The pixel hashes of the tiles a job folder holds records of."""
    from pathlib import Path

    from fastsam_geo.raster import TileReader
    from fastsam_geo.tiling import plan_tiles

    with TileReader(tif) as r:
        grid = plan_tiles(r.info.width, r.info.height, tile_size, overlap)
        return {image_hash(r.read(grid.tiles[int(p.stem[1:])])[0]) for p in Path(job).glob("*/*/t*.npz")}


def logged(path) -> list[str]:
    """The image hashes a log holds (a line cut by a kill is dropped)."""
    if not os.path.exists(path):
        return []
    return [line for line in open(path).read().split("\n") if len(line) == 40]


def unloadable():
    """A factory that fails where the model loads (on the workers, under a cluster)."""
    raise RuntimeError("no such model on this worker")
