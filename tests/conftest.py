"""Shared fixtures: offline ultralytics, seeded scenes, truth matching, the shared data folder."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTSAM_GEO_SHARED", ROOT.parent / "shared"))

# ultralytics probes the network and writes settings to ~/.config unless told otherwise;
# set both before anything can import it.
os.environ["YOLO_OFFLINE"] = "true"
os.environ["HF_HUB_OFFLINE"] = "1"  # open_clip / huggingface_hub: never try the network
os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="fsg-yolo-")
atexit.register(shutil.rmtree, os.environ["YOLO_CONFIG_DIR"], ignore_errors=True)  # leave nothing in /tmp
os.environ.setdefault("MPLBACKEND", "Agg")

# Property tests explore new random examples on every local run (and keep failures in
# .hypothesis/); scripts/test.sh (CI) runs the same fixed, derandomised examples every time, so a
# clean clone passes or fails the same way. `-m slow` runs the 2,000-example variants.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile(os.environ.get("FASTSAM_GEO_HYPOTHESIS", "default"))


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test when the folder is absent."""
    p = SHARED.joinpath("data", *parts)
    if not p.exists():
        pytest.skip(f"shared data not available: {p}")
    return p


def match_truth(pred: list, truth: list) -> tuple[list[int], list[float]]:
    """For each truth polygon, how many predictions overlap it and the best IoU.

    Returns ``(counts, ious)``; a perfect result has every count 1 and every IoU high, and
    as many predictions as truths.
    """
    tree = shapely.STRtree(pred)
    counts, ious = [], []
    for t in truth:
        hits = [pred[i] for i in tree.query(t) if pred[i].intersection(t).area > 0.05 * t.area]
        counts.append(len(hits))
        ious.append(max((t.intersection(p).area / t.union(p).area for p in hits), default=0.0))
    return counts, ious


@pytest.fixture(scope="session")
def untrained_fastsam_s(tmp_path_factory) -> Path:
    """A FastSAM-s-architecture checkpoint with random weights, built from ultralytics' yaml."""
    from fastsam_geo.engine import make_untrained_checkpoint

    return make_untrained_checkpoint(tmp_path_factory.mktemp("weights") / "FastSAM-s-untrained.pt",
                                     arch="s", imgsz=256)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


class CountingSegmenter:
    """The true per-tile masks (:class:`~fastsam_geo.synthetic.ColourSegmenter`), counting the
    images the 'model' sees: what tests of caching and tile selection assert on."""

    def __init__(self):
        from fastsam_geo.synthetic import ColourSegmenter

        self._seg = ColourSegmenter()
        self.images = 0

    def __call__(self, images):
        self.images += len(images)
        return self._seg(images)


class KeyedCountingSegmenter(CountingSegmenter):
    """A :class:`CountingSegmenter` with a ``cache_key``, so on-disk caches keep its tiles."""

    cache_key = "counting-colours-v1"
