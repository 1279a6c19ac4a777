"""Rasters that are hostile, broken or unusual: huge declared sizes, truncated pixels, GCP-only
georeference, colour tables, URLs and GDAL virtual file systems, and cache folders that cannot
be written. Each is one clear error (or a correct read), never a hang, a 4 GB plan or exit 1."""

from __future__ import annotations

import email.utils
import errno
import functools
import http.server
import io
import os
import re
import threading
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.control import GroundControlPoint
from rasterio.errors import RasterioError
from rasterio.transform import from_origin

import fastsam_geo
from conftest import KeyedCountingSegmenter
from fastsam_geo import api
from fastsam_geo.cache import raster_key
from fastsam_geo.cli import main
from fastsam_geo.errors import CacheWarning, InputError, OutputError, RasterError
from fastsam_geo.pipeline import RunStats
from fastsam_geo.raster import TileReader, compute_stretch, read_info
from fastsam_geo.synthetic import ColourSegmenter, make_scene, write_scene
from fastsam_geo.tiling import MAX_PIXELS, plan_tiles

UTM = "EPSG:32633"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    sc = make_scene(520, 400, seed=5, cell=70)
    return sc, Path(write_scene(sc, tmp_path_factory.mktemp("hard") / "scene.tif"))


def write_tif(path, data, **kw) -> Path:
    count, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=count, dtype=data.dtype.name, crs=UTM,
                   transform=from_origin(500000, 4500000, 0.3, 0.3))
    profile.update(kw)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return Path(path)


def huge_vrt(tmp_path, width, height, name="huge.vrt") -> Path:
    """A few hundred bytes of VRT declaring ``width x height`` pixels over a 64² GeoTIFF."""
    write_tif(tmp_path / "src.tif", np.full((1, 64, 64), 7, np.uint8))
    vrt = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{UTM}</SRS>'
           '<GeoTransform>500000, 0.3, 0, 4500000, 0, -0.3</GeoTransform>'
           '<VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
           '<SourceFilename relativeToVRT="1">src.tif</SourceFilename><SourceBand>1</SourceBand>'
           '<SrcRect xOff="0" yOff="0" xSize="64" ySize="64"/><DstRect xOff="0" yOff="0" xSize="64" ySize="64"/>'
           '</SimpleSource></VRTRasterBand></VRTDataset>')
    path = tmp_path / name
    path.write_text(vrt)
    return path


