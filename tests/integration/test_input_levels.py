"""Non-uint8 imagery reaches the network at the levels its model card records.

A model trained on 8-bit imagery has seen a range of brightness: its card's ``input_levels`` say
where the 2nd/98th percentiles of that imagery lie. A 16-bit or float raster is stretched so its
own percentiles land there (not at 0/255), whatever the sensor's gain and offset per band; a
model without levels keeps the 0-255 stretch; the levels are part of the cache key; training
records them and fine-tuning stretches the user's imagery to the base model's."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from conftest import KeyedCountingSegmenter
from fastsam_geo import SegmentedRaster as Session
from fastsam_geo.dataset import build_dataset
from fastsam_geo.raster import FULL_RANGE, Levels, TileReader, measure_levels, model_levels
from fastsam_geo.synthetic import make_scene, write_scene
from fastsam_geo.tiling import plan_tiles
from fastsam_geo.types import MaskSet

LEVELS = {"percentiles": [2.0, 98.0], "values": [45.5, 227.5]}


def write_as(src, dst, gains, offsets, dtype) -> str:
    """``src`` (uint8) with band b as ``src * gains[b] + offsets[b]`` in ``dtype``: the same picture."""
    with rasterio.open(src) as s:
        data, profile = s.read().astype(np.float64), s.profile
    out = np.stack([b * g + o for b, g, o in zip(data, gains, offsets)]).astype(dtype)
    profile.update(dtype=np.dtype(dtype).name, photometric="minisblack")
    profile.pop("jpeg_quality", None)
    profile.pop("compress", None)
    with rasterio.open(dst, "w", **profile) as d:
        d.write(out)
    return str(dst)


def p2_p98(images, pooled: bool = True) -> tuple[float, float]:
    """The 2nd/98th percentiles where the stretch placed them: of the bands pooled (a model's
    levels are one map for all bands), or the median over bands of each band's own."""
    if pooled:
        return tuple(np.percentile(np.concatenate([im.ravel() for im in images]), (2, 98)))
    ps = np.array([np.percentile(im[..., c], (2, 98)) for im in images for c in range(im.shape[-1])])
    return tuple(np.median(ps, axis=0))


class Recording:
    """Keeps every image it is shown and finds nothing; ``path`` names weights whose card (``path``
    with ``.json``) the session reads, as it does a real checkpoint's."""

    def __init__(self, path=None):
        self.path = None if path is None else str(path)
        self.seen: list[np.ndarray] = []

    def __call__(self, images):
        self.seen.extend(np.asarray(im).copy() for im in images)
        return [MaskSet(np.zeros((0, *np.shape(im)[:2]), bool), np.zeros(0, np.float32)) for im in images]


@pytest.fixture(scope="module")
def scene16(tmp_path_factory):
    d = tmp_path_factory.mktemp("levels")
    tif8 = write_scene(make_scene(480, 360, seed=7, cell=60), d / "scene8.tif")
    tif16 = write_as(tif8, d / "scene16.tif", (37, 37, 37), (180, 180, 180), np.uint16)
    return d, tif8, tif16


def card_beside(path, **card):
    path.write_bytes(b"")
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


@pytest.mark.parametrize("dtype, gain, offset", [(np.uint16, 37, 180), (np.int16, 9, -905), (np.float32, 0.0016, 0.02)])
def test_any_sensors_numbers_stretch_to_the_same_picture_at_the_models_levels(scene16, dtype, gain, offset):
    d, tif8, _ = scene16
    path = write_as(tif8, d / f"copy_{np.dtype(dtype).name}.tif", (gain,) * 3, (offset,) * 3, dtype)
    levels = model_levels({"input_levels": LEVELS})
    with TileReader(path, levels=levels) as r16, TileReader(path) as full, \
            TileReader(tif8, stretch="percentile", levels=levels) as r8:
        tile = plan_tiles(r16.info.width, r16.info.height, 4096, 0).at(0, 0)
        img16, img_full, img8 = r16.read(tile)[0], full.read(tile)[0], r8.read(tile)[0]
    assert p2_p98([img16]) == pytest.approx(LEVELS["values"], abs=1.5)
    # the 8-bit picture is the uint8 one's, within rounding: colour balance kept, one map for all bands
    assert np.abs(img16.astype(int) - img8.astype(int)).max() <= 1
    # no levels: each band on its own to 0-255, as before
    assert p2_p98([img_full], pooled=False) == pytest.approx((0, 255), abs=1.5)


def test_a_models_levels_keep_the_colour_balance_a_band_by_band_stretch_drops(scene16):
    """Roof colours differ by band; stretched to a model's levels they still do (one map), while
    the band-by-band stretch gives every band the same 2nd/98th percentiles."""
    _, tif8, tif16 = scene16
    with TileReader(tif16, levels=model_levels({"input_levels": LEVELS})) as joint, TileReader(tif16) as bands, \
            rasterio.open(tif8) as src:
        tile = plan_tiles(joint.info.width, joint.info.height, 4096, 0).at(0, 0)
        a, b = joint.read(tile)[0].astype(float), bands.read(tile)[0].astype(float)
        orig = src.read().transpose(1, 2, 0).astype(float)
    ratio = [np.corrcoef(x[..., 0].ravel() - x[..., 2].ravel(), orig[..., 0].ravel() - orig[..., 2].ravel())[0, 1]
             for x in (a, b)]
    spread = [np.ptp([np.percentile(x[..., c], 98) for c in range(3)]) for x in (a, b)]
    assert spread[1] <= 2 and spread[0] > 5  # per band: all bands alike at the top; joint: not
    assert ratio[0] > 0.99  # the red-blue contrast of the picture survives the joint stretch


