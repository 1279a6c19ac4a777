"""The CLI through click's runner and as a real subprocess, good runs and bad input."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner

from fastsam_geo.cli import main
from fastsam_geo.synthetic import make_scene, write_scene

FAKE = "fastsam_geo.synthetic:ColourSegmenter"


@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    scene = make_scene(600, 520, seed=9, cell=64, big=(150, 120, 420, 400))
    return scene, Path(write_scene(scene, d / "scene.tif"))


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def run_proc(*args, cwd=None):
    exe = Path(sys.executable).with_name("fastsam-geo")
    env = {**os.environ, "YOLO_OFFLINE": "true"}
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize("ext", [".gpkg", ".parquet", ".geojson", ".fgb"])
def test_segment_writes_every_format(scene_tif, tmp_path, ext):
    scene, tif = scene_tif
    out = tmp_path / f"out{ext}"
    r = run_cli("segment", tif, "-o", out, "--model", FAKE, "--tile-size", 256, "--overlap", 32, "-q")
    assert r.exit_code == 0, r.output
    gdf = gpd.read_parquet(out) if ext == ".parquet" else gpd.read_file(out)
    assert len(gdf) == len(scene.footprints)
    assert gdf.crs == ("EPSG:4326" if ext == ".geojson" else scene.crs)  # GeoJSON: RFC 7946
    assert {"score", "area_m2", "source", "model"} <= set(gdf.columns)
    assert not list(tmp_path.glob(".*partial*"))


def test_segment_as_a_real_subprocess_with_progress(scene_tif, tmp_path):
    scene, tif = scene_tif
    out = tmp_path / "out.gpkg"
    r = run_proc("segment", tif, "-o", out, "--model", FAKE, "--tile-size", 256, "--overlap", 32)
    assert r.returncode == 0, r.stderr
    assert "segmenting" in r.stderr and "tile" in r.stderr  # tqdm bar on stderr
    assert f"{len(scene.footprints)} objects" in r.stderr
    assert len(gpd.read_file(out)) == len(scene.footprints)


def test_info_text_and_json(scene_tif):
    _, tif = scene_tif
    r = run_cli("info", tif, "--tile-size", 256, "--overlap", 32)
    assert r.exit_code == 0 and "EPSG:32633" in r.output and "tiles" in r.output
    rec = json.loads(run_cli("info", tif, "--json", "--tile-size", 256, "--overlap", 32, "--gsd", "native").output)
    assert rec["width"] == 600 and rec["tiles"]["count"] == 9 and rec["dtype"] == "uint8"
    # by default the plan segment would cut: --gsd auto sizes tiles for the bundled model's GSD
    from fastsam_geo.session import SegmentedRaster

    auto = json.loads(run_cli("info", tif, "--json", "--tile-size", 256, "--overlap", 32).stdout)["tiles"]
    grid = SegmentedRaster(tif, tile_size=256, overlap=32).grid
    assert (auto["count"], auto["size"]) == (len(grid), grid.tiles[0].width) and auto["count"] > 9
    assert auto["model_gsd"] > 0 and f"{auto['count']} (" in run_cli("info", tif, "--tile-size", 256,
                                                                       "--overlap", 32).output
    assert rec["ground_gsd"] == pytest.approx(0.3, rel=1e-3)  # UTM near its central meridian
    # Web Mercator: CRS units shrink by cos(latitude) on the ground (the sample lies at 6.04 deg S;
    # geodesic on the ellipsoid, 0.3 % under the spherical cosine)
    from fastsam_geo.samples import SAMPLE_IMAGE
    rec = json.loads(run_cli("info", SAMPLE_IMAGE, "--json").output)
    assert rec["ground_gsd"] == pytest.approx(rec["resolution"][0] * math.cos(math.radians(6.04)), rel=5e-3)
    assert "m/px on the ground" in run_cli("info", SAMPLE_IMAGE).output


def test_rio_plugin_is_registered():
    from importlib.metadata import entry_points
    eps = {ep.name: ep.value for ep in entry_points(group="rasterio.rio_plugins")}
    assert eps.get("fastsam") == "fastsam_geo.cli:main"
    rio = Path(sys.executable).with_name("rio")
    r = subprocess.run([str(rio), "fastsam", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "segment" in r.stdout


# -- bad input: one line, exit 2, no traceback, no output file ------------------------------

def _not_georeferenced(d):
    p = d / "plain.tif"
    with rasterio.open(p, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8") as dst:
        dst.write(np.zeros((3, 64, 64), np.uint8))
    return p


def _corrupt(d, tif):
    p = d / "corrupt.tif"
    data = tif.read_bytes()
    p.write_bytes(data[: len(data) // 3])  # header intact, pixel data truncated
    return p


def _all_nodata(d):
    scene = make_scene(200, 200, nodata=((0, 0, 200, 200),))
    return Path(write_scene(scene, d / "nodata.tif"))


BAD = {
    "missing file": (lambda d, t: (d / "nope.tif", "out.gpkg", ()), "no such file"),
    "not a raster": (lambda d, t: ((d / "notes.txt").write_text("hello") and d / "notes.txt", "out.gpkg", ()),
                     "not a raster"),
    "not georeferenced": (lambda d, t: (_not_georeferenced(d), "out.gpkg", ()), "no georeference"),
    "corrupt pixels": (lambda d, t: (_corrupt(d, t), "out.gpkg", ("--tile-size", 256, "--overlap", 32)),
                       "failed to read|not a raster"),
    "unsupported output": (lambda d, t: (t, "out.shp", ()), "unsupported output format"),
    "missing output folder": (lambda d, t: (t, "missing/out.gpkg", ()), "does not exist"),
    "overlap >= tile size": (lambda d, t: (t, "out.gpkg", ("--tile-size", 256, "--overlap", 256)),
                             "must be smaller than the tile size"),
    "all nodata": (lambda d, t: (_all_nodata(d), "out.gpkg", ()), "every pixel is nodata"),
    "bad bands": (lambda d, t: (t, "out.gpkg", ("--bands", "1,2,9")), "band 9 does not exist"),
    "missing weights": (lambda d, t: (t, "out.gpkg", ("--model", "FastSAM-x.pt")),
                        "FastSAM-x.pt not found and never downloaded"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_no_output(scene_tif, tmp_path, case):
    make, expected = BAD[case]
    raster, out, extra = make(tmp_path, scene_tif[1])
    out = tmp_path / out
    args = ["segment", raster, "-o", out, *extra]
    if "--model" not in extra:
        args += ["--model", FAKE]
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    err = [ln for ln in lines if ln.startswith("Error:")]
    assert len(err) == 1 and "Traceback" not in r.output, r.output
    import re
    assert re.search(expected, err[0]), err[0]
    assert not out.exists()
    assert not list(tmp_path.glob(".*partial*"))


def test_a_failed_run_keeps_the_previous_output(tmp_path):
    out = tmp_path / "out.gpkg"
    out.write_bytes(b"previous result")
    r = CliRunner().invoke(main, ["segment", str(_all_nodata(tmp_path)), "-o", str(out), "--model", FAKE])
    assert r.exit_code == 2 and out.read_bytes() == b"previous result"


def test_bad_input_as_subprocess_has_no_traceback(tmp_path):
    r = run_proc("segment", tmp_path / "nope.tif", "-o", tmp_path / "x.gpkg", "--model", FAKE)
    assert r.returncode == 2
    assert r.stderr.strip() == f"Error: {tmp_path / 'nope.tif'}: no such file"


def test_without_model_the_bundled_one_is_used(scene_tif, tmp_path):
    from fastsam_geo import segment_raster

    scene, tif = scene_tif
    r = CliRunner().invoke(main, ["segment", str(tif), "-o", str(tmp_path / "o.gpkg"), "-q"])
    assert r.exit_code == 0, r.output
    got = gpd.read_file(tmp_path / "o.gpkg")
    # the bundled building model finds buildings here (0 == 0 would prove nothing) ...
    assert len(got) > 10 and got.crs == scene.crs and got.score.between(0, 1).all(), (len(got), str(got.crs))
    # ... and the CLI gave exactly what the library's default (the bundled model) gives
    ref = segment_raster(tif)
    assert len(got) == len(ref)

    def in_order(gdf):  # row order is not part of the contract; position is
        c = gdf.geometry.centroid
        return gdf.iloc[np.lexsort((c.y.round(3), c.x.round(3)))]

    got, ref = in_order(got), in_order(ref)
    assert shapely.equals(got.geometry.values, ref.geometry.values).all()  # GPKG stores them as multipolygons
    assert np.allclose(got.score, ref.score, atol=1e-6)


# -- prompts from the command line ----------------------------------------------------------

def _lonlat(scene, polys):
    from fastsam_geo.coords import parse_crs, transform_xy
    pts = [p.representative_point() for p in polys]
    return transform_xy(np.array([p.x for p in pts]), np.array([p.y for p in pts]), scene.crs, parse_crs(4326))


def test_points_and_boxes_from_the_command_line(scene_tif, tmp_path):
    scene, tif = scene_tif
    truth = scene.truth_map()
    lon, lat = _lonlat(scene, truth[:3])
    x0, y0, x1, y1 = truth[5].bounds
    out = tmp_path / "picked.gpkg"
    args = ["segment", tif, "-o", out, "--model", FAKE, "--tile-size", 256, "--overlap", 32, "--prompt-crs",
            "EPSG:4326", *[a for x, y in zip(lon, lat) for a in ("--point", f"{x},{y}")]]
    r = run_cli(*args)
    assert r.exit_code == 0, r.output
    gdf = gpd.read_file(out)
    assert list(gdf.prompt_id) == [0, 1, 2] and gdf.found.all()
    r = run_cli("segment", tif, "-o", out, "--model", FAKE, "--tile-size", 256, "--overlap", 32,
                "--box", f"{x0},{y0},{x1},{y1}")
    assert r.exit_code == 0, r.output
    got = gpd.read_file(out).geometry[0]
    assert got.intersection(truth[5]).area / got.union(truth[5]).area > 0.9


def test_prompts_file_with_labels_and_boxes(scene_tif, tmp_path):
    scene, tif = scene_tif
    truth = scene.truth_map()
    pts = [p.representative_point() for p in truth[:2]]
    layer = gpd.GeoDataFrame({"label": [1, 1, 1]},
                             geometry=[pts[0], pts[1], truth[7].envelope], crs=scene.crs).to_crs(3857)
    layer.to_file(tmp_path / "prompts.gpkg")
    out = tmp_path / "o.parquet"
    r = run_cli("segment", tif, "-o", out, "--model", FAKE, "--tile-size", 256, "--overlap", 32,
                "--prompts", tmp_path / "prompts.gpkg", "-q")
    assert r.exit_code == 0, r.output
    gdf = gpd.read_parquet(out)
    assert list(gdf.prompt_type) == ["point", "point", "box"] and gdf.found.all()


def test_cache_makes_the_second_run_model_free(scene_tif, tmp_path):
    _, tif = scene_tif
    cache = tmp_path / "cache"
    args = ["segment", tif, "--model", FAKE, "--tile-size", 256, "--overlap", 32, "--cache", cache]
    r1 = run_proc(*args, "-o", tmp_path / "a.gpkg")
    assert r1.returncode == 0 and "(0 cached" in r1.stderr, r1.stderr
    r2 = run_proc(*args, "-o", tmp_path / "b.gpkg")
    assert r2.returncode == 0 and "(9 cached" in r2.stderr, r2.stderr
    assert len(gpd.read_file(tmp_path / "a.gpkg")) == len(gpd.read_file(tmp_path / "b.gpkg"))


BAD_PROMPTS = {
    "malformed point": (("--point", "12.5"), "malformed point '12.5'"),
    "point label": (("--point", "1,2,7"), "label must be 1"),
    "malformed box": (("--box", "1,2,3"), "malformed box"),
    "unknown crs": (("--point", "1,2", "--prompt-crs", "EPSG:999999"), "unknown CRS 'EPSG:999999'"),
    "outside": (("--point", "0,0", "--prompt-crs", "EPSG:4326"), r"prompt 0 \(point \(0, 0\) in EPSG:4326\) lies "
                                                                  r"outside the raster"),
}


@pytest.mark.parametrize("case", list(BAD_PROMPTS))
def test_bad_prompts_are_one_line(scene_tif, tmp_path, case):
    import re
    extra, expected = BAD_PROMPTS[case]
    out = tmp_path / "o.gpkg"
    r = CliRunner().invoke(main, ["segment", str(scene_tif[1]), "-o", str(out), "--model", FAKE, *extra])
    assert r.exit_code == 2, r.output
    err = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(err) == 1 and re.search(expected, err[0]), r.output
    assert not out.exists()


@pytest.mark.parametrize("kind", ["empty", "lines"])
def test_bad_prompts_file(scene_tif, tmp_path, kind):
    scene, tif = scene_tif
    geoms = [] if kind == "empty" else [shapely.LineString([(500000, 4499990), (500010, 4499990)])]
    gpd.GeoDataFrame(geometry=geoms, crs=scene.crs).to_file(tmp_path / "p.gpkg")
    r = CliRunner().invoke(main, ["segment", str(tif), "-o", str(tmp_path / "o.gpkg"), "--model", FAKE,
                                  "--prompts", str(tmp_path / "p.gpkg")])
    assert r.exit_code == 2
    assert ("no features" if kind == "empty" else "is a LineString; prompts must be points") in r.output


def test_output_piped_into_head_is_not_an_error(scene_tif):
    # `fastsam-geo info x.tif | head -1`: the reader closes the pipe early
    _, tif = scene_tif
    exe = Path(sys.executable).with_name("fastsam-geo")
    p = subprocess.Popen([str(exe), "info", str(tif)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "YOLO_OFFLINE": "true"})
    p.stdout.read(1)
    p.stdout.close()  # like head: stop reading after the first bytes
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0 and "Error" not in err and "Traceback" not in err, err


@pytest.mark.parametrize("where", ["before", "after", "middle"])
def test_debug_works_anywhere_on_the_line(tmp_path, where):
    """--debug shows the traceback wherever it is typed; without it, one line."""
    args = ["info", str(tmp_path / "missing.tif")]
    args = {"before": ["--debug", *args], "after": [*args, "--debug"], "middle": [args[0], "--debug", args[1]]}[where]
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and type(r.exception).__name__ == "RasterError", (r.output, r.exception)
    r = CliRunner().invoke(main, [a for a in args if a != "--debug"])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit) and "no such file" in r.output


def _flat_tif(tmp_path, tone=120) -> Path:
    """A georeferenced image of one tone: nothing in it to find."""
    path = tmp_path / "flat.tif"
    with rasterio.open(path, "w", driver="GTiff", width=300, height=200, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=rasterio.transform.from_origin(500000, 4500000, 0.3, 0.3)) as dst:
        dst.write(np.full((3, 200, 300), tone, np.uint8))
    return path


def test_finding_nothing_is_exit_3_one_line_and_nothing_written(tmp_path):
    tif, out = _flat_tif(tmp_path), tmp_path / "out.gpkg"
    r = CliRunner().invoke(main, ["segment", str(tif), "-o", str(out), "--model", FAKE, "-q"])
    assert r.exit_code == 3, r.output
    assert r.output.strip() == f"Error: {tif}: no objects found; nothing written to {out} (--allow-empty writes " \
                               "an empty layer)"
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))
    # --allow-empty: a valid empty layer with the full schema, a warning, exit 0
    r = CliRunner().invoke(main, ["segment", str(tif), "-o", str(out), "--model", FAKE, "-q", "--allow-empty"])
    assert r.exit_code == 0 and "no objects found" in r.output
    gdf = gpd.read_file(out)
    assert len(gdf) == 0 and {"score", "quality", "area_m2", "source", "model"} <= set(gdf.columns)
    before = out.read_bytes()  # a previous output stays as it was
    assert CliRunner().invoke(main, ["segment", str(tif), "-o", str(out), "--model", FAKE, "-q"]).exit_code == 3
    assert out.read_bytes() == before


def test_finding_nothing_as_a_subprocess(tmp_path):
    tif, out = _flat_tif(tmp_path, tone=230), tmp_path / "out.fgb"
    r = run_proc("segment", tif, "-o", out, "--model", FAKE)
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (f"Error: {tif}: no objects found; nothing written to {out} "
                                                 "(--allow-empty writes an empty layer)")
    assert not out.exists()


def test_proposals_finding_nothing_is_exit_3_too(tmp_path):
    tif, out = _flat_tif(tmp_path), tmp_path / "boxes.gpkg"
    r = CliRunner().invoke(main, ["proposals", str(tif), "-o", str(out), "--model", FAKE, "-q"])
    assert r.exit_code == 3 and r.output.strip() == (f"Error: {tif}: no object proposals; nothing written to {out} "
                                                     "(--allow-empty writes an empty layer)")
    assert not out.exists()
    r = CliRunner().invoke(main, ["proposals", str(tif), "-o", str(out), "--model", FAKE, "-q", "--allow-empty"])
    assert r.exit_code == 0 and len(gpd.read_file(out)) == 0