def measured(fn):
    """``(result or exception, seconds, peak traced bytes)`` of ``fn()``."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:  # returned for the caller to assert on
        out = exc
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak


def one_line_naming(exc: BaseException, path) -> bool:
    msg = str(exc)
    return "\n" not in msg and str(path) in msg


# -- 1. sizes: planned lazily, absurd ones refused at once ------------------------------------------

def test_a_vrt_declaring_2147483647_squared_pixels_is_refused_at_once_naming_its_size(tmp_path):
    vrt = huge_vrt(tmp_path, 2147483647, 2147483647)
    assert vrt.stat().st_size < 600
    for call in (lambda: read_info(vrt), lambda: api.raster_info(vrt)):
        err, seconds, peak = measured(call)
        assert isinstance(err, RasterError), err
        assert one_line_naming(err, vrt) and "2147483647 x 2147483647" in str(err)
        assert seconds < 0.5 and peak < 2 << 20, (seconds, peak)
    err, seconds, peak = measured(lambda: plan_tiles(2147483647, 2147483647, 1024, 128))
    assert isinstance(err, InputError) and "2147483647 x 2147483647" in str(err)
    assert seconds < 0.1 and peak < 1 << 20
    r = CliRunner().invoke(main, ["info", str(vrt)])
    assert r.exit_code == 2 and "2147483647 x 2147483647" in r.output and "Traceback" not in r.output, r.output


def test_a_country_wide_mosaic_is_planned_in_constant_time_and_memory(tmp_path):
    side = 2_530_000  # 6.4e12 px: 580,000 km² at 0.3 m
    vrt = huge_vrt(tmp_path, side, side)
    info, seconds, peak = measured(lambda: api.raster_info(vrt))
    assert not isinstance(info, Exception), info
    assert (info.width, info.height) == (side, side) and seconds < 0.5 and peak < 2 << 20
    grid, seconds, peak = measured(lambda: plan_tiles(info.width, info.height, 1024, 128, info.transform))
    n = -(-(side - 1024) // 896) + 1
    assert grid.n_rows == grid.n_cols == n and len(grid) == n * n and len(grid.tiles) == n * n
    assert seconds < 0.05 and peak < 256 << 10, (seconds, peak)  # was: every Tile built, gigabytes
    last = grid.tiles[-1]
    assert (last.x + last.width, last.y + last.height) == (side, side) and last.core[2:] == (side, side)
    assert last.transform @ (0, 0) == info.transform @ (last.x, last.y)
    assert grid.xs[-1] == side - 1024 and len(grid.ys) == n
    (owner,) = grid.owning((side // 2, side // 2, side // 2 + 1, side // 2 + 1))
    assert owner.core[0] <= side // 2 < owner.core[2]
    r = CliRunner().invoke(main, ["info", str(vrt), "--gsd", "native"])
    assert r.exit_code == 0 and f"{n * n} ({n} x {n})" in r.output, r.output
    assert side * side < MAX_PIXELS


# -- 2. the stretch read: capped cache, GDAL errors wrapped ------------------------------------------

@pytest.fixture
def truncated_uint16(tmp_path):
    data = np.random.default_rng(0).integers(0, 4000, (3, 1024, 1024), dtype=np.uint16)
    full = write_tif(tmp_path / "full.tif", data, tiled=True, blockxsize=256, blockysize=256)
    cut = tmp_path / "truncated.tif"
    raw = full.read_bytes()
    cut.write_bytes(raw[:len(raw) // 3])
    return cut


def test_a_truncated_uint16_raster_is_a_raster_error_naming_it(truncated_uint16):
    for call in (lambda: compute_stretch(truncated_uint16, (1, 2, 3)),
                 lambda: TileReader(truncated_uint16),
                 lambda: fastsam_geo.segment_raster(truncated_uint16, segmenter=ColourSegmenter())):
        with pytest.raises(RasterError) as info:
            call()
        assert not isinstance(info.value, RasterioError)
        assert one_line_naming(info.value, truncated_uint16), str(info.value)
        assert "truncated or corrupt" in str(info.value)


def test_a_truncated_raster_on_the_command_line_is_exit_2(truncated_uint16, tmp_path):
    r = CliRunner().invoke(main, ["segment", str(truncated_uint16), "-o", str(tmp_path / "o.gpkg"),
                                  "--model", "fastsam_geo.synthetic:ColourSegmenter"])
    assert r.exit_code == 2 and str(truncated_uint16) in r.output and "unexpected" not in r.output, r.output


@pytest.mark.parametrize("explicit", [None, "32"])
def test_the_stretch_read_runs_under_the_block_cache_cap(tmp_path, monkeypatch, explicit):
    import fastsam_geo.raster as raster

    if explicit is None:
        monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    else:
        monkeypatch.setenv("GDAL_CACHEMAX", explicit)
    tif = write_tif(tmp_path / "u16.tif", np.arange(3 * 64 * 64, dtype=np.uint16).reshape(3, 64, 64))
    seen = []
    real = raster._sample

    def spy(*args):
        seen.append(rasterio.env.getenv().get("GDAL_CACHEMAX"))
        return real(*args)

    monkeypatch.setattr(raster, "_sample", spy)
    compute_stretch(tif, (1, 2, 3), mode="percentile")
    assert seen == [raster.BLOCK_CACHE_BYTES if explicit is None else None]  # an explicit GDAL_CACHEMAX wins


# -- 3. GCP-only georeference ------------------------------------------------------------------------

def test_a_gcp_only_raster_is_told_to_warp_not_to_georeference(tmp_path):
    gcps = [GroundControlPoint(row=0, col=0, x=500000, y=4500000), GroundControlPoint(row=63, col=0, x=500000,
            y=4499981), GroundControlPoint(row=0, col=63, x=500019, y=4500000)]
    path = tmp_path / "gcps.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", gcps=gcps,
                       crs=UTM) as dst:
        dst.write(np.zeros((1, 64, 64), np.uint8))
    with rasterio.open(path) as src:
        assert src.gcps[0] and src.transform == rasterio.Affine.identity()
    with pytest.raises(RasterError, match="georeferenced by GCPs only; warp it first") as info:
        read_info(path)
    assert one_line_naming(info.value, path) and "no georeference" not in str(info.value)


# -- 4. palette rasters ----------------------------------------------------------------------------

COLOURS = {0: (255, 0, 0, 255), 1: (0, 255, 0, 255), 2: (0, 0, 255, 255), 3: (250, 200, 10, 255)}


@pytest.mark.parametrize("dtype,last", [("uint8", 3), ("uint16", 1000)])
def test_a_palette_raster_reads_as_its_colours(tmp_path, dtype, last):
    colours = {**{k: v for k, v in COLOURS.items() if k < 3}, last: COLOURS[3]}
    idx = np.array([[0, 1], [2, last]], dtype).repeat(32, 0).repeat(32, 1)
    path = write_tif(tmp_path / "pal.tif", idx[None], photometric="palette")
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, colours)
    with TileReader(path) as reader:
        assert reader.stretch.lo is None  # palette colours are uint8 already: no stretch
        img, valid = reader.read(plan_tiles(64, 64, 1024, 0).tiles[0])
    assert valid.all()
    for (r, c), i in {(0, 0): 0, (0, 40): 1, (40, 0): 2, (40, 40): last}.items():
        assert tuple(img[r, c]) == colours[i][:3], (r, c, tuple(img[r, c]))
    with TileReader(path, bands=[1]) as raw:  # explicit bands: the indexes, as asked
        grey, _ = raw.read(plan_tiles(64, 64, 1024, 0).tiles[0])
    assert grey[40, 40, 0] == grey[40, 40, 1] == grey[40, 40, 2] != 0


def test_palette_entries_with_alpha_0_are_nodata(tmp_path):
    write_tif(tmp_path / "idx.tif", np.array([[0, 1], [2, 3]], np.uint8).repeat(32, 0).repeat(32, 1)[None])
    entries = "".join(f'<Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>' for r, g, b, a in
                      (COLOURS[0], COLOURS[1], COLOURS[2], (10, 20, 30, 0)))
    vrt = tmp_path / "pal.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>{UTM}</SRS>'
                   '<GeoTransform>500000, 0.3, 0, 4500000, 0, -0.3</GeoTransform>'
                   '<VRTRasterBand dataType="Byte" band="1"><ColorInterp>Palette</ColorInterp>'
                   f'<ColorTable>{entries}</ColorTable><SimpleSource><SourceFilename relativeToVRT="1">idx.tif'
                   '</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>')
    with TileReader(vrt) as reader:
        img, valid = reader.read(plan_tiles(64, 64, 1024, 0).tiles[0])
    assert valid[:32].all() and valid[32:, :32].all() and not valid[32:, 32:].any()
    assert tuple(img[0, 40]) == (0, 255, 0) and not img[40, 40].any()


def test_a_palette_scene_segments_like_its_rgb_original(scene, tmp_path):
    _, tif = scene
    with rasterio.open(tif) as src:
        rgb = src.read()
        profile = src.profile
    code = (rgb[0].astype(np.uint32) << 16) | (rgb[1].astype(np.uint32) << 8) | rgb[2]
    values, index = np.unique(code, return_inverse=True)
    assert len(values) <= 256
    pal = tmp_path / "palette_scene.tif"
    profile.update(count=1, photometric="palette", nodata=None)
    with rasterio.open(pal, "w", **profile) as dst:
        dst.write(index.reshape(1, *code.shape).astype(np.uint8))
        dst.write_colormap(1, {i: (int(v >> 16), int(v >> 8 & 255), int(v & 255), 255) for i, v in enumerate(values)})
    kw = dict(segmenter=ColourSegmenter(), tile_size=256, overlap=32)
    a = fastsam_geo.segment_raster(tif, **kw)
    b = fastsam_geo.segment_raster(pal, **kw)
    assert len(b) == len(a) > 20
    assert shapely.equals(shapely.union_all(a.geometry.values), shapely.union_all(b.geometry.values))


# -- 5. URLs and GDAL virtual file systems -----------------------------------------------------------

class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with Range requests, Last-Modified and an ETag (what GDAL's /vsicurl/ needs)."""

    def log_message(self, *args):
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        data, st = Path(path).read_bytes(), os.stat(path)
        m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if m:
            a = int(m[1])
            b = min(int(m[2]) if m[2] else len(data) - 1, len(data) - 1)
            body = data[a:b + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.send_header("ETag", f'"{st.st_size}-{st.st_mtime_ns}"')
        self.end_headers()
        return io.BytesIO(body)


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A folder served on 127.0.0.1 (port 0); GDAL told not to list folders (a static server
    has no listing) and not to use a proxy."""
    root = tmp_path / "www"
    root.mkdir()
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_raster_served_over_http_is_read_through_vsicurl(scene, served):
    _, tif = scene
    root, base = served
    (root / "x.tif").write_bytes(tif.read_bytes())
    local = api.raster_info(tif)
    kw = dict(segmenter=ColourSegmenter(), tile_size=256, overlap=32)
    expected = fastsam_geo.segment_raster(tif, **kw)
    for url in (f"/vsicurl/{base}/x.tif", f"{base}/x.tif"):
        info = api.raster_info(url)
        assert (info.width, info.height, info.transform, info.crs) == \
            (local.width, local.height, local.transform, local.crs) and info.path == url
        got = fastsam_geo.segment_raster(url, **kw)
        assert len(got) == len(expected) > 20
        assert shapely.equals(shapely.union_all(got.geometry.values), shapely.union_all(expected.geometry.values))


def test_a_missing_url_is_one_line_and_a_collapsed_url_is_explained(served):
    _, base = served
    with pytest.raises(RasterError) as info:
        api.raster_info(f"/vsicurl/{base}/absent.tif")
    assert one_line_naming(info.value, f"/vsicurl/{base}/absent.tif")
    with pytest.raises(RasterError, match="collapsed"):
        api.raster_info(base.replace("http://", "http:/") + "/x.tif")


def test_a_url_is_cached_by_its_validators_and_a_changed_file_is_segmented_again(scene, served, tmp_path):
    _, tif = scene
    root, base = served
    target = root / "x.tif"
    target.write_bytes(tif.read_bytes())
    url = f"/vsicurl/{base}/x.tif"
    cache = tmp_path / "cache"
    seg = KeyedCountingSegmenter()
    kw = dict(segmenter=seg, tile_size=256, overlap=32, cache=cache)
    first = fastsam_geo.segment_raster(url, **kw)
    images = seg.images
    stats = RunStats()
    again = fastsam_geo.segment_raster(url, stats=stats, **kw)
    assert images > 0 and seg.images == images and stats.tiles_cached == stats.tiles == 6  # no tile segmented
    assert len(again) == len(first)
    # the server's file changes (new Last-Modified and ETag): the cached masks are not used
    other = make_scene(520, 400, seed=6, cell=70)
    write_scene(other, target)
    os.utime(target, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    stats = RunStats()
    changed = fastsam_geo.segment_raster(url, stats=stats, **kw)
    assert stats.tiles_cached == 0 and seg.images == 2 * images
    assert len(changed) == len(other.footprints)


# -- 7. cache folders that cannot be used --------------------------------------------------------------

def test_a_cache_folder_that_is_a_file_is_one_clear_error(scene, tmp_path):
    _, tif = scene
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    for cache in (blocker, blocker / "sub"):
        with pytest.raises(OutputError, match="cache folder") as info:
            fastsam_geo.segment_raster(tif, segmenter=KeyedCountingSegmenter(), tile_size=256, overlap=32, cache=cache)
        assert one_line_naming(info.value, blocker)
    r = CliRunner().invoke(main, ["segment", str(tif), "-o", str(tmp_path / "o.gpkg"), "--model",
                                  "fastsam_geo.synthetic:ColourSegmenter", "--cache", str(blocker)])
    assert r.exit_code == 2 and "cache folder" in r.output and "unexpected" not in r.output, r.output


def test_a_cache_folder_whose_run_folder_cannot_be_made_is_one_clear_error(scene, tmp_path):
    """Read-only for real even as root: a FILE sits where the raster's folder must go."""
    _, tif = scene
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / raster_key(tif)).write_text("in the way")
    with pytest.raises(OutputError, match="cache folder"):
        fastsam_geo.segment_raster(tif, segmenter=KeyedCountingSegmenter(), tile_size=256, overlap=32, cache=cache)


