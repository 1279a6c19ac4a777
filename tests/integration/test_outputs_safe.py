"""No file is ever lost: temporary names, inputs as outputs, GeoPackage layers, SIGTERM, SIGKILL.

Every test here keeps unrelated files beside the output (hidden ones included) and checks
them byte for byte afterwards: the rule under test is that nothing but the output changes.
"""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from click.testing import CliRunner

from fastsam_geo import atomic, io
from fastsam_geo.errors import OutputError
from fastsam_geo.signals import EXIT_CODE, Terminated, terminate_as_interrupt
from fastsam_geo.synthetic import make_scene, write_scene

EXTS = [".gpkg", ".fgb", ".geojson", ".parquet"]
NAMES = ["profile_test;v1", "with space", "ünïcødé 東京", "-leading", "a;b;c", "s3:x", "x!y"]


def frame(n=3, crs="EPSG:32633", x=0.0):
    geoms = [shapely.box(x + i, 0, x + i + 0.5, 0.5) for i in range(n)]
    return gpd.GeoDataFrame({"score": np.arange(n, dtype=np.float32), "area_m2": np.ones(n)}, geometry=geoms,
                            crs=crs)


def snapshot(folder):
    """Every file in ``folder`` with its bytes."""
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def decoys(folder):
    """Unrelated files, hidden ones among them, that must come through byte-identical."""
    folder = Path(folder)
    for name in [".profile_test", ".with space", ".a", ".-leading", ".profile_test;v1.gpkg", "notes.txt",
                 ".fastsam-geo", ".fastsam-geo-partial.gpkg"]:
        (folder / name).write_bytes(f"keep {name}".encode())
    return snapshot(folder)


def layer_of(path):
    if path.suffix == ".geojson":
        return json.loads(path.read_text())["name"]
    with io.gdal_path(path) as name:  # pyogrio would misread a name with ";"
        return pyogrio.list_layers(name)[0][0]


# -- 1. temporary names ---------------------------------------------------------------------

@pytest.mark.parametrize("ext", EXTS)
@pytest.mark.parametrize("stem", NAMES)
def test_odd_output_names_write_that_file_and_nothing_else(tmp_path, stem, ext):
    before = decoys(tmp_path)
    out = tmp_path / f"{stem}{ext}"
    io.write(frame(), out)
    after = snapshot(tmp_path)
    assert set(after) == set(before) | {out.name}, sorted(set(after) ^ set(before))
    assert {k: after[k] for k in before} == before  # every unrelated file byte-identical
    assert len(io.read_vector(out)) == 3
    if ext != ".parquet":  # the layer is named after the output, never after the temporary file
        assert layer_of(out) == (stem.lstrip("-") if ext == ".gpkg" else stem)


@pytest.mark.parametrize("folder", ["semi;colon", "bang!folder", "zip:x"])
def test_folders_gdal_would_misread_are_written_into(tmp_path, folder):
    d = tmp_path / folder
    d.mkdir()
    before = decoys(d)
    out = d / "out.gpkg"
    io.write(frame(), out)
    assert len(io.read_vector(out)) == 3 and layer_of(out) == "out"
    assert set(snapshot(d)) == set(before) | {"out.gpkg"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder]  # nothing written beside the folder


def test_temporary_names_are_safe_and_ours():
    name = io.temp_name("/data/profile_test;v1 ü.GPKG")
    assert io.TEMP_NAME.match(name), name
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789.-"), name
    assert name.startswith(".fastsam-geo-") and name.endswith(".partial.gpkg")
    assert f"-{os.getpid()}-" in name


def test_a_temporary_name_is_never_an_existing_file(tmp_path, monkeypatch):
    uids = iter([uuid.UUID(int=1), uuid.UUID(int=1), uuid.UUID(int=2)])
    monkeypatch.setattr(atomic.uuid, "uuid4", lambda: next(uids))
    taken = tmp_path / io.temp_name(tmp_path / "out.gpkg")  # the name the first write would draw
    taken.write_bytes(b"someone else's")
    io.write(frame(), tmp_path / "out.gpkg")
    assert taken.read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([taken.name, "out.gpkg"])


