"""What GIS users hand `evaluate`, `train` and the prompt reader: GeoPackages with several layers,
tables without geometry, NULL / point / line rows, partial flags written as text, Shapefile-style
column names, multi-part prompts, and prompts as GeoDataFrames."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner

from fastsam_geo import evaluate, evaluate_by_size, read_prompts, segment_raster
from fastsam_geo.cli import main
from fastsam_geo.dataset import _choose_val, load_labels
from fastsam_geo.errors import InputError, InputWarning, PromptError
from fastsam_geo.io import read_vector
from fastsam_geo.prompts import BoxPrompt, PointPrompt
from fastsam_geo.synthetic import ColourSegmenter, make_scene, write_scene
from fastsam_geo.tiling import plan_tiles

ONE = dict(tile_size=256, overlap=32, gsd="native")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    sc = make_scene(600, 500, seed=5, cell=60)
    d = tmp_path_factory.mktemp("gis")
    tif = write_scene(sc, d / "scene.tif")
    truth = gpd.GeoDataFrame({"name": [f"b{i}" for i in range(len(sc.footprints))]}, geometry=sc.truth_map(),
                             crs=sc.crs)
    return sc, tif, truth, d


def one_line_exit_2(res, *words):
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and "Traceback" not in res.output, res.output
    for w in words:
        assert w in res.output, res.output


def test_a_file_with_several_layers_is_read_only_where_a_layer_is_named(scene, tmp_path):
    """`segment -o f.gpkg --layer pred` keeps f's other layers; reading f's first layer back would
    score roads as buildings. A file with several spatial layers needs the layer named."""
    _, _, truth, _ = scene
    f = tmp_path / "several.gpkg"
    roads = gpd.GeoDataFrame(geometry=[shapely.LineString(truth.total_bounds.reshape(2, 2))], crs=truth.crs)
    roads.to_file(f, layer="roads")
    truth.to_file(f, layer="buildings")
    truth.iloc[::2].to_file(f, layer="pred")
    with pytest.raises(InputError, match=r"has 3 layers \(roads, buildings, pred\); choose one with layer="):
        read_vector(f)
    with pytest.raises(InputError, match=r"no layer 'houses'; it has roads, buildings, pred"):
        read_vector(f, layer="houses")
    runner = CliRunner()
    one_line_exit_2(runner.invoke(main, ["evaluate", str(f), str(f)]), "--pred-layer", "roads, buildings, pred")
    one_line_exit_2(runner.invoke(main, ["evaluate", str(f), str(f), "--pred-layer", "pred"]), "--ref-layer")
    res = runner.invoke(main, ["evaluate", str(f), str(f), "--pred-layer", "pred", "--ref-layer", "buildings"])
    n, half = len(truth), len(truth.iloc[::2])
    assert res.exit_code == 0 and f"TP {half}  FP 0  FN {n - half}" in res.output, res.output
    r = evaluate(f, f, pred_layer="pred", gt_layer="buildings")
    assert (r.tp, r.fp, r.fn) == (half, 0, n - half)
    assert len(read_prompts(f, layer="buildings")) == n
    with pytest.raises(InputError, match="choose one with --prompts-layer"):
        read_prompts(f)
    assert len(load_labels(f, layer="buildings")) == n
    with pytest.raises(InputError, match="choose one with --labels-layer"):
        load_labels(f)
    one_line_exit_2(runner.invoke(main, ["train", str(scene[1]), "--labels", str(f), "-o", str(tmp_path / "m.pt")]),
                    "--labels-layer")
    single = tmp_path / "one.gpkg"
    truth.to_file(single, layer="whatever")
    assert len(read_vector(single)) == n  # one layer: nothing to choose


def test_a_table_without_geometry_is_one_line_and_exit_2(scene, tmp_path):
    _, tif, _, _ = scene
    csv = tmp_path / "points.csv"
    pd.DataFrame({"x": [1.0], "y": [2.0]}).to_csv(csv, index=False)
    runner = CliRunner()
    one_line_exit_2(runner.invoke(main, ["evaluate", str(csv), str(csv)]), "a table without geometry")
    out = tmp_path / "o.gpkg"
    one_line_exit_2(runner.invoke(main, ["segment", str(tif), "-o", str(out), "--prompts", str(csv)]),
                    "a table without geometry")
    assert not out.exists()


def test_rows_without_a_polygon_are_no_building_either_way(scene, tmp_path):
    """A prompt run's not-found rows (NULL geometry), and points or lines in a reference, are
    neither false positives nor missed buildings; the counts say how many were set aside."""
    _, _, truth, _ = scene
    c = truth.geometry.iloc[0].centroid
    pred = gpd.GeoDataFrame(geometry=[*truth.geometry, None, None, shapely.Point(c.x, c.y)], crs=truth.crs)
    ref = gpd.GeoDataFrame(geometry=[*truth.geometry, None, shapely.Point(c.x, c.y),
                                     shapely.LineString([(c.x, c.y), (c.x + 5, c.y)]), shapely.Polygon()],
                           crs=truth.crs)
    r = evaluate(pred, ref)
    assert (r.tp, r.fp, r.fn) == (len(truth), 0, 0) and r.f1 == 1.0
    assert (r.pred_without_area, r.ref_without_area) == (3, 4)
    by_size = evaluate_by_size(pred, ref)
    assert (by_size.tp.sum(), by_size.fp.sum(), by_size.fn.sum()) == (len(truth), 0, 0)
    pred.to_file(tmp_path / "pred.gpkg")
    ref.to_file(tmp_path / "ref.gpkg")
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "pred.gpkg"), str(tmp_path / "ref.gpkg")])
    assert res.exit_code == 0 and f"TP {len(truth)}  FP 0  FN 0" in res.output, res.output
    assert "4 reference row(s) without a polygon" in res.output and "3 prediction row(s)" in res.output


@pytest.mark.parametrize("flags", [
    ["1", "0"], ["yes", "no"], ["True", "False"], [True, False], [1.0, 0.0], ["Y", None],
])
def test_partial_flags_are_read_as_gis_tools_write_them(scene, flags):
    _, _, truth, _ = scene
    ints = truth.assign(partial=[1 if k % 3 == 0 else 0 for k in range(len(truth))])
    text = truth.assign(partial=[flags[0] if k % 3 == 0 else flags[1] for k in range(len(truth))])
    pred = truth.iloc[1:]  # one of the partial references missed: not a false negative
    want = evaluate(pred, ints, ignore_partial=True)
    got = evaluate(pred, text, ignore_partial=True)
    assert (got.tp, got.fp, got.fn) == (want.tp, want.fp, want.fn) == (len(truth) - len(truth[::3]), 0, 0)


def test_a_partial_flag_that_is_no_flag_or_missing_says_so(scene, tmp_path):
    _, _, truth, _ = scene
    bad = truth.assign(partial=["maybe"] + ["no"] * (len(truth) - 1))
    bad.to_file(tmp_path / "bad.gpkg")
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "bad.gpkg"), str(tmp_path / "bad.gpkg"),
                                    "--ignore-partial"])
    one_line_exit_2(res, "'partial' has the value 'maybe'")
    with pytest.warns(InputWarning, match="no 'partial' column, so every reference polygon counts"):
        r = evaluate(truth.iloc[1:], truth, ignore_partial=True)
    assert r.fn == 1


def test_prompt_files_as_gis_tools_write_them(scene, tmp_path):
    """Shapefiles upper-case column names (LABEL); features count from 0 as in the file, NULL
    rows included; a MultiPolygon is one box per part, as a MultiPoint is one click per point."""
    _, tif, truth, _ = scene
    a, b = truth.geometry.iloc[3], truth.geometry.iloc[9]
    pa, pb = a.representative_point(), b.representative_point()
    seg = ColourSegmenter()
    picked = segment_raster(tif, segmenter=seg, prompts=read_prompts(_write(tmp_path / "up.gpkg", {
        "LABEL": [1, 0]}, [pa, pb], truth.crs)), **ONE)
    lower = segment_raster(tif, segmenter=seg, prompts=read_prompts(_write(tmp_path / "low.gpkg", {
        "label": [1, 0]}, [pa, pb], truth.crs)), **ONE)
    assert list(picked.found) == list(lower.found) == [True]  # the 0 is a background click: no row of its own
    with pytest.raises(PromptError, match="feature 2 is a polygon with label 0"):
        read_prompts(_write(tmp_path / "box0.gpkg", {"label": [1, 1, 0]}, [None, pa, a], truth.crs))
    with pytest.raises(PromptError, match="feature 2 is a LineString"):
        read_prompts(_write(tmp_path / "line.gpkg", {"n": [1, 2, 3]}, [None, pa, shapely.LineString([pa, pb])],
                            truth.crs))
    multi = read_prompts(_write(tmp_path / "multi.gpkg", {"n": [1]}, [shapely.MultiPolygon([a, b])], truth.crs))
    assert [type(p) for p in multi] == [BoxPrompt, BoxPrompt]
    got = segment_raster(tif, segmenter=seg, prompts=multi, **ONE)
    assert got.found.all() and len(got) == 2
    for g, t in zip(got.geometry, (a, b)):
        assert g.intersection(t).area / g.union(t).area > 0.9


def _write(path, columns, geoms, crs):
    gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs).to_file(path)
    return path


def test_prompts_given_as_a_geodataframe_a_geoseries_or_a_file(scene, tmp_path):
    _, tif, truth, _ = scene
    pts = truth.geometry.iloc[[2, 5]].representative_point().to_crs(4326)
    frame = gpd.GeoDataFrame(geometry=pts)
    frame.to_file(tmp_path / "p.geojson")
    want = segment_raster(tif, segmenter=ColourSegmenter(),
                          prompts=[PointPrompt(p.x, p.y, crs="EPSG:4326") for p in pts], **ONE)
    assert want.found.all() and len(want) == 2
    for given in (frame, frame.geometry, tmp_path / "p.geojson", str(tmp_path / "p.geojson")):
        got = segment_raster(tif, segmenter=ColourSegmenter(), prompts=given, **ONE)
        assert got.geometry.geom_equals(want.geometry).all(), type(given)
    with pytest.raises(InputError, match="prompts must be PointPrompt"):
        segment_raster(tif, segmenter=ColourSegmenter(), prompts=42, **ONE)


@pytest.mark.parametrize("n_cols", range(1, 16))
@pytest.mark.parametrize("fraction", [0.05, 0.15, 0.25, 0.5])
def test_every_raster_three_tiles_wide_gets_a_validation_band(n_cols, fraction):
    """A small area still gets validation tiles (the check a fine-tune is measured by), and
    keeps at least two columns to train on."""
    grid = plan_tiles(100 * n_cols, 200, 100, 0)
    assert grid.n_cols == n_cols
    chosen = _choose_val([("a.tif", None, grid, None)], fraction, None)
    cols = {c for _, (_, c) in chosen}
    if n_cols < 3:
        assert not cols
    else:
        n_val = min(max(1, round(n_cols * fraction)), n_cols - 2)
        assert cols == set(range(n_cols - n_val, n_cols)) and n_cols - len(cols) >= 2
        assert len(chosen) == len(cols) * grid.n_rows
    assert _choose_val([("a.tif", None, grid, None)], 0.0, None) == set()


def test_no_label_overlap_message_has_plain_numbers(scene, tmp_path):
    _, tif, truth, _ = scene
    far = truth.set_geometry(truth.geometry.translate(1e5, 0))
    far.to_file(tmp_path / "far.gpkg")
    res = CliRunner().invoke(main, ["train", str(tif), "--labels", str(tmp_path / "far.gpkg"),
                                    "-o", str(tmp_path / "m.pt")])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output  # (after ultralytics' first-run notice)
    assert res.output.splitlines()[-1].startswith("Error: no label polygon overlaps"), res.output
    assert "np.float64" not in res.output and np.isfinite(float(res.output.split("bounds (")[1].split(",")[0]))


def test_a_raster_on_a_local_site_grid_is_measured_in_its_unit(tmp_path):
    """An engineering CRS (LOCAL_CS, a surveyor's site grid in feet) has no ellipsoid: before,
    every tile was segmented and the run then failed on area_m2. Its own unit measures it."""
    from pyproj import CRS

    feet = CRS.from_wkt('LOCAL_CS["Site grid",LOCAL_DATUM["unknown",32767],UNIT["US survey foot",0.304800609601219],'
                        'AXIS["Easting",EAST],AXIS["Northing",NORTH]]')
    sc = make_scene(300, 260, seed=4, cell=60, crs=feet, origin=(1000.0, 2000.0), res=1.0)
    tif = write_scene(sc, tmp_path / "site.tif")
    gdf = segment_raster(tif, segmenter=ColourSegmenter(), **ONE)
    assert len(gdf) == len(sc.footprints)
    assert np.allclose(gdf.area_m2, gdf.geometry.area * 0.304800609601219 ** 2)
    res = CliRunner().invoke(main, ["info", str(tif)])
    assert res.exit_code == 0 and "0.3048 m/px on the ground" in res.output, res.output


def test_a_crs_without_ground_units_fails_before_any_tile():
    from types import SimpleNamespace

    from affine import Affine
    from pyproj import CRS

    from fastsam_geo.errors import CRSError
    from fastsam_geo.session import _check_ground_units

    unit = 'ANGLEUNIT["degree",0.0174532925199433]'
    angles = CRS.from_wkt(f'ENGCRS["x",EDATUM["y"],CS[Cartesian,2],AXIS["x",east,{unit}],AXIS["y",north,{unit}]]')
    with pytest.raises(CRSError, match="no ellipsoid and no linear unit"):
        _check_ground_units(SimpleNamespace(crs=angles, transform=Affine(1, 0, 0, 0, -1, 0)))
    _check_ground_units(SimpleNamespace(crs=CRS.from_epsg(27572), transform=Affine(0.3, 0, 6e5, 0, -0.3, 2.4e6)))


def test_objects_on_the_antimeridian_are_written_split_in_lon_lat(tmp_path):
    """A UTM 60S raster across 180°: with --dst-crs EPSG:4326 the buildings on 180° are two parts
    each (in the frame and in the file), none spans the world, and areas stay the buildings'."""
    from fastsam_geo.coords import parse_crs, transform_xy

    x, y = transform_xy(np.array([180.0]), np.array([-16.5]), parse_crs("EPSG:4326"), parse_crs("EPSG:32760"))
    sc = make_scene(400, 300, seed=4, cell=60, crs="EPSG:32760", origin=(x[0] - 45, y[0] + 45), res=0.3)
    tif = write_scene(sc, tmp_path / "fiji.tif")
    out = tmp_path / "fiji.gpkg"
    gdf = segment_raster(tif, segmenter=ColourSegmenter(), dst_crs="EPSG:4326", output=out, **ONE)
    for frame in (gdf, gpd.read_file(out)):
        assert len(frame) == len(sc.footprints)
        parts = frame.geometry.explode(index_parts=False)
        assert (parts.bounds.maxx - parts.bounds.minx).max() < 0.01  # no part spans the world
        assert (frame.geometry.apply(lambda g: len(g.geoms)) == 2).sum() >= 1  # some straddle 180°
    native = segment_raster(tif, segmenter=ColourSegmenter(), **ONE)
    assert np.allclose(np.sort(gdf.area_m2), np.sort(native.area_m2))


def test_a_bbox_east_of_180_on_a_lon_lat_raster_across_it(tmp_path):
    """A lon/lat raster from 179.9995° to 180.0010° (longitudes past 180, as GDAL writes them): a
    bbox over its eastern part given as -179.99..., or in UTM 60S, selects it; before, it was
    refused as outside the raster, while point prompts there worked."""
    sc = make_scene(500, 400, seed=3, cell=60, crs="EPSG:4326", origin=(179.9995, -16.5), res=3e-6)
    tif = write_scene(sc, tmp_path / "lonlat.tif")
    east = [p for p in sc.truth_map() if p.bounds[0] > 180.0003]
    assert east
    x0, y0, x1, y1 = shapely.union_all(east).bounds
    seg = ColourSegmenter()
    got = segment_raster(tif, segmenter=seg, bbox=(x0 - 360, y0, x1 - 360, y1), bbox_crs="EPSG:4326", **ONE)
    assert len(got) >= len(east) and all(got.geometry.intersects(shapely.box(x0, y0, x1, y1)))
    from fastsam_geo.coords import parse_crs, transform_geometries

    utm = transform_geometries(np.array([shapely.box(x0, y0, x1, y1)]), parse_crs("EPSG:4326"),
                               parse_crs("EPSG:32760"))[0]
    again = segment_raster(tif, segmenter=seg, bbox=utm.bounds, bbox_crs="EPSG:32760", **ONE)
    assert len(again) >= len(east)
    across = segment_raster(tif, segmenter=seg, bbox=(179.9996, y0, -179.9992, y1), bbox_crs="EPSG:4326", **ONE)
    assert len(across) > len(got)  # a box from west of 180 to east of it, written as lon/lat do


def test_a_prompt_is_described_to_the_centimetre():
    """The `prompt` text in QGIS results names the click: 6 significant digits were 10 m apart."""
    from fastsam_geo.prompts import describe

    assert describe(PointPrompt(1669864.65, 4960963.41)) == "point (1669864.65, 4960963.41)"
    assert describe(BoxPrompt(39.2429961, -6.0425172, 39.2430512, -6.0424513)) == \
        "box (39.2429961, -6.0425172, 39.2430512, -6.0424513)"


def test_edges_removes_what_a_killed_edges_run_left(scene, tmp_path):
    import subprocess
    import sys
    import uuid

    from fastsam_geo import edge_map
    from fastsam_geo.atomic import _scope

    _, tif, _, _ = scene
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid: a run that is over
    left = tmp_path / f".fastsam-geo-{_scope()}-{dead.pid}-{uuid.uuid4().hex}.partial.tif"
    left.write_bytes(b"half a GeoTIFF")
    with pytest.warns(UserWarning, match="removed 1 temporary file"):
        edge_map(tif, tmp_path / "edges.tif", segmenter=ColourSegmenter(), **ONE)
    assert not left.exists() and (tmp_path / "edges.tif").exists()


def test_workers_get_an_absolute_path_for_a_relative_raster(scene, tmp_path, monkeypatch):
    """A Dask worker runs in its own folder: "scene.tif" must reach it as the client's file."""
    from pathlib import Path

    from fastsam_geo.distributed import _proto
    from fastsam_geo.raster import TileReader

    tif = Path(scene[1])
    monkeypatch.chdir(tif.parent)
    with TileReader(tif.name) as reader:
        assert _proto(reader).path == str(tif.resolve())
    with TileReader(tif.name) as reader:  # a GDAL virtual path stays as given
        reader.path = "/vsicurl/https://example.com/a.tif"
        assert _proto(reader).path == "/vsicurl/https://example.com/a.tif"
