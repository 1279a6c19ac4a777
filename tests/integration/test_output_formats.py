"""Files that open cleanly everywhere: the same layer in GeoPackage, GeoParquet, GeoJSON and FlatGeobuf.

One geometry type (MultiPolygon) per layer in every format, the layer named after the file (or
``layer``), GeoJSON as RFC 7946 (WGS 84 lon/lat, no ``crs`` member) unless ``dst_crs`` says
otherwise, ``area_m2`` the same in any output CRS, NULL (geometry and score) for a prompt that
selects nothing, provenance columns, GeoParquet 1.1 metadata with a bbox covering column, and
files GDAL's own tools open without a word on stderr.
"""

import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely
from click.testing import CliRunner
from pyproj import CRS, Transformer

from fastsam_geo import MaskSet, segment_raster
from fastsam_geo.cli import main
from fastsam_geo.errors import CRSError, PromptError
from fastsam_geo.models import model_name
from fastsam_geo.prompts import BoxPrompt, PointPrompt
from fastsam_geo.session import SegmentedRaster
from fastsam_geo.synthetic import ColourSegmenter, make_scene, write_scene

FORMATS = [".gpkg", ".parquet", ".geojson", ".fgb"]
UTM = dict(crs="EPSG:32633", origin=(500000.0, 4500000.0), res=0.3)
ONE_TILE = dict(tile_size=512, overlap=0)  # the scenes fit one tile: fast, and no seams involved


