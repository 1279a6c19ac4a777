"""One API for every shell: engine options validated up front, progress, caches keyed on every
option, stage threads that stop before the raster closes, bounded text embeddings."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import KeyedCountingSegmenter
from fastsam_geo import segment_raster
from fastsam_geo.cache import MemoryStore
from fastsam_geo.cli import main
from fastsam_geo.errors import Cancelled, InputError, WeightsNotFoundError
from fastsam_geo.pipeline import RunStats
from fastsam_geo.prompts import TextPrompt
from fastsam_geo.raster import TileReader
from fastsam_geo.session import SegmentedRaster
from fastsam_geo.synthetic import ColourSegmenter, make_scene, write_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    sc = make_scene(520, 400, seed=5, cell=70)
    return sc, Path(write_scene(sc, tmp_path_factory.mktemp("api") / "scene.tif"))


# -- engine options through the API ----------------------------------------------------------

def test_engine_options_reach_the_model(scene, untrained_fastsam_s):
    _, tif = scene
    strict = segment_raster(tif, segmenter=untrained_fastsam_s, tile_size=256, overlap=32, conf=0.9, device="cpu")
    loose = segment_raster(tif, segmenter=untrained_fastsam_s, tile_size=256, overlap=32, conf=0.2, device="cpu")
    assert len(loose) > len(strict)
    from fastsam_geo import load_segmenter
    seg = load_segmenter(untrained_fastsam_s, conf=0.35, iou=0.6, imgsz=128, max_det=7, device="cpu")
    assert (seg.conf, seg.iou, seg.imgsz, seg.max_det) == (0.35, 0.6, 128, 7)


def test_a_bad_option_fails_before_the_raster_is_read(tmp_path):
    with pytest.raises(InputError, match=r"^conf must be a number in"):
        segment_raster(tmp_path / "not-even-there.tif", conf=2)
    with pytest.raises(InputError, match="unknown option 'confidence'"):
        segment_raster(tmp_path / "not-even-there.tif", confidence=0.3)


def test_progress_true_draws_a_bar(scene, capsys):
    _, tif = scene
    gdf = segment_raster(tif, segmenter=ColourSegmenter(), tile_size=256, overlap=32, progress=True)
    err = capsys.readouterr().err
    assert len(gdf) > 0 and "segmenting" in err and "tile" in err and "6/6" in err


@pytest.mark.parametrize("args,expected", [
    (("--conf", "2"), "conf must be a number in"),
    (("--iou", "-1"), "iou must be a number in"),
    (("--imgsz", "-64"), "imgsz must be a whole number"),
    (("--batch-size", "-1"), "batch_size must be a whole number"),
    (("--simplify", "nan"), "simplify must be a number"),
])
def test_cli_numbers_are_validated_by_the_same_options(scene, tmp_path, args, expected):
    _, tif = scene
    r = CliRunner().invoke(main, ["segment", str(tif), "-o", str(tmp_path / "o.gpkg"), *args])
    assert r.exit_code == 2 and expected in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o.gpkg").exists()


def test_bad_bands_are_reported_before_any_model_loads(scene, tmp_path, monkeypatch):
    _, tif = scene

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before the bands were checked")

    monkeypatch.setattr("fastsam_geo.engine.FastSAMSegmenter.__init__", no_model)
    r = CliRunner().invoke(main, ["segment", str(tif), "-o", str(tmp_path / "o.gpkg"), "--bands", "1,2,9"])
    assert r.exit_code == 2 and "band 9 does not exist" in r.output, r.output


# -- caches keyed on every option ------------------------------------------------------------

def test_the_cache_key_covers_every_option_that_changes_masks(scene, tmp_path):
    _, tif = scene
    base = SegmentedRaster(tif, cache=tmp_path, tile_size=256, overlap=32)  # the bundled model, not loaded
    same = SegmentedRaster(tif, cache=tmp_path, tile_size=256, overlap=32, device="cpu", batch_size=2,
                           threads=1, dedup=False, simplify=0.5)
    assert same.store.dir == base.store.dir and base._seg is None
    changes = dict(conf=0.3, iou=0.5, imgsz=512, max_det=50, half=True, tta=True, tile_size=300, overlap=16,
                   bands=(3, 2, 1), stretch="percentile", min_area=4)
    dirs = {name: SegmentedRaster(tif, cache=tmp_path, **{"tile_size": 256, "overlap": 32, name: value}).store.dir
            for name, value in changes.items()}
    assert base.store.dir not in dirs.values() and len(set(dirs.values())) == len(changes)


def test_a_changed_option_recomputes_and_an_unchanged_one_reuses(scene, tmp_path, untrained_fastsam_s):
    _, tif = scene
    kw = dict(segmenter=untrained_fastsam_s, tile_size=256, overlap=32, cache=tmp_path, device="cpu")
    runs = []
    for conf in (0.5, 0.5, 0.3, 0.5):
        stats = RunStats()
        segment_raster(tif, conf=conf, stats=stats, **kw)
        runs.append(stats.tiles_cached)
    assert runs == [0, 6, 0, 6]


def test_a_fully_cached_run_loads_no_torch_even_with_engine_options(scene, tmp_path, untrained_fastsam_s):
    _, tif = scene
    code = ("import sys; from fastsam_geo import segment_raster; "
            f"g = segment_raster({str(tif)!r}, segmenter={str(untrained_fastsam_s)!r}, tile_size=256, overlap=32, "
            f"cache={str(tmp_path)!r}, conf=0.4, iou=0.6, imgsz=256, device='cpu'); "
            "print(len(g), 'torch' in sys.modules)")
    env = {**os.environ, "YOLO_OFFLINE": "true"}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    n1, torch1 = first.stdout.split()
    n2, torch2 = second.stdout.split()
    assert torch1 == "True" and torch2 == "False" and n1 == n2


# -- text prompts: fail early, bounded embeddings ----------------------------------------------

def test_text_without_clip_weights_fails_before_any_tile_is_segmented(scene, tmp_path, monkeypatch):
    pytest.importorskip("open_clip")
    _, tif = scene
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    seg = KeyedCountingSegmenter()
    with pytest.raises(WeightsNotFoundError, match="--clip"):
        segment_raster(tif, segmenter=seg, prompts=[TextPrompt("a roof")], text_embedder="ViT-B-32:openai")
    assert seg.images == 0


class MeanColour:
    """A deterministic stand-in for CLIP: an image embeds as its mean colour."""

    key = "mean-colour-v1"

    def __init__(self):
        self.images = 0

    def embed_images(self, images):
        self.images += len(images)
        return np.asarray([im.reshape(-1, 3).mean(0) / (np.linalg.norm(im.reshape(-1, 3).mean(0)) + 1e-9)
                           for im in images], np.float32)

    def embed_texts(self, texts):
        return np.asarray([[1.0, 0.0, 0.0] for _ in texts], np.float32)


def test_text_embeddings_are_bounded_and_a_second_query_reuses_everything(scene):
    _, tif = scene
    seg, emb = KeyedCountingSegmenter(), MeanColour()
    sr = SegmentedRaster(tif, segmenter=seg, tile_size=256, overlap=32, text_embedder=emb)
    sr.store = MemoryStore(max_bytes=40_000)  # a third of the raster's masks and embeddings
    first = sr.prompt([TextPrompt("red")])
    assert sr.store.nbytes <= 40_000 and len(sr.store) < len(sr.grid)  # tiles were evicted
    images, crops = seg.images, emb.images
    second = sr.prompt([TextPrompt("red"), TextPrompt("roof", top_k=2)])
    assert seg.images == images and emb.images == crops  # nothing segmented or embedded again
    assert second.geometry[0].equals(first.geometry[0])


# -- stage threads stop before the raster closes ---------------------------------------------

@pytest.fixture
def slow_reads(monkeypatch):
    """Make tile reads slow and record any read on a closed dataset."""
    after_close = []
    real = TileReader.read

    def read(self, tile):
        time.sleep(0.05)
        if self._src is None:
            after_close.append(tile)
        return real(self, tile)

    monkeypatch.setattr(TileReader, "read", read)
    return after_close


def _settle():
    time.sleep(0.5)  # a straggling thread would read within this
    return [t for t in threading.enumerate() if t.name.startswith("Thread-") and t.is_alive()
            and type(t).__name__ == "_Worker"]


def test_a_cancelled_run_stops_its_threads_before_the_raster_closes(scene, slow_reads):
    _, tif = scene
    with pytest.raises(Cancelled):
        segment_raster(tif, segmenter=ColourSegmenter(), tile_size=128, overlap=16, batch_size=1,
                       progress=lambda p: p.done < 2)
    assert not _settle() and not slow_reads


def test_a_failing_segmenter_stops_the_reader_before_the_raster_closes(scene, slow_reads):
    _, tif = scene
    calls = []

    def broken(images):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("device-side assert")
        return ColourSegmenter()(images)

    with pytest.raises(RuntimeError, match="device-side assert"):
        segment_raster(tif, segmenter=broken, tile_size=128, overlap=16, batch_size=1)
    assert not _settle() and not slow_reads


# -- accelerator faults -----------------------------------------------------------------------

class OutOfMemoryOver(ColourSegmenter):
    """Raises torch's CUDA out-of-memory error for batches over ``limit`` tiles."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.seen = limit, []

    def __call__(self, images):
        self.seen.append(len(images))
        if len(images) > self.limit:
            import torch
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().__call__(images)


