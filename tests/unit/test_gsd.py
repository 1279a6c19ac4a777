"""Resolution-aware inference (--gsd): ground GSD from transform + CRS, tiles sized from the model
card, the far-off warning, --gsd native unchanged, validation."""

import json
import warnings

import pytest
import shapely
from affine import Affine
from click.testing import CliRunner
from pyproj import Transformer

from fastsam_geo import Options, segment_raster
from fastsam_geo.cli import main
from fastsam_geo.engine import BUNDLED_PATH
from fastsam_geo.errors import GsdWarning, InputError
from fastsam_geo.gsd import ground_gsd, plan
from fastsam_geo.samples import SAMPLE_IMAGE
from fastsam_geo.session import SegmentedRaster
from fastsam_geo.synthetic import ColourSegmenter, PerturbedSegmenter, make_scene, write_scene

FAKE = "fastsam_geo.synthetic:ColourSegmenter"


class Carded:
    """A fake segmenter with weights on disk and a card beside them (as a loaded FastSAM model)."""

    def __init__(self, tmp_path, card: dict):
        self.path = tmp_path / "m.pt"
        self.path.write_bytes(b"not a model")
        self.path.with_suffix(".json").write_text(json.dumps(card))
        self.base = PerturbedSegmenter(seed=3)

    def __call__(self, images):
        return self.base(images)


@pytest.fixture(scope="module")
def tif(tmp_path_factory):
    """A 0.3 m/px UTM scene (ground GSD 0.3 m: UTM near its central meridian)."""
    scene = make_scene(700, 600, seed=5, cell=64)
    return write_scene(scene, tmp_path_factory.mktemp("gsd") / "scene.tif")


def test_web_mercator_ground_gsd_at_latitude_60_is_half_the_crs_pixel():
    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(10, 60)
    t = Affine(2.0, 0, x - 100, 0, -2.0, y + 100)
    assert ground_gsd(t, "EPSG:3857", 100, 100) == pytest.approx(1.0, rel=0.005)
    x0, y0 = Transformer.from_crs(4326, 3857, always_xy=True).transform(10, 0)
    assert ground_gsd(Affine(2.0, 0, x0, 0, -2.0, y0 + 100), "EPSG:3857", 100, 100) == pytest.approx(2.0, rel=0.005)


def test_utm_ground_gsd_is_its_pixel_size():
    t = Affine(0.5, 0, 500000 - 50, 0, -0.5, 4500000)
    assert ground_gsd(t, "EPSG:32633", 200, 200) == pytest.approx(0.5, rel=1e-3)
    assert ground_gsd(t, None, 200, 200) is None


def test_auto_sizes_tiles_from_the_card(tmp_path, tif):
    # model trained at 0.15 m, raster at 0.3 m: half the native pixels per tile, then letterboxed up
    sr = SegmentedRaster(tif, segmenter=Carded(tmp_path, {"gsd": 0.15, "gsd_range": [0.14, 0.16]}))
    assert (sr.options.tile_size, sr.options.overlap) == (512, 64)
    assert sr.gsd.raster_gsd == pytest.approx(0.3, rel=1e-3) and sr.gsd.factor == pytest.approx(0.5, rel=1e-3)
    assert max(t.box[2] - t.box[0] for t in sr.grid) == 512
    coarse = SegmentedRaster(tif, segmenter=Carded(tmp_path, {"gsd": 0.6}), tile_size=512, overlap=64)
    assert (coarse.options.tile_size, coarse.options.overlap) == (1024, 128)
    # the cache key follows the effective tiling
    native = SegmentedRaster(tif, segmenter=Carded(tmp_path, {"gsd": 0.15}), gsd="native")
    assert sr.options.result_key() != native.options.result_key()
    # a number is the model GSD to assume, card or not
    assert SegmentedRaster(tif, segmenter=ColourSegmenter(), gsd=0.6).options.tile_size in (2047, 2048)
    # the bundled model's card: its mosaics and sample are within its range, tiles unchanged
    bundled = SegmentedRaster(SAMPLE_IMAGE)
    card = json.loads(BUNDLED_PATH.with_suffix(".json").read_text())
    assert 0.14 < card["gsd"] < 0.16  # ground metres of its ~0.15 m drone mosaics, not CRS units
    assert bundled.gsd.model_gsd == pytest.approx(card["gsd"]) and bundled.options.tile_size == 1024