@pytest.mark.parametrize("ext", EXTS)
def test_a_failed_write_removes_its_temporary_file_and_keeps_the_old_one(tmp_path, ext):
    out = tmp_path / f"out{ext}"
    io.write(frame(), out)
    before = decoys(tmp_path)

    def batches():
        yield list(frame(2).geometry), {"score": np.ones(2, np.float32), "area_m2": np.ones(2)}
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.write_stream(batches(), out, frame().crs, {"score": "float32", "area_m2": "float64"})
    assert snapshot(tmp_path) == before


# -- 2. an input is never an output ---------------------------------------------------------

def test_an_input_cannot_be_the_output(tmp_path, monkeypatch):
    src = tmp_path / "clicks.gpkg"
    io.write(frame(), src)
    data = src.read_bytes()
    (tmp_path / "link.gpkg").symlink_to(src)
    os.link(src, tmp_path / "hard.gpkg")
    monkeypatch.chdir(tmp_path)
    for out in [src, "clicks.gpkg", tmp_path / "sub" / ".." / "clicks.gpkg", tmp_path / "link.gpkg",
                tmp_path / "hard.gpkg"]:
        with pytest.raises(OutputError, match=re.escape(f"{out}: is the input {src}; write the output to another")):
            io.check_output(out, inputs=[None, tmp_path / "scene.tif", src])
    with pytest.raises(OutputError, match="is the input"):  # the same path, before either exists
        io.check_output(tmp_path / "new.gpkg", inputs=["new.gpkg"])
    io.check_output(tmp_path / "other.gpkg", inputs=[None, src])
    assert src.read_bytes() == data


@pytest.fixture(scope="module")
def gpkg_raster(tmp_path_factory):
    """A scene written as a GeoPackage raster: an input that has an output's extension."""
    import rasterio

    d = tmp_path_factory.mktemp("gpkg_raster")
    tif = Path(write_scene(make_scene(256, 256, seed=2, cell=64), d / "scene.tif"))
    with rasterio.open(tif) as src:
        profile = dict(driver="GPKG", width=src.width, height=src.height, count=3, dtype="uint8",
                       crs=src.crs, transform=src.transform)
        with rasterio.open(d / "scene.gpkg", "w", **profile) as dst:
            dst.write(src.read())
    return d / "scene.gpkg"


def test_the_api_refuses_to_write_over_its_raster(gpkg_raster):
    from fastsam_geo import SegmentedRaster, segment_raster

    data = gpkg_raster.read_bytes()
    fake = "fastsam_geo.synthetic:ColourSegmenter"
    with pytest.raises(OutputError, match="is the input"):
        segment_raster(gpkg_raster, segmenter=fake, output=gpkg_raster)
    sr = SegmentedRaster(gpkg_raster, segmenter=fake, cache=False)
    for call in (lambda: sr.segment_to_file(gpkg_raster), lambda: sr.segment(output=gpkg_raster)):
        with pytest.raises(OutputError, match="is the input"):
            call()
    assert gpkg_raster.read_bytes() == data


# -- 3. GeoPackage layers -------------------------------------------------------------------

def rows(gpkg, table):
    with sqlite3.connect(gpkg) as con:
        return sorted(con.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)


@pytest.fixture
def multi(tmp_path):
    """A GeoPackage with three layers (one without geometry) and a style table."""
    p = tmp_path / "city.gpkg"
    pyogrio.write_dataframe(frame(4, x=10), p, layer="roads")
    pyogrio.write_dataframe(frame(2, crs="EPSG:4326"), p, layer="parcels")
    pyogrio.write_dataframe(gpd.pd.DataFrame({"k": ["a", "b"], "v": [1, 2]}), p, layer="lookup")
    with sqlite3.connect(p) as con:
        con.execute("CREATE TABLE layer_styles (f_table_name TEXT, styleQML TEXT)")
        con.execute("INSERT INTO layer_styles VALUES ('roads', '<qgis/>')")
    return p


KEPT = ["roads", "parcels", "lookup", "layer_styles", "gpkg_spatial_ref_sys"]


