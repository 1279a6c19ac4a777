"""Footprint clean-up: ground units in any CRS, each step does its one job, the extra is optional."""

import sys

import geopandas as gpd
import numpy as np
import pytest
import shapely

from fastsam_geo.cleanup import clean, fill_holes, metres_per_unit
from fastsam_geo.errors import InputError
from fastsam_geo.options import Options, parse_quantity

UTM = gpd.GeoSeries.from_wkt(["POINT (0 0)"], crs=32636).crs


def in_mercator(geoms, crs=UTM):
    return gpd.GeoSeries(list(geoms), crs=crs).to_crs(3857)


def square(x, y, side, hole=0.0):
    outer = shapely.box(x, y, x + side, y + side)
    if hole:
        c = side / 2
        outer = outer.difference(shapely.box(x + c - hole / 2, y + c - hole / 2, x + c + hole / 2, y + c + hole / 2))
    return outer


# ~49.6 N, 33 E: Web Mercator units are 0.65 m here (areas 2.4x too large if taken as m²)
BASE = (500000.0, 5500000.0)


def test_areas_are_ground_square_metres_in_web_mercator_too():
    geoms = [square(BASE[0] + 20 * i, BASE[1], s) for i, s in enumerate((2.0, 3.5, 5.0))]  # 4, 12.25, 25 m²
    for crs_geoms in (gpd.GeoSeries(geoms, crs=UTM), in_mercator(geoms)):
        kept, keep = clean(crs_geoms.values, crs_geoms.crs, min_area_m2=10.0, max_area_m2=20.0)
        assert keep.tolist() == [1] and len(kept) == 1
    merc = in_mercator(geoms)
    lat = np.radians(gpd.GeoSeries([g.centroid for g in geoms], crs=UTM).to_crs(4326).y.mean())
    assert metres_per_unit(merc.values, merc.crs) == pytest.approx(np.cos(lat), abs=0.01)


def test_fill_holes_fills_only_the_small_ones():
    geoms = np.array([square(0, 0, 10, hole=1.0), square(20, 0, 10, hole=4.0)], dtype=object)  # 1 m², 16 m² holes
    out = fill_holes(geoms, 5.0, np.ones(2))
    assert len(out[0].interiors) == 0 and len(out[1].interiors) == 1


def test_simplify_tolerance_is_metres():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    r = 10 + rng.uniform(-0.05, 0.05, t.size)  # 5 cm jitter on a 10 m circle
    ring = shapely.Polygon(np.c_[BASE[0] + r * np.cos(t), BASE[1] + r * np.sin(t)])
    merc = in_mercator([ring])
    coarse, _ = clean(merc.values, merc.crs, simplify_m=0.5)
    fine, _ = clean(merc.values, merc.crs, simplify_m=0.01)
    n = shapely.get_num_coordinates
    assert n(coarse[0]) < 40 < n(fine[0])


def test_regularize_gives_right_angles():
    pytest.importorskip("buildingregulariser")
    rng = np.random.default_rng(1)
    # a 12 x 8 m rectangle rotated 20°, traced as a pixel staircase would be (noisy vertices)
    rect = shapely.affinity.rotate(shapely.box(0, 0, 12, 8), 20, origin=(0, 0))
    noisy = shapely.Polygon(np.asarray(shapely.segmentize(rect, 0.5).exterior.coords)[:-1]
                            + rng.uniform(-0.1, 0.1, (len(shapely.segmentize(rect, 0.5).exterior.coords) - 1, 2)))
    geoms = gpd.GeoSeries([shapely.affinity.translate(noisy, *BASE)], crs=UTM)
    out, _ = clean(geoms.values, geoms.crs, regularize_=True)
    xy = np.asarray(out[0].exterior.coords)
    edges = np.diff(xy, axis=0)
    edges = edges[np.hypot(*edges.T) > 0.05]
    ang = np.degrees(np.arctan2(edges[:, 1], edges[:, 0]))
    off = (ang - 20) % 90
    assert np.all(np.minimum(off, 90 - off) < 2.0), ang
    assert out[0].intersection(geoms[0]).area / out[0].union(geoms[0]).area > 0.9


def test_regularize_without_the_extra_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "buildingregulariser", None)
    g = gpd.GeoSeries([square(*BASE, 10)], crs=UTM)
    with pytest.raises(InputError, match=r"fastsam-geo\[regularize\]"):
        clean(g.values, g.crs, regularize_=True)


def test_quantities_and_options():
    assert parse_quantity("20px", "a", ("px", "m2")) == (20.0, "px")
    assert parse_quantity("15 m²", "a", ("px", "m2")) == (15.0, "m2")
    assert parse_quantity("16", "a", ("px", "m2"), default="px") == (16.0, "px")
    with pytest.raises(InputError, match="needs a unit"):
        parse_quantity("0.5m", "a", ("px", "m2"))
    assert Options().cleanup() == {}
    assert Options(min_area_m2=10.0).cleanup()["min_area_m2"] == 10.0
    with pytest.raises(InputError, match="below min_area_m2"):
        Options(min_area_m2=10.0, max_area_m2=5.0)
    with pytest.raises(InputError, match="regularize must be True or False"):
        Options(regularize="yes")
