"""The model that ships in the package: present, small, attributed, offline, and still as good."""

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pyproj
import pytest
import rasterio
import shapely

from fastsam_geo import evaluate, segment_raster
from fastsam_geo.engine import BUNDLED_PATH
from fastsam_geo.samples import SAMPLE_IMAGE, SAMPLE_LABELS

# F1@0.5 of the shipped model on the shipped sample, measured when the model was made
# (see fastsam_geo/data/buildings-nano.json, "sample_f1"); the guard allows 0.05 less.
CARD = json.loads(BUNDLED_PATH.with_suffix(".json").read_text()) if BUNDLED_PATH.with_suffix(".json").exists() else {}
MEASURED_SAMPLE_F1 = CARD.get("sample_f1", 1.0)


def test_bundled_model_is_small_and_attributed():
    assert BUNDLED_PATH.exists() and BUNDLED_PATH.stat().st_size <= 8 * 1024 * 1024
    text = json.dumps(CARD)
    assert "OpenAerialMap" in text and "CC-BY-4.0" in text and "OpenStreetMap" in text and "ODbL" in text
    assert CARD["imgsz"] and CARD["tile_size"] and CARD["train_areas"]


def test_bundled_model_on_the_shipped_sample_keeps_its_f1():
    gdf = segment_raster(SAMPLE_IMAGE)  # no segmenter: the bundled default, offline
    r = evaluate(gdf, SAMPLE_LABELS, iou=0.5, ignore_partial=True)
    assert r.f1 >= MEASURED_SAMPLE_F1 - 0.05, (r.f1, MEASURED_SAMPLE_F1, r.as_dict())
    # in the raster's own CRS (read independently, with rasterio), inside the raster...
    with rasterio.open(SAMPLE_IMAGE) as ds:
        raster_crs, (left, bottom, right, top) = pyproj.CRS.from_wkt(ds.crs.to_wkt()), ds.bounds
    assert len(gdf) > 10 and gdf.crs == raster_crs, (len(gdf), str(gdf.crs))
    minx, miny, maxx, maxy = gdf.total_bounds
    eps = 1e-6 * (right - left)
    assert left - eps <= minx < maxx <= right + eps and bottom - eps <= miny < maxy <= top + eps
    # ...and on the labelled buildings (labels are EPSG:4326: a CRS mix-up cannot pass)
    labels = gpd.read_file(SAMPLE_LABELS).to_crs(gdf.crs)
    on_a_building = shapely.STRtree(labels.geometry.values).query(gdf.geometry.values, predicate="intersects")
    assert len(set(on_a_building[0])) >= 0.9 * len(gdf), (len(set(on_a_building[0])), len(gdf))


def test_a_16_bit_copy_of_the_sample_scores_as_the_8_bit_sample(tmp_path):
    """The same picture as uint16 sensor counts (x37 + 180) or float reflectance is stretched to
    the levels the card records (where its 8-bit training imagery lies), so the model scores it
    as it scores the 8-bit sample; stretched band by band to 0-255 it lost ~0.24 F1."""
    import numpy as np

    assert CARD["input_levels"]["values"][0] > 10 and CARD["input_levels"]["values"][1] < 245
    with rasterio.open(SAMPLE_IMAGE) as src:
        data, profile = src.read().astype(np.float64), src.profile
    profile.update(compress="deflate", photometric="minisblack")
    profile.pop("jpeg_quality", None)
    scores = {}
    for name, pixels in (("u16", (data * 37 + 180).astype(np.uint16)),
                         ("f32", (0.02 + data / 255 * 0.4).astype(np.float32))):
        path = tmp_path / f"sample_{name}.tif"
        with rasterio.open(path, "w", **dict(profile, dtype=pixels.dtype.name)) as dst:
            dst.write(pixels)
        scores[name] = evaluate(segment_raster(path), SAMPLE_LABELS, iou=0.5, ignore_partial=True).f1
    assert min(scores.values()) >= MEASURED_SAMPLE_F1 - 0.05, (scores, MEASURED_SAMPLE_F1)


def test_demo_command_runs_offline(tmp_path):
    exe = Path(sys.executable).with_name("fastsam-geo")
    env = {**os.environ, "YOLO_OFFLINE": "true", "HOME": str(tmp_path)}
    r = subprocess.run([str(exe), "demo"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Found" in r.stdout and "buildings" in r.stdout and "OpenStreetMap" in r.stdout
    out = tmp_path / "sample_buildings.gpkg"  # the current folder by default, and the full path printed
    assert f"-> {out}" in r.stdout, r.stdout
    assert len(gpd.read_file(out)) > 10 and sorted(p.name for p in tmp_path.iterdir()) == ["sample_buildings.gpkg"]


@pytest.mark.parametrize("name", ["buildings-nano", "buildings-nano.pt"])
def test_bundled_model_by_name(name):
    from fastsam_geo.engine import resolve_weights
    assert resolve_weights(name) == BUNDLED_PATH
