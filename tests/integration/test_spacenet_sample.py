"""A real 1-band uint16 satellite chip (SpaceNet Atlanta, EPSG:32616): output lands on the labels.

The segmenter here knows the true building masks of the *whole* chip, and finds where each
tile it is given lies by matching pixels against the chip as stretched once; so the test
passes only if windows, the global stretch, seam merging and the affine transforms all
agree with rasterio's own georeferencing of the labels.
"""

import geopandas as gpd
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from rasterio import features

from conftest import match_truth, shared_path
from fastsam_geo import segment_raster
from fastsam_geo.raster import TileReader
from fastsam_geo.tiling import plan_tiles
from fastsam_geo.types import MaskSet


class LocatingSegmenter:
    def __init__(self, full: np.ndarray, ids: np.ndarray):
        self.full, self.ids = full[..., 0], ids
        self.offsets = []

    def __call__(self, images):
        return [self._one(img) for img in images]

    def _one(self, img):
        h, w = img.shape[:2]
        patch = img[:6, :6, 0]
        win = sliding_window_view(self.full, patch.shape)
        ys, xs = np.nonzero((win == patch).all(axis=(2, 3)))
        hits = [(y, x) for y, x in zip(ys, xs) if (self.full[y:y + h, x:x + w] == img[..., 0]).all()]
        assert len(hits) == 1, f"tile located {len(hits)} times"
        y, x = hits[0]
        self.offsets.append((x, y))
        sub = self.ids[y:y + h, x:x + w]
        keep = [i for i in np.unique(sub) if i]
        masks = np.stack([sub == i for i in keep]) if keep else np.zeros((0, h, w), bool)
        return MaskSet(masks, np.full(len(keep), 0.9))


def test_sample_geotiff_output_lands_on_label_coordinates():
    tif = shared_path("spacenet_atlanta", "image", "sample_geotiff.tif")
    labels = gpd.read_file(shared_path("spacenet_atlanta", "image", "geotiff_labels.geojson"))
    reader = TileReader(tif)
    info = reader.info
    assert info.dtype == "uint16" and info.count == 1 and info.crs.to_epsg() == 32616
    with reader:
        full, _ = reader.read(plan_tiles(info.width, info.height, 4096, 0, info.transform).tiles[0])
    labels = labels.to_crs(info.crs)
    ids = features.rasterize(((g, i + 1) for i, g in enumerate(labels.geometry)),
                             out_shape=(info.height, info.width), transform=info.transform, dtype="int32")
    seg = LocatingSegmenter(full, ids)
    gdf = segment_raster(tif, segmenter=seg, tile_size=384, overlap=48, min_area=4)
    # tiles really were located at their windows
    grid = plan_tiles(info.width, info.height, 384, 48)
    assert sorted(seg.offsets) == sorted((t.x, t.y) for t in grid)
    present = [g for i, g in enumerate(labels.geometry) if (ids == i + 1).sum() >= 16]
    counts, ious = match_truth(list(gdf.geometry), present)
    assert gdf.crs == info.crs
    assert all(c == 1 for c in counts), counts
    assert np.median(ious) > 0.85 and min(ious) > 0.5, ious
    assert len(gdf) == len(present)
    # a shift of a single pixel (0.5 m) would cost far more IoU than rasterising does
    shifted = [g for g in gpd.GeoSeries(list(gdf.geometry)).translate(0.5, 0.0)]
    assert np.median(match_truth(shifted, present)[1]) < np.median(ious) - 0.05


def test_sample_geotiff_reads_as_stretched_grey():
    tif = shared_path("spacenet_atlanta", "image", "sample_geotiff.tif")
    with TileReader(tif) as reader:
        img, valid = reader.read(plan_tiles(900, 900, 512, 64).tiles[0])
    assert img.dtype == np.uint8 and img.shape == (512, 512, 3)
    assert (img[..., 0] == img[..., 2]).all()
    assert 20 < img.mean() < 235 and img.std() > 20  # stretched, not black or saturated
    assert valid.mean() > 0.5
    if not valid.all():
        assert (img[~valid] == 0).all()


@pytest.mark.parametrize("bands", [(1,), (1, 1, 1)])
def test_band_choice_for_single_band(bands):
    tif = shared_path("spacenet_atlanta", "image", "sample_geotiff.tif")
    assert TileReader(tif, bands).bands == (1, 1, 1)
