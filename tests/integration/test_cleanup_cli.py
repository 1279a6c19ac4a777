"""segment's clean-up flags: ground units, applied after merging, bare numbers as before."""

import geopandas as gpd
import numpy as np
import pytest
from click.testing import CliRunner

from fastsam_geo import segment_raster
from fastsam_geo.cli import main
from fastsam_geo.synthetic import PerturbedSegmenter, make_scene, write_scene

FAKE = "fastsam_geo.synthetic:ColourSegmenter"


@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory):
    scene = make_scene(700, 500, seed=5)
    return scene, write_scene(scene, tmp_path_factory.mktemp("clean") / "scene.tif")


def seg(tif, tmp_path, name, *flags):
    out = tmp_path / f"{name}.gpkg"
    r = CliRunner().invoke(main, ["segment", str(tif), "-o", str(out), "--model", FAKE, "--tile-size", "256",
                                  "--overlap", "32", "-q", *flags])
    assert r.exit_code == 0, r.output
    return gpd.read_file(out)


def test_area_limits_are_ground_m2_and_bare_min_area_is_still_pixels(scene_tif, tmp_path):
    _, tif = scene_tif
    base = seg(tif, tmp_path, "base")
    assert len(seg(tif, tmp_path, "px", "--min-area", "16")) == len(base)  # as before: pixels
    lo, hi = np.quantile(base.area_m2, [0.3, 0.7])
    kept = seg(tif, tmp_path, "m2", "--min-area", f"{lo:.3f}m2", "--max-area", f"{hi:.3f}")
    want = ((base.area_m2 >= round(lo, 3)) & (base.area_m2 <= round(hi, 3))).sum()
    assert 0 < len(kept) == want < len(base)
    assert kept.area_m2.between(round(lo, 3), round(hi, 3)).all()


def test_api_applies_the_clean_up_after_merging(scene_tif):
    _, tif = scene_tif
    kw = dict(segmenter=PerturbedSegmenter(seed=2), tile_size=256, overlap=32)
    raw = segment_raster(tif, **kw)
    simple = segment_raster(tif, simplify_m=1.0, **kw)
    assert len(simple) == len(raw)
    assert simple.geometry.count_coordinates().sum() < raw.geometry.count_coordinates().sum()
    assert segment_raster(tif, max_area_m2=float(raw.area_m2.median()), **kw).area_m2.max() <= raw.area_m2.median()


@pytest.mark.parametrize("flags, match", [
    (["--min-area", "2.5"], "whole number"),
    (["--simplify", "3ft"], "--simplify must be a number with a unit"),
    (["--max-area", "0"], "max_area_m2 must be"),
])
def test_bad_clean_up_flags_are_one_line(scene_tif, tmp_path, flags, match):
    _, tif = scene_tif
    r = CliRunner().invoke(main, ["segment", str(tif), "-o", str(tmp_path / "x.gpkg"), "--model", FAKE, *flags])
    assert r.exit_code == 2 and match in r.output and "Traceback" not in r.output
