"""`train` end to end on a tiny synthetic dataset: dataset, ultralytics training, model, card."""

import json
import time

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner

from fastsam_geo import segment_raster
from fastsam_geo.cli import main
from fastsam_geo.dataset import build_dataset, ring_with_holes
from fastsam_geo.errors import InputError
from fastsam_geo.synthetic import make_scene, write_scene


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    scene = make_scene(512, 384, seed=2, cell=64)
    tif = write_scene(scene, d / "scene.tif")
    labels = gpd.GeoDataFrame(geometry=scene.truth_map(), crs=scene.crs).to_crs(4326)  # another CRS
    labels.to_file(d / "labels.geojson")
    return d, tif, d / "labels.geojson", scene


def test_ring_with_holes_keeps_the_courtyard():
    import cv2
    poly = shapely.box(10, 10, 90, 90).difference(shapely.box(40, 40, 60, 60))
    ring = ring_with_holes(poly)
    img = np.zeros((100, 100), np.uint8)
    cv2.fillPoly(img, [np.round(ring).astype(np.int32)], 1)
    assert img[50, 50] == 0 and img[20, 20] == 1
    assert abs(int(img.sum()) - poly.area) < 0.05 * poly.area


def test_dataset_is_spatially_split_and_reprojected(tiny, tmp_path):
    _, tif, labels, _ = tiny
    s = build_dataset([tif], labels, tmp_path / "ds", tile_size=128, overlap=32, val_fraction=0.25)
    assert s.train_tiles > 0 and s.val_tiles > 0 and s.train_polygons > 0
    names = {p.stem for p in (tmp_path / "ds/images/val").iterdir()}
    cols = {int(n.rsplit("_c", 1)[1]) for n in names}
    assert min(cols) > 0  # validation is a band of columns at the right, not random tiles
    train_cols = {int(p.stem.rsplit("_c", 1)[1]) for p in (tmp_path / "ds/images/train").iterdir()}
    assert max(train_cols) < min(cols) - 1 or max(train_cols) < min(cols)  # no interleaving
    line = next((tmp_path / "ds/labels/train").glob("*.txt")).read_text().splitlines()[0].split()
    assert line[0] == "0" and all(0.0 <= float(v) <= 1.0 for v in line[1:])


def test_labels_that_miss_the_raster_or_are_empty(tiny, tmp_path):
    _, tif, _, _ = tiny
    far = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)], crs=4326)
    with pytest.raises(InputError, match="no label polygon overlaps"):
        build_dataset([tif], far, tmp_path / "ds")
    with pytest.raises(InputError, match="no features"):
        build_dataset([tif], far.iloc[:0], tmp_path / "ds")
    points = gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs=4326)
    with pytest.raises(InputError, match="no polygons"):
        build_dataset([tif], points, tmp_path / "ds")


def test_train_one_epoch_end_to_end_then_the_model_segments(tiny):
    d, tif, labels, _ = tiny
    out = d / "model.pt"
    t0 = time.perf_counter()
    r = CliRunner().invoke(main, ["train", str(tif), "--labels", str(labels), "-o", str(out), "--epochs", "1",
                                  "--imgsz", "128", "--tile-size", "128", "--overlap", "32", "--batch", "4",
                                  "--val-fraction", "0.25", "--attribution", "synthetic test scene"])
    assert r.exit_code == 0, r.output
    assert time.perf_counter() - t0 < 180
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["epochs"] == 1 and card["imgsz"] == 128 and card["attribution"] == ["synthetic test scene"]
    assert {"tp", "fp", "fn", "f1"} <= set(card["validation"])
    assert card["dataset"]["val_tiles"] > 0 and card["labels"]["polygons"] > 0
    assert out.stat().st_size < 10e6
    assert not list(d.glob(".model*"))  # work folder cleaned up
    from fastsam_geo.engine import FastSAMSegmenter
    seg = FastSAMSegmenter(out, conf=0.0, max_det=5)
    assert seg.imgsz == 128 and seg.meta["tile_size"] == 128
    gdf = segment_raster(tif, segmenter=seg, tile_size=128, overlap=32)
    assert len(gdf) > 0 and gdf.crs.to_epsg() == 32633