def test_writing_into_a_geopackage_adds_a_layer_and_keeps_the_others(multi):
    before = {t: rows(multi, t) for t in KEPT}
    io.write(frame(5), multi)  # default layer: the file's stem
    assert {t: rows(multi, t) for t in KEPT[:-1]} == {t: before[t] for t in KEPT[:-1]}
    assert set(map(tuple, before["gpkg_spatial_ref_sys"])) <= set(map(tuple, rows(multi, "gpkg_spatial_ref_sys")))
    assert sorted(pyogrio.list_layers(multi)[:, 0]) == ["city", "lookup", "parcels", "roads"]
    assert len(pyogrio.read_dataframe(multi, layer="city")) == 5
    assert len(pyogrio.read_dataframe(multi, layer="roads")) == 4


def test_a_named_layer_is_replaced_and_only_it(multi):
    before = {t: rows(multi, t) for t in ["parcels", "lookup", "layer_styles"]}
    io.write(frame(7), multi, layer="roads")
    assert {t: rows(multi, t) for t in before} == before
    assert len(pyogrio.read_dataframe(multi, layer="roads")) == 7
    assert sorted(pyogrio.list_layers(multi)[:, 0]) == ["lookup", "parcels", "roads"]


def test_a_failed_layer_write_leaves_the_geopackage_untouched(multi, monkeypatch):
    data = multi.read_bytes()
    real = io.pyogrio.write_arrow

    def half_then_fail(reader, target, **kw):  # the layer is half in the copy when it fails
        real(reader, target, **kw)
        raise RuntimeError("disk full")

    monkeypatch.setattr(io.pyogrio, "write_arrow", half_then_fail)
    with pytest.raises(OutputError, match="could not write GPKG"):
        io.write(frame(3), multi, layer="roads")
    assert multi.read_bytes() == data
    assert sorted(p.name for p in multi.parent.iterdir()) == ["city.gpkg"]


def test_a_geopackage_open_for_writing_elsewhere_is_refused(multi):
    con = sqlite3.connect(multi)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("INSERT INTO layer_styles VALUES ('parcels', '<qgis/>')")
    con.commit()
    try:
        data = multi.read_bytes()
        with pytest.raises(OutputError, match=r"city.gpkg: is open in another program \(city.gpkg-wal exists\)"):
            io.write(frame(), multi)
        assert multi.read_bytes() == data
    finally:
        con.close()


def test_an_existing_file_that_is_not_a_geopackage_is_refused(tmp_path):
    out = tmp_path / "x.gpkg"
    out.write_bytes(b"my notes, not a GeoPackage")
    with pytest.raises(OutputError, match=r"x\.gpkg: exists and is not a GeoPackage"):
        io.write(frame(), out)
    assert out.read_bytes() == b"my notes, not a GeoPackage"


def test_layer_names(tmp_path):
    assert io.layer_name(tmp_path / ".hidden.gpkg") == "hidden"
    assert io.layer_name(tmp_path / "gpkg_out.gpkg") == "layer_gpkg_out"
    assert io.layer_name(tmp_path / ".hidden.fgb") == ".hidden"
    assert io.layer_name(tmp_path / "a.gpkg", "buildings v2") == "buildings v2"
    with pytest.raises(OutputError, match="'-x' cannot be a GeoPackage layer name"):
        io.layer_name(tmp_path / "a.gpkg", "-x")
    with pytest.raises(OutputError, match="GeoParquet files have no layer names"):
        io.layer_name(tmp_path / "a.parquet", "objects")
    io.write(frame(), tmp_path / ".hidden.gpkg")
    assert layer_of(tmp_path / ".hidden.gpkg") == "hidden"


@pytest.mark.parametrize("ext", [".fgb", ".geojson"])
def test_single_layer_formats_are_replaced_with_the_given_layer_name(tmp_path, ext):
    out = tmp_path / f"out{ext}"
    io.write(frame(4), out, layer="first")
    io.write(frame(2), out, layer="buildings")
    assert layer_of(out) == "buildings" and len(io.read_vector(out)) == 2


# -- 4. SIGTERM -----------------------------------------------------------------------------

SLOW_SEGMENTER = '''
"""A ColourSegmenter that takes its time and says when it has seen a tile."""
import os
import time

from fastsam_geo.synthetic import ColourSegmenter


class Slow(ColourSegmenter):
    def __call__(self, images):
        out = super().__call__(images)
        open(os.environ["FSG_STARTED"], "a").close()
        time.sleep(float(os.environ.get("FSG_DELAY", "0.4")))
        return out


def factory():
    return Slow()
'''