def test_model_levels_from_a_card_and_bad_entries_are_none():
    assert model_levels({"input_levels": LEVELS}) == Levels((2.0, 98.0), (45.5, 227.5), joint=True)
    for card in (None, {}, {"input_levels": None}, {"input_levels": [45, 228]},
                 {"input_levels": {"percentiles": [2, 98]}},
                 {"input_levels": {"percentiles": [2, 98], "values": [228, 45]}},
                 {"input_levels": {"percentiles": [98, 2], "values": [45, 228]}},
                 {"input_levels": {"percentiles": [2, 98], "values": [45, 300]}},
                 {"input_levels": {"percentiles": [2, 98], "values": ["a", 228]}}):
        assert model_levels(card) is None, card


def test_a_session_stretches_to_its_models_card_and_keeps_uint8_as_it_is(scene16, tmp_path):
    _d, tif8, tif16 = scene16
    weights = card_beside(tmp_path / "m.pt", name="m", input_levels=LEVELS)
    with_card, without = Recording(weights), Recording()
    Session(tif16, segmenter=with_card, tile_size=256, overlap=32, cache=False).segment()
    Session(tif16, segmenter=without, tile_size=256, overlap=32, cache=False).segment()
    assert p2_p98(with_card.seen) == pytest.approx(LEVELS["values"], abs=4)
    assert p2_p98(without.seen, pooled=False) == pytest.approx((0, 255), abs=4)
    # uint8 imagery is what the network saw in training: passed through, card or not
    as_is = Recording(weights)
    Session(tif8, segmenter=as_is, tile_size=256, overlap=32, cache=False).segment()
    with rasterio.open(tif8) as src:
        first = src.read(window=((0, 256), (0, 256))).transpose(1, 2, 0)
    assert any(np.array_equal(im, first) for im in as_is.seen)


class KeyedCarded(KeyedCountingSegmenter):
    def __init__(self, path):
        super().__init__()
        self.path = str(path)


def test_levels_are_part_of_the_cache_key(scene16, tmp_path):
    """Masks cached at one stretch are never returned for another: a card whose levels changed
    re-segments; the same levels hit the cache."""
    _, _, tif16 = scene16
    weights = card_beside(tmp_path / "m.pt", input_levels=LEVELS)
    seg = KeyedCarded(weights)
    kw = dict(tile_size=256, overlap=32, cache=tmp_path / "cache")
    Session(tif16, segmenter=seg, **kw).segment()
    first = seg.images
    Session(tif16, segmenter=seg, **kw).segment()
    assert first > 0 and seg.images == first  # same levels: every tile from the cache
    card_beside(weights, input_levels={"percentiles": [2, 98], "values": [20, 200]})
    Session(tif16, segmenter=seg, **kw).segment()
    assert seg.images == 2 * first


def test_fine_tuning_data_is_stretched_to_the_base_models_levels(scene16, tmp_path):
    """`build_dataset(levels=)` (what `train --base` passes): a 16-bit raster's training tiles
    have the base's levels; without, 0-255. `measure_levels` reads back what was written."""
    _, tif8, tif16 = scene16
    with rasterio.open(tif8) as s:
        crs, b = s.crs, s.bounds
    labels = gpd.GeoDataFrame(geometry=gpd.GeoSeries.from_xy([b.left + 30], [b.top - 30], crs=crs).buffer(8), crs=crs)
    import cv2

    tiles = {}
    for name, levels in (("base", model_levels({"input_levels": LEVELS})), ("none", None)):
        out = build_dataset([tif16], labels, tmp_path / name, tile_size=240, overlap=0, val_fraction=0,
                            keep_empty=1.0, levels=levels)
        tiles[name] = [cv2.imread(str(p))[..., ::-1] for p in sorted((tmp_path / name / "images" / "train").iterdir())]
        assert out.train_tiles == len(tiles[name]) > 1
    assert p2_p98(tiles["base"]) == pytest.approx(LEVELS["values"], abs=6)
    assert p2_p98(tiles["none"], pooled=False) == pytest.approx((0, 255), abs=6)
    measured = measure_levels([tif16], levels=model_levels({"input_levels": LEVELS}))
    assert measured.values == pytest.approx(LEVELS["values"], abs=1.5)
    assert measure_levels([tif16]).values == pytest.approx(FULL_RANGE.values, abs=1.5)


def test_measure_levels_on_uint8_is_the_imagerys_own(tmp_path):
    """8-bit training imagery is not stretched: its levels are its own percentiles, bands pooled."""
    rng = np.random.default_rng(3)
    ranges = ((60, 201), (20, 121), (140, 251))  # bands apart: pooled percentiles are no one band's
    data = np.stack([rng.integers(lo, hi, (300, 300)) for lo, hi in ranges]).astype(np.uint8)
    path = tmp_path / "u8.tif"
    with rasterio.open(path, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 4500000, 0.3, 0.3)) as dst:
        dst.write(data)
    got = measure_levels([path]).values
    assert got == pytest.approx(np.percentile(data, (2, 98)), abs=0.6)


def test_measure_levels_skips_nan_pixels(scene16, tmp_path):
    """A float raster with NaN holes (no nodata value): the holes are no pixels, not black ones."""
    _d, tif8, _ = scene16
    path = write_as(tif8, tmp_path / "f32.tif", (0.0016,) * 3, (0.02,) * 3, np.float32)
    with rasterio.open(path, "r+") as ds:
        data = ds.read()
        data[:, :, : data.shape[2] // 3] = np.nan
        ds.write(data)
    levels = model_levels({"input_levels": LEVELS})
    assert measure_levels([path], levels=levels).values == pytest.approx(LEVELS["values"], abs=1.5)