def test_out_of_memory_halves_the_batch_and_the_result_is_the_same(scene):
    _, tif = scene
    ref = segment_raster(tif, segmenter=ColourSegmenter(), tile_size=64, overlap=8, batch_size=1)
    seg = OutOfMemoryOver(2)
    got = segment_raster(tif, segmenter=seg, tile_size=64, overlap=8, batch_size=8)  # 80 tiles
    # each failing batch is split; batches read after the first error are at most 2 tiles (the
    # two or three already read ahead came at 8 and were split too)
    assert seg.seen[:3] == [8, 4, 2] and max(seg.seen[len(seg.seen) // 2:]) <= 2, seg.seen
    assert sorted(g.wkb for g in got.geometry) == sorted(g.wkb for g in ref.geometry)


class FailsOn(ColourSegmenter):
    """Fails on the tile whose pixels hold a given building colour (as a device error would)."""

    def __init__(self, colour):
        super().__init__()
        self.colour = np.asarray(colour, np.uint8)

    def __call__(self, images):
        if any((im == self.colour).all(-1).any() for im in images):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().__call__(images)


def test_a_failing_tile_is_named_or_skipped_and_listed(scene):
    from fastsam_geo.errors import TileError
    from fastsam_geo.synthetic import colour_of
    sc, tif = scene
    seg = FailsOn(colour_of(5))  # building 4's colour: one tile (or two, if it crosses a seam)
    with pytest.raises(TileError, match=r"tile row \d+, column \d+ \(pixels x \d+-\d+, y \d+-\d+\) failed: "
                                        r"CUDA error: an illegal memory access"):
        segment_raster(tif, segmenter=seg, tile_size=128, overlap=16, batch_size=3)
    stats = RunStats()
    gdf = segment_raster(tif, segmenter=seg, tile_size=128, overlap=16, batch_size=3, skip_failed_tiles=True,
                         stats=stats)
    failed = [t for t, _ in stats.failed]
    assert failed and all(t.box[0] <= sc.footprints[4].bounds[0] < t.box[2] or
                          t.box[0] < sc.footprints[4].bounds[2] <= t.box[2] for t in failed)
    full = segment_raster(tif, segmenter=ColourSegmenter(), tile_size=128, overlap=16)
    assert 0 < len(gdf) < len(full)