RUN_WITH_CONTEXT = '''
import sys

from fastsam_geo.session import SegmentedRaster
from fastsam_geo.signals import EXIT_CODE, Terminated, terminate_as_interrupt
from slowseg import factory

sr = SegmentedRaster(sys.argv[1], segmenter=factory(), tile_size=256, overlap=32, batch_size=1, cache=False)
try:
    with terminate_as_interrupt():
        sr.segment_to_file(sys.argv[2])
except Terminated:
    sys.exit(EXIT_CODE)
'''


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory):
    """A 1024² scene (25 tiles of 256 px) and a folder holding the slow segmenter's module."""
    d = tmp_path_factory.mktemp("slow")
    (d / "slowseg.py").write_text(textwrap.dedent(SLOW_SEGMENTER))
    (d / "run_with_context.py").write_text(textwrap.dedent(RUN_WITH_CONTEXT))
    tif = Path(write_scene(make_scene(1024, 1024, seed=5, cell=96), d / "scene.tif"))
    return d, tif


def start(slow_run, tmp_path, argv):
    """Start ``argv`` with the slow segmenter importable; return it once it segmented a tile."""
    d, _ = slow_run
    started = tmp_path / "started.flag"
    env = {**os.environ, "YOLO_OFFLINE": "true", "FSG_STARTED": str(started),
           "PYTHONPATH": os.pathsep.join([str(d), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([str(a) for a in argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=d)
    deadline = time.monotonic() + 120
    while not started.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run never reached its first tile: {proc.communicate()}")
        time.sleep(0.05)
    started.unlink()
    return proc


def previous_output(folder, ext=".gpkg"):
    folder.mkdir()
    out = folder / f"out{ext}"
    io.write(frame(), out)
    return out, decoys(folder)


def test_sigterm_during_a_run_cleans_up_like_ctrl_c(slow_run, tmp_path):
    d, tif = slow_run
    out, before = previous_output(tmp_path / "out")
    proc = start(slow_run, tmp_path, [sys.executable, d / "run_with_context.py", tif, out])
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_CODE == 143, err
    assert snapshot(out.parent) == before  # no temporary file; the previous output as it was


def test_sigterm_on_the_command_line_exits_143_and_keeps_the_previous_output(slow_run, tmp_path):
    _, tif = slow_run
    out, before = previous_output(tmp_path / "out")
    exe = Path(sys.executable).with_name("fastsam-geo")
    proc = start(slow_run, tmp_path, [exe, "segment", tif, "-o", out, "--model", "slowseg:factory",
                                      "--tile-size", 256, "--overlap", 32, "--batch-size", 1, "-q"])
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("Error: terminated"), err
    assert snapshot(out.parent) == before


def test_importing_the_package_takes_no_signal():
    code = ("import signal, fastsam_geo, fastsam_geo.io, fastsam_geo.session, fastsam_geo.signals, "
            "fastsam_geo.cli; print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "True", r.stderr


def test_the_handler_raises_once_and_is_restored():
    def mine(signum, frame):
        raise AssertionError("the previous handler ran inside the block")

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with terminate_as_interrupt() as active:
            assert active
            with pytest.raises(Terminated):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)  # interrupted at once
            os.kill(os.getpid(), signal.SIGTERM)  # a second one while cleaning up: ignored
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_nothing_is_installed():
    seen = []

    def worker():  # a QgsTask's thread
        with terminate_as_interrupt() as active:
            seen.append((active, signal.getsignal(signal.SIGTERM)))

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [(False, before)]
    with terminate_as_interrupt(enabled=False) as active:
        assert not active and signal.getsignal(signal.SIGTERM) is before


# -- 5. leftovers of killed runs ------------------------------------------------------------

def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_next_write_removes_a_killed_runs_files_and_nothing_else(tmp_path):
    scope, dead, hexid = io._scope(), dead_pid(), "0123456789abcdef" * 2
    leftover = f".fastsam-geo-{scope}-{dead}-{hexid}.partial.gpkg"
    removed = [leftover, f"{leftover}-journal", f".fastsam-geo-{scope}-{dead}-{'f' * 32}.partial.fgb"]
    in_progress = f".fastsam-geo-{scope}-{os.getppid()}-{hexid}.partial.gpkg"  # its process is alive
    elsewhere = f".fastsam-geo-{'0' * 8 if scope != '0' * 8 else '1' * 8}-{dead}-{hexid}.partial.gpkg"
    legacy = ".out.ab12cd34.partial.gpkg"
    near_misses = [f"{leftover}.bak", f"x{leftover}", leftover.replace(".gpkg", ".txt"),
                   leftover.replace(hexid, hexid.upper()), leftover.replace(hexid, hexid[1:]),
                   leftover.replace(f"-{dead}-", "--"), f"{leftover}-wal2", leftover.lstrip(".")]
    for name in [*removed, in_progress, elsewhere, legacy, *near_misses]:
        (tmp_path / name).write_bytes(b"data")
    before = decoys(tmp_path)
    with pytest.warns(io.LeftoverFilesWarning) as w:
        io.write(frame(), tmp_path / "out.gpkg")
    assert len(w) == 1
    message = str(w[0].message)
    assert all(n in message for n in [*removed, elsewhere, legacy]) and in_progress not in message, message
    after = snapshot(tmp_path)
    assert set(after) == (set(before) - set(removed)) | {"out.gpkg"}
    assert all(after[k] == v for k, v in before.items() if k not in removed)


def test_a_sigkilled_runs_file_is_removed_by_the_next_run(slow_run, tmp_path):
    d, tif = slow_run
    out, before = previous_output(tmp_path / "out")
    proc = start(slow_run, tmp_path, [sys.executable, d / "run_with_context.py", tif, out])
    proc.kill()
    proc.communicate(timeout=60)
    left = sorted(set(snapshot(out.parent)) - set(before))
    assert left and all(io.TEMP_NAME.match(n) for n in left), left  # what SIGKILL leaves behind
    with pytest.warns(io.LeftoverFilesWarning, match=r"removed \d temporary file\(s\) a killed run left"):
        io.write(frame(1), out.parent / "next.gpkg")
    assert set(snapshot(out.parent)) == set(before) | {"next.gpkg"}
    assert snapshot(out.parent)["out.gpkg"] == before["out.gpkg"]


def test_the_command_line_names_removed_leftovers_in_one_warning_line(tmp_path):
    from fastsam_geo.cli import main

    tif = Path(write_scene(make_scene(256, 256, seed=1, cell=64), tmp_path / "scene.tif"))
    leftover = f".fastsam-geo-{io._scope()}-{dead_pid()}-{'a' * 32}.partial.gpkg"
    (tmp_path / leftover).write_bytes(b"half")
    r = CliRunner().invoke(main, ["segment", str(tif), "-o", str(tmp_path / "out.gpkg"), "--model",
                                  "fastsam_geo.synthetic:ColourSegmenter", "-q"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("Warning:")]
    assert len(lines) == 1 and leftover in lines[0], r.output
    assert not (tmp_path / leftover).exists()


# -- the command line: --layer and inputs as outputs ----------------------------------------

def test_the_command_line_writes_the_named_layer_and_keeps_the_others(slow_run, multi):
    from fastsam_geo.cli import main

    _, tif = slow_run
    before = {t: rows(multi, t) for t in ["roads", "parcels", "lookup", "layer_styles"]}
    r = CliRunner().invoke(main, ["segment", str(tif), "-o", str(multi), "--layer", "objects", "--model",
                                  "fastsam_geo.synthetic:ColourSegmenter", "--tile-size", "512", "-q"])
    assert r.exit_code == 0, r.output
    assert {t: rows(multi, t) for t in before} == before
    assert len(pyogrio.read_dataframe(multi, layer="objects")) > 0


def test_the_command_line_refuses_an_input_as_output(gpkg_raster, tmp_path):
    from fastsam_geo.cli import main

    clicks = tmp_path / "clicks.gpkg"
    pts = gpd.GeoDataFrame(geometry=[shapely.Point(500030, 4499970)], crs="EPSG:32633")
    pts.to_file(clicks, layer="clicks")
    for out, extra in [(clicks, ["--prompts", str(clicks)]), (gpkg_raster, [])]:
        data = out.read_bytes()
        r = CliRunner().invoke(main, ["segment", str(gpkg_raster), "-o", str(out), *extra, "--model",
                                      "fastsam_geo.synthetic:ColourSegmenter", "-q"])
        assert r.exit_code == 2, r.output
        assert f"is the input {out}" in r.output and out.read_bytes() == data
