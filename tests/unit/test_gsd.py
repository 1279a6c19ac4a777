"""Resolution-aware inference (--gsd): ground GSD from transform + CRS, tiles sized from the model
card, the far-off warning, --gsd native unchanged, validation."""

import json
import re
import warnings

import pytest
import shapely
from affine import Affine
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from pyproj import Transformer

from fastsam_geo import Options, segment_raster
from fastsam_geo.cli import main
from fastsam_geo.engine import BUNDLED_PATH
from fastsam_geo.errors import GsdWarning, InputError
from fastsam_geo.gsd import COARSE, SHARPEN, coarse_settings, ground_gsd, plan, trained_native_gsd
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


def test_only_imagery_enlarged_2_5x_or_more_is_sharpened():
    assert coarse_settings(plan(1024, 128, 0.5, 0.148)) == {"sharpen": SHARPEN}  # 3.4x
    assert coarse_settings(plan(1024, 128, 0.375, 0.15)) == {"sharpen": SHARPEN}  # 2.5x
    assert coarse_settings(plan(1024, 128, 0.3, 0.15)) == {}  # 2x: measured no better sharpened
    assert coarse_settings(plan(1024, 128, 0.15, 0.15)) == {}
    assert coarse_settings(plan(1024, 128, 0.05, 0.15)) == {}  # finer imagery is shrunk, not blurred


@given(st.floats(0.01, 10), st.floats(0.01, 10), st.floats(1.0, 4.0))
def test_a_coarser_raster_is_sharpened_whenever_a_finer_one_is(raster, model, more):
    fine = coarse_settings(plan(1024, 128, raster, model))
    coarse = coarse_settings(plan(1024, 128, raster * more, model))
    assert not fine or coarse == fine
    assert bool(fine) == (raster / model >= COARSE) or abs(raster / model - COARSE) < 1e-9


def test_auto_on_coarse_imagery_with_the_bundled_model(tmp_path):
    """0.5 m imagery, the bundled model (0.148 m): sharpened tiles, its own threshold; what the
    user sets wins; loaded or custom segmenters and native runs keep their settings."""
    card = json.loads(BUNDLED_PATH.with_suffix(".json").read_text())
    coarse = write_scene(make_scene(300, 300, seed=1, cell=64, res=0.5), tmp_path / "coarse.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GsdWarning)  # 3.4x coarser than its range: warned, tested above
        sr = SegmentedRaster(coarse)
        assert 0.5 / card["gsd"] > COARSE
        assert sr.options.sharpen == SHARPEN and sr.options.conf is None  # None: the model's own
        mine = SegmentedRaster(coarse, sharpen=0.2)
        assert mine.options.sharpen == 0.2 and SegmentedRaster(coarse, sharpen=0.0).options.sharpen == 0.0
        for kept in (SegmentedRaster(coarse, gsd="native"), SegmentedRaster(coarse, segmenter=FAKE),
                     SegmentedRaster(coarse, segmenter=Carded(tmp_path, {"gsd": 0.15, "conf": 0.4}))):
            assert (kept.options.conf, kept.options.sharpen) == (None, None)
    native = SegmentedRaster(SAMPLE_IMAGE)  # the model's own GSD: nothing changes
    assert (native.options.conf, native.options.sharpen) == (None, None)


@pytest.mark.parametrize("bad", [-0.1, 3.5, float("nan"), "x", True])
def test_options_reject_bad_sharpen(bad):
    with pytest.raises(InputError, match="sharpen must be a number in"):
        Options(sharpen=bad)


def test_cli_names_what_auto_changed_on_coarse_imagery(tmp_path):
    coarse = write_scene(make_scene(256, 256, seed=1, cell=64, res=0.5), tmp_path / "coarse.tif")
    run = CliRunner().invoke
    r = run(main, ["segment", str(coarse), "-o", str(tmp_path / "a.gpkg"), "--allow-empty", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("GSD:"))
    assert re.search(r"raster 0\.5 m/px, model 0\.14\d m/px: tiles of \d+ px, overlap \d+, sharpen 0\.6 \(", line), line
    r = run(main, ["segment", str(coarse), "-o", str(tmp_path / "b.gpkg"), "--allow-empty", "--device", "cpu",
                   "--sharpen", "0"])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("GSD:"))
    assert "sharpen" not in line  # the user's own setting: nothing to announce
    r = run(main, ["segment", str(coarse), "-o", str(tmp_path / "c.gpkg"), "--sharpen", "5"])
    assert r.exit_code == 2 and r.output == "Error: sharpen must be a number in [0, 3], got 5.0\n"
    assert not (tmp_path / "c.gpkg").exists()


def test_a_model_trained_on_coarse_imagery_is_not_sharpened_for_it(tmp_path):
    """A model fine-tuned on 0.5 m imagery at its base's 0.15 m learned bicubic enlargements as
    they are: segment must feed it the same, not sharpened ones (its card's ``data`` says so)."""
    p = plan(1024, 128, 0.5, 0.15)
    assert coarse_settings(p, trained_on=0.5) == {} and coarse_settings(p, trained_on=0.48) == {}
    assert coarse_settings(p, trained_on=0.15) == {"sharpen": SHARPEN}  # trained at its own scale only
    assert coarse_settings(plan(1024, 128, 1.0, 0.15), trained_on=0.5) == {"sharpen": SHARPEN}  # coarser still
    assert trained_native_gsd({"data": [{"ground_gsd": 0.3}, {"ground_gsd": 0.5}, {"ground_gsd": None}]}) == 0.5
    for card in (None, {}, {"data": "OAM mosaics"}, {"data": [{"ground_gsd": "x"}, 3]}):
        assert trained_native_gsd(card) is None
    coarse = write_scene(make_scene(300, 300, seed=1, cell=64, res=0.5), tmp_path / "coarse.tif")
    for native, sharpen in ((0.5, None), (0.15, SHARPEN)):
        d = tmp_path / f"m{native}"
        d.mkdir()
        weights = Carded(d, {"gsd": 0.15, "gsd_range": [0.15, 0.15], "data": [{"ground_gsd": native}]}).path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # far-off GSD, "checkpoints are code"
            assert SegmentedRaster(coarse, segmenter=str(weights)).options.sharpen == sharpen
