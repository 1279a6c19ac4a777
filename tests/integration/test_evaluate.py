"""Footprint metrics reproduce the solaris / SpaceNet reference results."""

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner

from conftest import shared_path
from fastsam_geo import evaluate
from fastsam_geo.cli import main


def fixture(name):
    return shared_path("spacenet_atlanta", "eval_fixtures", name)


def test_reproduces_the_solaris_fixture_exactly():
    r = evaluate(fixture("pred.geojson"), fixture("gt.geojson"), iou=0.5)
    assert (r.tp, r.fp, r.fn) == (8, 20, 20)
    assert r.precision == pytest.approx(0.285714, abs=1e-6)
    assert r.recall == pytest.approx(0.285714, abs=1e-6)
    assert r.f1 == pytest.approx(0.285714, abs=1e-6)


def test_reprojects_predictions_to_the_reference_crs():
    pred = gpd.read_file(fixture("pred.geojson")).to_crs(4326)
    r = evaluate(pred, fixture("gt.geojson"))
    assert (r.tp, r.fp, r.fn) == (8, 20, 20)


def test_spacenet2_per_image_results():
    preds = pd.read_csv(fixture("SN2_sample_preds.csv"))
    truth = pd.read_csv(fixture("SN2_sample_truth.csv"))
    ref = pd.read_csv(fixture("SN2_test_results_full.csv"))

    def frame(df, image):
        wkt = [w for w in df[df.ImageId == image].PolygonWKT_Pix if w != "POLYGON EMPTY"]
        return gpd.GeoDataFrame(geometry=[shapely.from_wkt(w) for w in wkt])

    for _, row in ref.iterrows():
        r = evaluate(frame(preds, row.imageID), frame(truth, row.imageID), min_area=20)
        assert (r.tp, r.fp, r.fn) == (row.TruePos, row.FalsePos, row.FalseNeg), row.imageID


def test_invalid_geometries_are_repaired_not_fatal():
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    gt = gpd.GeoDataFrame(geometry=[bowtie, shapely.box(20, 0, 30, 10)], crs=32633)
    pred = gpd.GeoDataFrame(geometry=[shapely.box(20, 0, 30, 10), shapely.box(0, 0, 10, 10)], crs=32633)
    r = evaluate(pred, gt)  # the repaired bowtie (two triangles) covers half the square
    assert (r.tp, r.fp, r.fn) == (2, 0, 0) and sorted(p[2] for p in r.pairs) == [0.5, 1.0]
    r = evaluate(pred, gt, iou=0.6)
    assert (r.tp, r.fp, r.fn) == (1, 1, 1)


def test_partial_references_count_neither_way():
    gt = gpd.GeoDataFrame({"partial": [0, 1]}, geometry=[shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10)],
                          crs=32633)
    pred = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10)], crs=32633)
    assert (evaluate(pred, gt).tp, evaluate(pred, gt).fp) == (2, 0)
    r = evaluate(pred, gt, ignore_partial=True)
    assert (r.tp, r.fp, r.fn) == (1, 0, 0)
    r = evaluate(pred.iloc[:1], gt, ignore_partial=True)
    assert (r.tp, r.fp, r.fn) == (1, 0, 0)


def test_greedy_one_to_one():
    gt = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 10, 10)], crs=32633)
    pred = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 10, 9), shapely.box(0, 0, 10, 10)], crs=32633)
    r = evaluate(pred, gt)
    assert (r.tp, r.fp, r.fn) == (1, 1, 0) and r.pairs[0][0] == 1 and r.mean_iou == 1.0


def test_cli_evaluate_text_and_json():
    args = [str(fixture("pred.geojson")), str(fixture("gt.geojson"))]
    r = CliRunner().invoke(main, ["evaluate", *args])
    assert r.exit_code == 0 and "TP 8  FP 20  FN 20" in r.output and "F1 0.285714" in r.output
    rec = json.loads(CliRunner().invoke(main, ["evaluate", *args, "--json"]).output)
    assert rec["tp"] == 8 and np.isclose(rec["f1"], 2 / 7)
