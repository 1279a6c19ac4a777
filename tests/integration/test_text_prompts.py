"""Text prompts: selection logic with a deterministic colour embedder, and the real open_clip path."""

import logging
import os
import sys

import numpy as np
import pytest

from fastsam_geo import segment_raster
from fastsam_geo.prompts import TextPrompt
from fastsam_geo.session import SegmentedRaster
from fastsam_geo.synthetic import ColourSegmenter, make_scene, write_scene
from fastsam_geo.text import object_crop

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


class ColourWordEmbedder:
    """Deterministic stand-in for CLIP: an image embeds as its mean non-white colour, a text as
    the colour it names. Selection can therefore fail in checkable ways (wrong crop, stale cache)."""

    key = "colour-words-v1"

    def __init__(self):
        self.image_calls = 0
        self.text_calls = 0

    def embed_images(self, images):
        self.image_calls += len(images)
        out = []
        for im in images:
            px = im.reshape(-1, 3).astype(float)
            px = px[(px < 250).any(1)]
            v = px.mean(0) if len(px) else np.ones(3)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out)

    def embed_texts(self, texts):
        self.text_calls += len(texts)
        return np.asarray([np.asarray(COLOURS[t.split()[0]]) for t in texts])


def paint(tif, scene, colours: dict[int, tuple[int, int, int]]):
    """Repaint every building in a unique brownish colour, and the given ones in pure colours."""
    import rasterio
    from rasterio import features
    browns = {k: (150 + k % 50, 100 + (k // 50) % 50, 70) for k in range(len(scene.footprints))}
    with rasterio.open(tif, "r+") as ds:
        data = ds.read()
        for k, rgb in (browns | colours).items():
            m = features.rasterize([(scene.footprints[k], 1)], out_shape=data.shape[1:], dtype="uint8") == 1
            for b in range(3):
                data[b][m] = rgb[b]
        ds.write(data)


@pytest.fixture(scope="module")
def painted(tmp_path_factory):
    scene = make_scene(520, 400, seed=3, cell=80)
    tif = write_scene(scene, tmp_path_factory.mktemp("text") / "scene.tif")
    # the red building sits right next to a large blue one: a bbox crop of the blue one would
    # contain red pixels; masked crops must not
    paint(tif, scene, {2: (250, 10, 10), 3: (10, 10, 250), 7: (10, 240, 10)})
    return scene, tif


def test_text_picks_the_named_colour_and_caches_crop_embeddings(painted):
    scene, tif = painted
    emb = ColourWordEmbedder()
    sr = SegmentedRaster(tif, segmenter=ColourSegmenter(), tile_size=256, overlap=32, text_embedder=emb)
    first = sr.prompt([TextPrompt("red building"), TextPrompt("blue roof"), TextPrompt("green")])
    truth = scene.truth_map()
    for row, k in zip(first.itertuples(), (2, 3, 7)):
        t = truth[k]
        assert t.intersection(row.geometry).area / t.union(row.geometry).area > 0.9, (row.prompt_id, k)
    crops = emb.image_calls
    assert crops >= len(scene.footprints)
    second = sr.prompt([TextPrompt("green")])
    assert emb.image_calls == crops  # crops embedded once, only the text is encoded again
    assert second.geometry[0].equals(first.geometry[2])


def test_text_prompt_works_when_the_memory_store_evicted_the_tiles(painted):
    # a memory store bounded in bytes drops tiles; their instances are segmented again
    from fastsam_geo.cache import MemoryStore

    scene, tif = painted
    sr = SegmentedRaster(tif, segmenter=ColourSegmenter(), tile_size=256, overlap=32,
                         text_embedder=ColourWordEmbedder())
    sr.store = MemoryStore(max_bytes=1)
    gdf = sr.prompt([TextPrompt("blue roof")])
    t = scene.truth_map()[3]
    assert len(sr.store) <= 1 and t.intersection(gdf.geometry[0]).area / t.union(gdf.geometry[0]).area > 0.9


def test_top_k_returns_k_rows_for_one_prompt(painted):
    _, tif = painted
    gdf = segment_raster(tif, segmenter=ColourSegmenter(), tile_size=256, overlap=32,
                         prompts=[TextPrompt("red", top_k=3)], text_embedder=ColourWordEmbedder())
    assert list(gdf.prompt_id) == [0, 0, 0] and list(gdf.score) == sorted(gdf.score, reverse=True)


def test_object_crop_hides_the_neighbour():
    img = np.zeros((10, 10, 3), np.uint8)
    img[:, :5] = (255, 0, 0)
    img[:, 5:] = (0, 0, 255)
    mask = np.zeros((10, 10), bool)
    mask[:, 5:] = True  # the blue object; its box covers the red one too
    crop = object_crop(img, (0, 0, 10, 10), mask)
    assert not ((crop[..., 0] == 255) & (crop[..., 1] == 0)).any()


def test_text_prompt_through_the_real_open_clip_path(painted):
    pytest.importorskip("open_clip")
    _, tif = painted
    gdf = segment_raster(tif, segmenter=ColourSegmenter(), tile_size=512, overlap=32,
                         prompts=[TextPrompt("a red roof")], text_embedder="ViT-B-32:untrained")
    assert len(gdf) == 1 and gdf.found[0] and -1.0 <= gdf.score[0] <= 1.0


def test_missing_clip_weights_are_one_clear_error(painted, monkeypatch, tmp_path, caplog):
    open_clip = pytest.importorskip("open_clip")
    from fastsam_geo.errors import WeightsNotFoundError
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    caplog.set_level(logging.INFO)
    _, tif = painted
    with pytest.raises(WeightsNotFoundError, match="never downloaded at run time"):
        segment_raster(tif, segmenter=ColourSegmenter(), prompts=[TextPrompt("roof")],
                       text_embedder="ViT-B-32:openai")
    # one line: open_clip's own failed-download log records (ERROR) are not shown besides it
    package = os.path.dirname(open_clip.__file__)
    assert not [r.getMessage() for r in caplog.records if r.pathname.startswith(package)]


def test_text_without_the_extra_is_a_clear_error(painted, monkeypatch):
    from fastsam_geo.errors import ModelError

    # None in sys.modules makes every `import open_clip` fail as if it were not installed,
    # however it is imported (statement, importlib) and even after an earlier test loaded it
    monkeypatch.setitem(sys.modules, "open_clip", None)
    _, tif = painted
    seg = ColourSegmenter()
    with pytest.raises(ModelError, match=r"text prompts need open_clip: pip install 'fastsam-geo\[text\]'"):
        segment_raster(tif, segmenter=seg, prompts=[TextPrompt("roof")])
    assert seg.calls == 0  # said before any tile is segmented, not after the whole raster
