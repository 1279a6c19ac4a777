"""evaluate measures what it claims: the reference clipped to the image, small references
ignored by a named protocol (SpaceNet 2, all six reference images), per-tile tables, a plot."""

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner

from conftest import shared_path
from fastsam_geo import evaluate, evaluate_by_tile
from fastsam_geo.cli import main
from fastsam_geo.synthetic import make_scene, write_scene


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A scene with a nodata block; predictions = the truth; the reference adds 3 polygons off
    the raster, 1 inside the nodata block and 1 crossing the east edge."""
    d = tmp_path_factory.mktemp("extent")
    scene = make_scene(600, 400, seed=3, nodata=((0, 0, 150, 150),))
    tif = write_scene(scene, d / "scene.tif")
    truth = [g for g in scene.truth_map() if not g.is_empty]
    t = scene.transform
    x1, y0 = t.c + 600 * t.a, t.f + 400 * t.e
    outside = [shapely.box(x1 + 10 + 20 * i, y0 + 20, x1 + 25 + 20 * i, y0 + 35) for i in range(3)]
    in_nodata = shapely.box(t.c + 3, t.f - 12, t.c + 12, t.f - 3)  # pixels ~(10-40, 10-40): nodata
    crossing = shapely.box(x1 - 3, y0 + 60, x1 + 6, y0 + 69)
    ref = gpd.GeoDataFrame(geometry=truth + outside + [in_nodata, crossing], crs=scene.crs)
    pred = gpd.GeoDataFrame(geometry=[*truth, crossing.intersection(shapely.box(*scene_bounds(scene)))],
                            crs=scene.crs)
    ref.to_file(d / "ref.gpkg")
    pred.to_file(d / "pred.gpkg")
    return tif, d / "pred.gpkg", d / "ref.gpkg", len(truth)


def scene_bounds(scene):
    t = scene.transform
    return (t.c, t.f + scene.height * t.e, t.c + scene.width * t.a, t.f)


def test_reference_is_clipped_to_the_valid_footprint(case):
    tif, pred, ref, n = case
    r = evaluate(pred, ref, raster=tif)
    assert r.clipped and r.out_of_extent == 4  # 3 off the raster, 1 over nodata
    assert (r.tp, r.fp, r.fn) == (n + 1, 0, 0)  # the crossing one, cut at the edge, matches
    kept = evaluate(pred, ref, raster=tif, clip=False)
    # unclipped: the 4 out of extent are misses, and the edge-crossing reference (1/3 inside) no
    # longer matches its cut prediction
    assert not kept.clipped and kept.out_of_extent == 0 and (kept.tp, kept.fp, kept.fn) == (n, 1, 5)
    assert (evaluate(pred, ref).tp, evaluate(pred, ref).fn) == (kept.tp, kept.fn)  # no raster: nothing to clip


def test_reference_in_another_crs_is_clipped_the_same(case, tmp_path):
    tif, pred, ref, n = case
    gpd.read_file(ref).to_crs(4326).to_file(tmp_path / "ref4326.geojson")
    r = evaluate(pred, tmp_path / "ref4326.geojson", raster=tif)
    assert r.out_of_extent == 4 and (r.tp, r.fp, r.fn) == (n + 1, 0, 0)


def test_min_ref_area_units(case):
    tif, pred, ref, _ = case
    px = 0.3 * 0.3  # make_scene: 0.3 m pixels in UTM
    r = evaluate(pred, ref, raster=tif, clip=False, min_ref_area="1000px")
    small = sum(g.area / px < 1000 for g in gpd.read_file(ref).geometry)
    assert r.below_min_area == small > 0
    m2 = evaluate(pred, ref, raster=tif, clip=False, min_ref_area=f"{1000 * px}m2")
    assert m2.below_min_area == small and (m2.tp, m2.fn) == (r.tp, r.fn)
    from fastsam_geo.errors import InputError

    with pytest.raises(InputError, match="needs a unit"):
        evaluate(pred, ref, min_ref_area="20")
    with pytest.raises(InputError, match="needs the raster"):
        evaluate(pred, ref, min_ref_area="20px")


def test_spacenet2_per_image_results_all_six_images():
    preds = pd.read_csv(shared_path("spacenet_atlanta", "eval_fixtures", "SN2_sample_preds.csv"))
    truth = pd.read_csv(shared_path("spacenet_atlanta", "eval_fixtures", "SN2_sample_truth.csv"))
    ref = pd.read_csv(shared_path("spacenet_atlanta", "eval_fixtures", "SN2_test_results_full.csv"))

    def frame(df, image):  # pixel coordinates, no CRS: areas are pixels
        wkt = [w for w in df[df.ImageId == image].PolygonWKT_Pix if w != "POLYGON EMPTY"]
        return gpd.GeoDataFrame(geometry=[shapely.from_wkt(w) for w in wkt])

    agree = without = 0
    for _, row in ref.iterrows():
        want = (row.TruePos, row.FalsePos, row.FalseNeg)
        r = evaluate(frame(preds, row.imageID), frame(truth, row.imageID), min_ref_area="20px")
        agree += (r.tp, r.fp, r.fn) == want
        assert r.f1 == pytest.approx(row.F1Score, abs=1e-9), row.imageID
        r = evaluate(frame(preds, row.imageID), frame(truth, row.imageID))
        without += (r.tp, r.fp, r.fn) == want
    assert (agree, without) == (6, 5)  # the 20 px protocol is what makes Khartoum img130 agree


def test_by_tile_totals_are_evaluates(case):
    tif, pred, ref, _ = case
    r = evaluate(pred, ref, raster=tif)
    t = evaluate_by_tile(pred, ref, tif, tile_size=256)
    assert len(t) > 1 and (t.tp.sum(), t.fp.sum(), t.fn.sum()) == (r.tp, r.fp, r.fn)
    assert set(zip(t.row, t.col)) <= {(i, j) for i in range(2) for j in range(3)}


def test_cli_says_what_it_clipped(case):
    tif, pred, ref, n = case
    r = CliRunner().invoke(main, ["evaluate", str(pred), str(ref), "--raster", str(tif)])
    assert r.exit_code == 0, r.output
    assert "clipped to the raster's valid footprint: 4 polygon(s) out of extent" in r.output
    assert f"TP {n + 1}  FP 0  FN 0" in r.output
    r = CliRunner().invoke(main, ["evaluate", str(pred), str(ref), "--raster", str(tif), "--no-clip"])
    assert "not clipped (--no-clip)" in r.output and f"TP {n}  FP 1  FN 5" in r.output
    r = CliRunner().invoke(main, ["evaluate", str(pred), str(ref), "--raster", str(tif), "--by-tile",
                                  "--tile-size", "256", "--json"])
    rec = json.loads(r.output)
    assert rec["out_of_extent"] == 4 and sum(t["tp"] for t in rec["tiles"]) == rec["tp"]
    assert "SpaceNet 2" in CliRunner().invoke(main, ["evaluate", "--help"]).output


def test_cli_plot(case, tmp_path):
    pytest.importorskip("matplotlib")
    tif, pred, ref, _ = case
    png = tmp_path / "eval.png"
    r = CliRunner().invoke(main, ["evaluate", str(pred), str(ref), "--raster", str(tif), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.png"]  # written atomically, nothing left over
    from PIL import Image

    im = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert im.shape[0] > 200
    from matplotlib.colors import to_rgb

    from fastsam_geo.plots import EVAL_COLORS

    tp = (np.array(to_rgb(EVAL_COLORS["tp"])) * 255).astype(int)
    assert (np.abs(im - tp).sum(axis=2) < 30).sum() > 100  # TP outlines drawn in their colour


@pytest.mark.parametrize("args, match", [
    (["--plot", "x.png"], "--plot needs --raster"),
    (["--by-tile"], "--by-tile needs --raster"),
    (["--raster", "R", "--plot", "no/such/dir/x.png"], "does not exist"),
    (["--min-ref-area", "20 acres"], "min_ref_area must be a number with a unit"),
])
def test_cli_bad_evaluate_options_are_one_line(case, args, match):
    _tif, pred, ref, _ = case
    r = CliRunner().invoke(main, ["evaluate", str(pred), str(ref), *args])
    assert r.exit_code == 2 and match in r.output and "Traceback" not in r.output


def test_cli_plot_without_matplotlib_is_a_clear_error(case, tmp_path, monkeypatch):
    import importlib.util

    tif, pred, ref, _ = case
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    r = CliRunner().invoke(main, ["evaluate", str(pred), str(ref), "--raster", str(tif), "--plot",
                                  str(tmp_path / "e.png")])
    assert r.exit_code == 2 and "fastsam-geo[plot]" in r.output and not (tmp_path / "e.png").exists()


def sized_layers(crs="EPSG:32633"):
    """Squares at ~60° N (UTM 33N, metres): a 45 m² reference matched by a 60 m² prediction
    (IoU 0.75), an exact 100 m² match, a missed 10 m² hut, a 300 m² reference cut by the edge
    (partial) matched exactly, and a 700 m² prediction matching nothing."""
    x0, y0 = 500_000.0, 6_650_000.0

    def sq(x, area, h=None):
        w = area / (h or area ** 0.5)
        return shapely.box(x0 + x, y0, x0 + x + w, y0 + (h or area ** 0.5))

    ref = gpd.GeoDataFrame({"partial": [0, 0, 0, 1]},
                           geometry=[sq(0, 45, 5), sq(100, 100), sq(200, 10), sq(300, 300)], crs=crs)
    pred = gpd.GeoDataFrame(geometry=[sq(0, 60, 5), sq(100, 100), sq(300, 300), sq(500, 700)], crs=crs)
    return pred, ref


def counts(table):
    return [tuple(r) for r in table[["tp", "fp", "fn"]].itertuples(index=False)]


def test_by_size_counts_a_match_in_its_references_class():
    from fastsam_geo import evaluate_by_size

    pred, ref = sized_layers()
    t = evaluate_by_size(pred, ref, ignore_partial=True)
    assert list(t.min_m2) == [0, 20, 50, 150, 500] and list(t.max_m2) == [20, 50, 150, 500, float("inf")]
    # the 60 m² prediction of the 45 m² reference is a TP of class 20-50, not an FP of 50-150
    assert counts(t) == [(0, 0, 1), (1, 0, 0), (1, 0, 0), (0, 0, 0), (0, 1, 0)]
    assert counts(evaluate_by_size(pred, ref)) == [(0, 0, 1), (1, 0, 0), (1, 0, 0), (1, 0, 0), (0, 1, 0)]
    assert t.recall.tolist() == [0, 1, 1, 0, 0] and t.f1.iloc[1] == 1
    assert counts(evaluate_by_size(pred, ref, sizes=[50])) == [(1, 0, 1), (2, 1, 0)]
    assert counts(evaluate_by_size(pred, ref, sizes=" 50")) == counts(evaluate_by_size(pred, ref, sizes="50,"))


def test_by_size_classes_are_ground_square_metres_in_any_crs():
    """At 60° N a Web Mercator square metre is a quarter of one on the ground: planar areas would
    put every footprint two classes up."""
    from fastsam_geo import evaluate_by_size

    pred, ref = sized_layers()
    want = counts(evaluate_by_size(pred, ref, ignore_partial=True))
    merc = evaluate_by_size(pred.to_crs(3857), ref.to_crs(3857), ignore_partial=True)
    geo = evaluate_by_size(pred.to_crs(4326), ref, ignore_partial=True)
    assert counts(merc) == counts(geo) == want


def test_by_size_totals_are_evaluates(case):
    from fastsam_geo import evaluate_by_size

    tif, pred, ref, _ = case
    sizes = np.quantile(gpd.read_file(ref).area, [0.3, 0.6, 0.9])  # UTM: m² on the ground, near enough
    for kw in ({}, {"raster": tif}, {"raster": tif, "clip": False}):
        r = evaluate(pred, ref, **kw)
        t = evaluate_by_size(pred, ref, sizes=sizes, **kw)
        assert len(t) == 4 and (t.tp.sum(), t.fp.sum(), t.fn.sum()) == (r.tp, r.fp, r.fn)
        assert (t.tp + t.fn > 0).sum() >= 2  # the scene's objects fall in more than one class


@pytest.mark.parametrize("sizes", [(50, 20), (0, 20), (-5,), (), ("x",), (20, float("nan")), "20,x", "", 20])
def test_by_size_bad_classes(sizes):
    from fastsam_geo import evaluate_by_size
    from fastsam_geo.errors import InputError

    pred, ref = sized_layers()
    with pytest.raises(InputError, match="sizes must be"):
        evaluate_by_size(pred, ref, sizes=sizes)


def test_by_size_needs_a_crs():
    from fastsam_geo import evaluate_by_size
    from fastsam_geo.errors import InputError

    pred, ref = sized_layers()
    with pytest.raises(InputError, match="needs layers with a CRS"):
        evaluate_by_size(pred.set_crs(None, allow_override=True), ref.set_crs(None, allow_override=True))


def test_cli_by_size(tmp_path):
    pred, ref = sized_layers()
    pred.to_file(tmp_path / "pred.gpkg")
    ref.to_file(tmp_path / "ref.geojson")
    args = ["evaluate", str(tmp_path / "pred.gpkg"), str(tmp_path / "ref.geojson"), "--ignore-partial", "--by-size"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    row = next(ln for ln in lines if ln.split()[:1] == ["20-50"])
    assert row.split()[1:] == ["1", "0", "0", "1.000", "1.000", "1.000", "0.750"]
    assert next(ln for ln in lines if ln.split()[:2] == [">=", "500"]).split()[2:] == ["0", "1", "0", "0.000",
                                                                                       "-", "0.000", "0.000"]
    assert next(ln for ln in lines if ln.split()[:1] == ["150-500"]).split()[1:] == ["0", "0", "0"] + ["-"] * 4
    rec = json.loads(CliRunner().invoke(main, [*args, "--sizes", "50", "--json"]).output)
    assert [(s["min_m2"], s["tp"], s["fp"], s["fn"]) for s in rec["sizes"]] == [(0, 1, 0, 1), (50, 1, 1, 0)]
    for bad, msg in (("50,20", "ascending"), ("20,big", "comma-separated square metres")):
        r = CliRunner().invoke(main, [*args, "--sizes", bad])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output