def test_a_read_only_cache_folder_is_one_clear_error(scene, tmp_path, monkeypatch):
    _, tif = scene
    cache = tmp_path / "ro"
    cache.mkdir()
    if os.geteuid() != 0:  # a real read-only folder (root writes into 0o500 folders regardless)
        cache.chmod(0o500)
    else:
        real = Path.mkdir

        def deny(self, *args, **kwargs):
            if cache in self.parents:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", deny)
    try:
        with pytest.raises(OutputError, match="Permission denied") as info:
            fastsam_geo.segment_raster(tif, segmenter=KeyedCountingSegmenter(), tile_size=256, overlap=32, cache=cache)
        assert one_line_naming(info.value, cache)
    finally:
        cache.chmod(0o700)


def test_a_full_disk_mid_run_warns_once_and_the_run_finishes_correct(scene, tmp_path, monkeypatch):
    _, tif = scene
    expected = fastsam_geo.segment_raster(tif, segmenter=KeyedCountingSegmenter(), tile_size=256, overlap=32)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = fastsam_geo.segment_raster(tif, segmenter=KeyedCountingSegmenter(), tile_size=256, overlap=32,
                                         cache=tmp_path / "c")
    cache_warnings = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert len(cache_warnings) == 1 and "No space left on device" in str(cache_warnings[0].message)
    assert len(got) == len(expected) and not list((tmp_path / "c").rglob("*.npz"))