class GroupingSegmenter(ColourSegmenter):
    """The true masks of neighbouring buildings joined 2 and 3 at a time: objects of 2-3 parts on
    a raster without nodata, as real models give on mosaics."""

    def __call__(self, images):
        out = []
        for inst in super().__call__(images):
            h, w = inst.shape
            full = np.zeros((len(inst), h, w), bool)
            for k, ((x0, y0, x1, y1), crop) in enumerate(zip(inst.boxes, inst.crops)):
                full[k, y0:y1, x0:x1] = crop
            groups, i = [], 0
            while i < len(inst):
                n = 2 + len(groups) % 2  # 2, 3, 2, 3, ...
                groups.append(list(range(i, min(i + n, len(inst)))))
                i += n
            masks = np.stack([full[g].any(0) for g in groups])
            out.append(MaskSet(masks, np.full(len(groups), 0.9, np.float32)))
        return out


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    """``split``: a nodata strip cuts buildings in two; ``mosaic``: no nodata, 2-3-part objects."""
    d = tmp_path_factory.mktemp("formats")
    scene = make_scene(300, 260, seed=5, cell=62, **UTM)
    wide = max(scene.footprints, key=lambda f: f.bounds[2] - f.bounds[0])
    x = int((wide.bounds[0] + wide.bounds[2]) // 2)
    split = make_scene(300, 260, seed=5, cell=62, nodata=((x, 0, x + 3, 260),), **UTM)
    return {"split": (Path(write_scene(split, d / "split.tif")), ColourSegmenter),
            "mosaic": (Path(write_scene(scene, d / "mosaic.tif")), GroupingSegmenter)}


def read(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)


def parts(gdf: gpd.GeoDataFrame) -> list[int]:
    return sorted(len(g.geoms) for g in gdf.geometry)


def by_place(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Rows in a fixed spatial order (a FlatGeobuf's spatial index orders its features)."""
    b = shapely.bounds(gdf.geometry.values)
    return gdf.iloc[np.lexsort((b[:, 1], b[:, 0]))].reset_index(drop=True)


def layers(path: Path) -> list[list[str]]:
    return [list(r) for r in pyogrio.list_layers(path)]


# -- one geometry type, the layer named after the file ---------------------------------------------

@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("kind", ["split", "mosaic"])
def test_every_format_holds_one_multipolygon_layer_named_after_the_file(rasters, tmp_path, ext, kind):
    tif, seg = rasters[kind]
    out = tmp_path / f"kampala_a{ext}"
    gdf = segment_raster(tif, segmenter=seg(), output=out, **ONE_TILE)
    want = {2} if kind == "split" else {2, 3}
    assert want <= set(parts(gdf)), "the scene must have multi-part objects"
    assert set(gdf.geom_type) == {"MultiPolygon"}  # in memory as in the files
    back = read(out)
    assert set(back.geom_type) == {"MultiPolygon"} and parts(back) == parts(gdf)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary file left
    if ext == ".parquet":  # no layer names; one declared type
        geo = json.loads(pq.read_metadata(out).metadata[b"geo"])
        assert geo["columns"]["geometry"]["geometry_types"] == ["MultiPolygon"]
        if "Parquet" in pyogrio.list_drivers():  # GDAL names the layer after the file
            assert layers(out) == [["kampala_a", "MultiPolygon"]]
    else:
        assert layers(out) == [["kampala_a", "MultiPolygon"]]


@pytest.mark.parametrize("ext", [".gpkg", ".geojson", ".fgb"])
def test_a_streamed_layer_takes_the_given_layer_name(rasters, tmp_path, ext):
    tif, seg = rasters["mosaic"]
    out = tmp_path / f"kampala_a{ext}"
    n = SegmentedRaster(tif, segmenter=seg(), **ONE_TILE).segment_to_file(out, layer="roofs")
    assert layers(out) == [["roofs", "MultiPolygon"]] and len(read(out)) == n


# -- CRS: RFC 7946 GeoJSON, dst_crs ----------------------------------------------------------------

def test_geojson_is_rfc7946_wgs84_lonlat_without_a_crs_member(rasters, tmp_path):
    tif, seg = rasters["split"]
    out = tmp_path / "b.geojson"
    gdf = segment_raster(tif, segmenter=seg(), output=out, **ONE_TILE)
    doc = json.loads(out.read_text())
    assert "crs" not in doc and doc["name"] == "b"
    back = read(out)
    assert back.crs.equals(CRS("EPSG:4326"))
    lonlat = gdf.to_crs("OGC:CRS84")
    lon, lat = np.asarray(doc["features"][0]["geometry"]["coordinates"][0][0][0])
    assert 14 < lon < 16 and 40 < lat < 41  # UTM 33N at 4500 km north: lon first, then lat
    assert all(a.hausdorff_distance(b) < 2e-7 for a, b in zip(back.geometry, lonlat.geometry))  # 7 decimals
    assert np.array_equal(back.area_m2, gdf.area_m2)


def test_geojson_in_another_crs_when_asked(rasters, tmp_path):
    tif, seg = rasters["split"]
    out = tmp_path / "b.geojson"
    gdf = segment_raster(tif, segmenter=seg(), output=out, dst_crs="EPSG:32633", **ONE_TILE)
    assert "crs" in json.loads(out.read_text())
    back = read(out)
    assert back.crs == "EPSG:32633" and all(a.equals_exact(b, 1e-6) for a, b in zip(back.geometry, gdf.geometry))


@pytest.mark.parametrize("ext", FORMATS)
def test_dst_crs_reprojects_every_format_and_keeps_area(rasters, tmp_path, ext):
    tif, seg = rasters["mosaic"]
    native = segment_raster(tif, segmenter=seg(), **ONE_TILE)
    out = tmp_path / f"m{ext}"
    gdf = segment_raster(tif, segmenter=seg(), output=out, dst_crs="EPSG:3857", **ONE_TILE)
    back = by_place(read(out))
    expect = by_place(native.to_crs("EPSG:3857"))
    native = by_place(native)
    for frame in (by_place(gdf), back):
        assert frame.crs == "EPSG:3857"
        assert all(a.hausdorff_distance(b) < 1e-6 for a, b in zip(frame.geometry, expect.geometry))
        assert np.array_equal(frame.area_m2, native.area_m2)  # geodesic: the output CRS does not change it
    assert parts(back) == parts(native)


def test_dst_crs_for_streams_and_prompts(rasters, tmp_path):
    tif, seg = rasters["split"]
    sr = SegmentedRaster(tif, segmenter=seg(), **ONE_TILE)
    native = sr.segment()
    sr.segment_to_file(tmp_path / "s.fgb", dst_crs=4326)
    back = read(tmp_path / "s.fgb")
    assert back.crs == "EPSG:4326" and np.array_equal(np.sort(back.area_m2), np.sort(native.area_m2))
    c = native.geometry.iloc[0].representative_point()
    picked = sr.prompt([PointPrompt(c.x, c.y)], dst_crs="EPSG:4326", output=tmp_path / "p.gpkg")
    for frame in (picked, read(tmp_path / "p.gpkg")):
        assert frame.crs == "EPSG:4326" and frame.area_m2[0] == native.area_m2.iloc[0]
        assert frame.geometry[0].hausdorff_distance(native.to_crs(4326).geometry.iloc[0]) < 1e-9


@pytest.mark.parametrize("crs,match", [("EPSG:999999", "unknown CRS 'EPSG:999999'"),
                                       ("IAU_2015:49900", r"cannot write the output in .*Mars")])
def test_a_bad_dst_crs_is_one_error_before_any_model_loads(rasters, tmp_path, monkeypatch, crs, match):
    tif, _ = rasters["split"]

    def never(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("fastsam_geo.session.load_segmenter", never)
    out = tmp_path / "o.gpkg"
    r = CliRunner().invoke(main, ["segment", str(tif), "-o", str(out), "--dst-crs", crs, "-q"])
    assert r.exit_code == 2, r.output
    # (the bundled model may first warn that this synthetic 0.3 m raster is coarser than its imagery)
    lines = [ln for ln in r.output.strip().splitlines() if not ln.startswith("Warning: ")]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and re.search(match, lines[0]), r.output
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CRSError, match=match):
        segment_raster(tif, segmenter=never, dst_crs=crs)


# -- a prompt that selects nothing -----------------------------------------------------------------

@pytest.mark.parametrize("ext", FORMATS)
def test_a_prompt_that_selects_nothing_is_null_geometry_and_nan_score(rasters, tmp_path, ext):
    tif, seg = rasters["split"]
    info = SegmentedRaster(tif, segmenter=seg(), **ONE_TILE)
    t = info.info.transform
    bx, by = t @ (1, 1)  # background corner
    b = info.segment().geometry.iloc[0].representative_point()
    out = tmp_path / f"p{ext}"
    with pytest.warns(UserWarning, match="rows have no geometry"):
        gdf = info.prompt([PointPrompt(bx, by), BoxPrompt(*b.buffer(3).bounds)], output=out)
    back = read(out)
    for frame in (gdf, back):
        assert list(frame.found) == [False, True]
        assert frame.geometry[0] is None and frame.geometry[1].geom_type == "MultiPolygon"
        assert np.isnan(frame.score[0]) and np.isnan(frame.area_m2[0]) and frame.score[1] > 0
    if ext == ".geojson":
        first = json.loads(out.read_text())["features"][0]
        assert first["geometry"] is None and first["properties"]["score"] is None


@pytest.mark.parametrize("ext", FORMATS)
def test_an_empty_geometry_is_written_as_null(tmp_path, ext):
    from fastsam_geo import io

    gdf = gpd.GeoDataFrame({"score": [np.nan, 0.5]}, geometry=[shapely.Polygon(), shapely.box(0, 0, 1, 1)],
                           crs="EPSG:32633")
    back = read(io.write(gdf, tmp_path / f"e{ext}", dst_crs="EPSG:32633"))
    assert back.geometry[0] is None and np.isnan(back.score[0]) and back.geometry[1].geom_type == "MultiPolygon"


# -- provenance ------------------------------------------------------------------------------------

def test_provenance_columns_let_runs_be_merged(rasters, tmp_path):
    outs = []
    for kind in ("split", "mosaic"):
        tif, seg = rasters[kind]
        outs.append(tmp_path / f"{kind}.gpkg")
        segment_raster(tif, segmenter=seg(), output=outs[-1], **ONE_TILE)
    merged = gpd.pd.concat([read(p) for p in outs], ignore_index=True)
    assert list(merged.columns) == ["score", "quality", "area_m2", "source", "model", "geometry"]
    assert set(merged.source) == {str(rasters[k][0]) for k in ("split", "mosaic")}
    assert set(merged.model) == {"ColourSegmenter", "GroupingSegmenter"}
    tif, seg = rasters["split"]
    c = read(outs[0]).geometry.iloc[0].representative_point()
    picked = segment_raster(tif, segmenter=seg(), prompts=[PointPrompt(c.x, c.y)], **ONE_TILE)
    assert list(picked.columns) == ["prompt_id", "prompt_type", "found", "score", "quality", "area_m2", "source",
                                    "model", "geometry"]  # a whole run's columns after the prompt's own
    assert (picked.prompt_type[0], picked.source[0]) == ("point", str(tif))


def test_model_names():
    assert model_name(None) == "buildings-nano" and model_name("buildings-nano.pt") == "buildings-nano"
    assert model_name("/models/FastSAM-s.pt") == "FastSAM-s.pt"
    assert model_name("fastsam_geo.synthetic:ColourSegmenter") == "fastsam_geo.synthetic:ColourSegmenter"
    assert model_name(ColourSegmenter()) == "ColourSegmenter" and model_name(lambda images: []) == "<lambda>"


# -- GeoParquet 1.1 --------------------------------------------------------------------------------

def test_geoparquet_metadata_follows_the_1_1_spec(rasters, tmp_path):
    tif, seg = rasters["mosaic"]
    out = tmp_path / "m.parquet"
    gdf = segment_raster(tif, segmenter=seg(), output=out, **ONE_TILE)
    meta = pq.read_metadata(out).metadata
    geo = json.loads(meta[b"geo"])
    # the spec's schema: required keys and values
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry" and set(geo["columns"]) == {"geometry"}
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["MultiPolygon"]
    assert CRS.from_json_dict(col["crs"]) == CRS("EPSG:32633")  # PROJJSON
    assert set(col) <= {"encoding", "geometry_types", "crs", "edges", "orientation", "bbox", "epoch", "covering"}
    assert col["covering"] == {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}
    # the covering column: a top-level struct of doubles holding each row's bounds
    schema = pq.read_schema(out)
    assert str(schema.field("bbox").type) == "struct<xmin: double, ymin: double, xmax: double, ymax: double>"
    assert schema.field("geometry").type == "binary"
    table = pq.read_table(out)
    rows = np.array([[r[k] for k in ("xmin", "ymin", "xmax", "ymax")] for r in table.column("bbox").to_pylist()])
    assert np.array_equal(rows, shapely.bounds(gdf.geometry.values))
    assert col["bbox"] == [*rows[:, :2].min(0), *rows[:, 2:].max(0)]
    # readers use it: geopandas filters rows by the covering column
    x0, y0, x1, y1 = rows[0]
    assert len(gpd.read_parquet(out, bbox=(x0, y0, x1, y1))) < len(gdf)
    assert "bbox" not in gpd.read_parquet(out).columns


# -- GDAL's own tools ------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".gpkg", ".geojson", ".fgb"])
def test_files_open_in_gdal_without_warnings(rasters, tmp_path, ext):
    tif, seg = rasters["split"]
    out = tmp_path / f"o{ext}"
    sr = SegmentedRaster(tif, segmenter=seg(), **ONE_TILE)
    sr.segment_to_file(out)
    with pytest.warns(UserWarning):  # a layer with a NULL geometry (a prompt that selects nothing)
        sr.prompt([PointPrompt(*(sr.info.transform @ (1, 1)))], output=tmp_path / f"p{ext}")
    files = [out, tmp_path / f"p{ext}"]
    if ext == ".gpkg":  # a second layer into an existing file
        sr.segment_to_file(out, layer="again")
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for name, _ in pyogrio.list_layers(path):
                pyogrio.read_dataframe(path, layer=name)
        if shutil.which("ogrinfo") is None:
            continue
        info = subprocess.run(["ogrinfo", "-al", "-so", str(path)], capture_output=True, text=True)
        copy = subprocess.run(["ogr2ogr", "-f", "GPKG", str(tmp_path / f"copy_{path.stem}{ext}.gpkg"), str(path)],
                              capture_output=True, text=True)
        for r in (info, copy):
            assert r.returncode == 0 and r.stderr == "", r.stderr


# -- a prompt outside the raster -------------------------------------------------------------------

def test_a_prompt_outside_names_the_raster_bounds_in_the_prompts_crs(rasters):
    tif, seg = rasters["split"]
    sr = SegmentedRaster(tif, segmenter=seg(), **ONE_TILE)
    with pytest.raises(PromptError) as err:
        sr.prompt([PointPrompt(0.5, 0.5, crs="EPSG:4326")])
    msg = str(err.value)
    m = re.search(r"in EPSG:32633 = \(([^)]*)\) in EPSG:4326$", msg)
    assert m, msg
    lon0, lat0, lon1, lat1 = map(float, m.group(1).split(","))
    x0, y0, x1, y1 = sr.info.bounds
    t = Transformer.from_crs(32633, 4326, always_xy=True)
    (ax, bx), (ay, by) = t.transform([x0, x1], [y0, y1])
    assert (lon0, lat0, lon1, lat1) == pytest.approx((ax, ay, bx, by), abs=1e-7)  # 10 significant digits