def test_within_ten_percent_of_the_model_keeps_the_tiles():
    assert plan(1024, 128, 0.1493, 0.147).tile_size == 1024
    assert plan(1024, 128, 0.2, 0.147).tile_size == 753


@pytest.mark.parametrize("card", [{}, {"gsd": "x"}, {"gsd": -1}, {"gsd": 0.15, "gsd_range": ["a"]}])
def test_a_card_without_a_usable_gsd_changes_nothing(tmp_path, tif, card):
    sr = SegmentedRaster(tif, segmenter=Carded(tmp_path, card))
    assert sr.gsd is None and sr.options == Options()


def test_fake_segmenter_without_card_is_untouched_by_auto(tif):
    sr = SegmentedRaster(tif, segmenter=ColourSegmenter())
    assert sr.gsd is None and sr.options == Options()


def test_far_off_imagery_warns_naming_both_gsds(tmp_path):
    card = {"gsd": 0.15, "gsd_range": [0.14, 0.16]}
    coarse = write_scene(make_scene(300, 300, seed=1, cell=64, res=1.0), tmp_path / "coarse.tif")
    with pytest.warns(GsdWarning, match=r"imagery at 1 m/px is 6\.2[56]x coarser than .*\(0\.14-0\.16 m/px\)"):
        SegmentedRaster(coarse, segmenter=Carded(tmp_path, card))
    fine = write_scene(make_scene(300, 300, seed=1, cell=64, res=0.05), tmp_path / "fine.tif")
    with pytest.warns(GsdWarning, match=r"0\.05 m/px is 2\.80x finer"):
        SegmentedRaster(fine, segmenter=Carded(tmp_path, card))
    near = write_scene(make_scene(300, 300, seed=1, cell=64, res=0.3), tmp_path / "near.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("error", GsdWarning)
        SegmentedRaster(near, segmenter=Carded(tmp_path, card))  # 1.9x: within 2x of the range
        SegmentedRaster(coarse, segmenter=Carded(tmp_path, card), gsd="native")  # native: no GSD work


def test_native_is_todays_run_exactly(tmp_path, tif):
    carded = Carded(tmp_path, {"gsd": 0.15, "gsd_range": [0.14, 0.16]})
    sr = SegmentedRaster(tif, segmenter=carded, gsd="native")
    assert sr.gsd is None and sr.options == Options(gsd="native")
    got = segment_raster(tif, segmenter=carded, gsd="native")
    today = segment_raster(tif, segmenter=PerturbedSegmenter(seed=3))  # no card: today's tiling
    auto = segment_raster(tif, segmenter=carded)
    assert len(got) and list(shapely.to_wkb(got.geometry.values)) == list(shapely.to_wkb(today.geometry.values))
    assert list(shapely.to_wkb(auto.geometry.values)) != list(shapely.to_wkb(today.geometry.values))


@pytest.mark.parametrize("bad", [-1, 0, float("nan"), "abc", True, "", None])
def test_options_reject_bad_gsd(bad):
    with pytest.raises(InputError, match="gsd must be auto, native or a positive number"):
        Options(gsd=bad)


def test_options_read_gsd_strings():
    assert Options(gsd="0.3").gsd == 0.3 and Options(gsd="Native").gsd == "native" and Options().gsd == "auto"


@pytest.mark.parametrize("bad", ["-1", "abc"])
def test_cli_bad_gsd_is_exit_2_one_line(tif, tmp_path, bad):
    out = tmp_path / "o.gpkg"
    r = CliRunner().invoke(main, ["segment", str(tif), "-o", str(out), "-m", FAKE, "--gsd", bad, "-q"])
    assert r.exit_code == 2 and r.output.startswith("Error: gsd must be") and r.output.count("\n") == 1
    assert not out.exists()


def test_cli_warns_for_far_off_imagery_and_names_the_tiling(tif, tmp_path):
    out = tmp_path / "o.gpkg"
    r = CliRunner().invoke(main, ["segment", str(tif), "-o", str(out), "-m", FAKE, "--gsd", "0.1"])
    assert r.exit_code == 0, r.output
    assert "Warning: imagery at 0.3 m/px is 3.00x coarser than the model's training imagery (0.1 m/px)" in r.output
    assert "GSD: raster 0.3 m/px, model 0.1 m/px: tiles of 341 px, overlap 43" in r.output
