import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import shapely

from fastsam_geo import io
from fastsam_geo.errors import OutputError


def frame(n=3, crs="EPSG:32633"):
    geoms = [shapely.box(i, 0, i + 0.5, 0.5) for i in range(n)]
    if n > 1:
        geoms[1] = shapely.MultiPolygon([shapely.box(1, 0, 1.2, 0.2), shapely.box(1.3, 0.3, 1.5, 0.5)])
    return gpd.GeoDataFrame({"score": np.ones(n, np.float32), "area_m2": np.ones(n)}, geometry=geoms, crs=crs)


@pytest.mark.parametrize("ext", [".gpkg", ".parquet", ".geojson", ".fgb"])
def test_round_trip_mixed_polygon_types(tmp_path, ext):
    out = io.write(frame(), tmp_path / f"x{ext}", dst_crs="EPSG:32633")  # GeoJSON: not RFC 7946's WGS 84
    back = io.read_vector(out)
    assert len(back) == 3 and back.crs.to_epsg() == 32633
    assert back.geometry.area.sum() == pytest.approx(frame().geometry.area.sum())


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "x.gpkg"
    io.write(frame(), out)
    before = out.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(io.pyogrio, "write_arrow", boom)
    with pytest.raises(OutputError, match="could not write GPKG"):
        io.write(frame(5), out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gpkg"]


def test_read_vector_errors(tmp_path):
    from fastsam_geo.errors import InputError
    with pytest.raises(InputError, match="no such file"):
        io.read_vector(tmp_path / "none.gpkg")
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(InputError, match="not a vector file"):
        io.read_vector(tmp_path / "bad.geojson")


def _loaded(code):
    probe = ("import sys; print(' '.join(m for m in ('torch', 'ultralytics', 'torchvision', 'click', 'dask', "
             "'qgis', 'rasterio', 'geopandas') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", f"{code}; {probe}"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def test_import_is_light():
    assert _loaded("import fastsam_geo") == set()


def test_api_does_not_load_torch_until_a_model_is_used():
    loaded = _loaded("import fastsam_geo; fastsam_geo.segment_raster; fastsam_geo.MaskSet")
    assert not loaded & {"torch", "ultralytics", "torchvision", "dask", "qgis"}, loaded
    # (click does come in here: rasterio.errors imports it; the CLI itself stays lazy)


def test_cli_info_imports_only_what_it_needs(tmp_path):
    """`fastsam-geo info` reads a header: no geopandas/pandas (~0.5 s), no OpenCV, no torch, and
    the group's start-up brings no inference module (it cost ~0.4 s before)."""
    from fastsam_geo.synthetic import make_scene, write_scene

    path = write_scene(make_scene(64, 64, seed=1), tmp_path / "s.tif")
    code = ("import sys; from fastsam_geo.cli import main\n"
            "try:\n"
            f"    main(['info', {str(path)!r}])\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print('LOADED:', *(m for m in ('geopandas', 'pandas', 'cv2', 'torch', 'fastsam_geo.engine.fastsam') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "LOADED:", r.stdout
