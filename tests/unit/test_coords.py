import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from fastsam_geo.coords import (
    crs_name,
    geodesic_areas,
    map_to_pixel,
    parse_crs,
    pixel_to_map,
    transform_geometries,
    transform_xy,
)
from fastsam_geo.errors import CRSError


@pytest.mark.parametrize("bad", ["EPSG:999999", "not a crs", "+proj=nope"])
def test_unknown_crs_is_one_clear_error(bad):
    with pytest.raises(CRSError, match="unknown CRS"):
        parse_crs(bad)


def test_crs_forms():
    assert crs_name(parse_crs(32616)) == "EPSG:32616"
    assert crs_name(parse_crs("EPSG:3857")) == "EPSG:3857"
    assert parse_crs(parse_crs(4326).to_wkt()) == parse_crs(4326)


def test_area_is_true_square_metres_in_every_crs():
    # a 100 m x 100 m square near the UTM 33N central meridian (scale factor 0.9996)
    sq = shapely.box(500000, 4500000, 500100, 4500100)
    utm = parse_crs(32633)
    ref = geodesic_areas(np.array([sq]), utm)[0]
    assert ref == pytest.approx(100 * 100 / 0.9996 ** 2, rel=1e-3)
    for crs in ("EPSG:3857", "EPSG:4326", "EPSG:3035"):
        other = parse_crs(crs)
        g = transform_geometries(np.array([sq]), utm, other)
        assert geodesic_areas(g, other)[0] == pytest.approx(ref, rel=1e-4), crs


def test_web_mercator_planar_area_would_be_wrong():
    sq = shapely.box(500000, 6500000, 500100, 6500100)  # 3857 metres at ~50°N
    area = geodesic_areas(np.array([sq]), parse_crs(3857))[0]
    assert area < 0.5 * sq.area  # planar 3857 area overstates by 1/cos²(lat)


@pytest.mark.parametrize("crs,lon,lat", [("EPSG:32633", 15, 45), ("EPSG:3857", 10, 60), ("EPSG:4326", 37, -1),
                                          ("ESRI:54009", 20, 30), ("EPSG:2263", -74, 40.7), ("EPSG:32761", 0, -89.9)])
def test_building_sized_areas_match_integration_on_the_ellipsoid(crs, lon, lat):
    """The vectorised local-scale areas (polygons under 5 km) agree with pyproj's geodesic
    integration, in feet, degrees, spherical Web Mercator and Mollweide, near a pole; a
    polygon larger than that is integrated."""
    crs = parse_crs(crs)
    x, y = transform_xy(np.array([lon]), np.array([lat]), parse_crs(4326), crs)
    unit = 1e-5 if crs.is_geographic else 1 / crs.axis_info[0].unit_conversion_factor  # ~1 m
    g = np.random.default_rng(5)
    geoms = [shapely.affinity.rotate(shapely.box(cx, cy, cx + s, cy + s * g.uniform(0.2, 1)), g.uniform(0, 90))
             for cx, cy, s in zip(x[0] + g.normal(size=50) * 2000 * unit, y[0] + g.normal(size=50) * 2000 * unit,
                                  g.uniform(5, 3000, 50) * unit)]
    geoms.append(shapely.box(x[0], y[0], x[0] + 20000 * unit, y[0] + 20000 * unit))
    geoms = np.array(geoms)
    geod = crs.get_geod()
    exact = [abs(geod.geometry_area_perimeter(p)[0]) for p in transform_geometries(geoms, crs, crs.geodetic_crs)]
    np.testing.assert_allclose(geodesic_areas(geoms, crs), exact, rtol=1e-5)


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.floats(0.01, 100), st.floats(0.01, 100),
       st.floats(-180, 180))
def test_pixel_map_round_trip(x, y, sx, sy, rot):
    t = Affine.translation(x, y) @ Affine.rotation(rot) @ Affine.scale(sx, -sy)
    cols = np.array([0.0, 10.5, 1000.0])
    rows = np.array([0.0, 3.25, 777.0])
    mx, my = pixel_to_map(cols, rows, t)
    c2, r2 = map_to_pixel(mx, my, t)
    np.testing.assert_allclose(c2, cols, atol=1e-6 * (1 + abs(x) + abs(y)) / min(sx, sy))
    np.testing.assert_allclose(r2, rows, atol=1e-6 * (1 + abs(x) + abs(y)) / min(sx, sy))


@settings(max_examples=100, deadline=None)
@given(st.floats(-179, 179), st.floats(-80, 80))
def test_lonlat_web_mercator_round_trip_is_xy_ordered(lon, lat):
    wgs, merc = parse_crs(4326), parse_crs(3857)
    x, y = transform_xy([lon], [lat], wgs, merc)
    assert np.sign(x[0]) == np.sign(lon) or abs(lon) < 1e-9
    lo, la = transform_xy(x, y, merc, wgs)
    assert lo[0] == pytest.approx(lon, abs=1e-7) and la[0] == pytest.approx(lat, abs=1e-7)


def test_untransformable_coordinates_raise():
    with pytest.raises(CRSError, match="cannot be transformed"):
        transform_xy([0.0], [95.0], parse_crs(4326), parse_crs(3857))


@pytest.mark.parametrize("crs, x, y", [("EPSG:27572", 600000.0, 2400000.0), ("EPSG:27562", 600000.0, 200000.0),
                                       ("EPSG:4807", 0.5, 51.0)])
@pytest.mark.parametrize("size_m", [30.0, 20000.0])  # a house (local scale) and a district (integrated)
def test_areas_where_the_geodetic_crs_counts_grads(crs, x, y, size_m):
    """NTF (Paris) CRSs have a geodetic base in grads (400 to the circle), not degrees: reading
    them as degrees made every area 10 % too large."""
    from pyproj import Geod

    c = parse_crs(crs)
    step = size_m if not c.is_geographic else size_m / 100000 * 0.9  # ~grads per metre near 51 grads N
    poly = shapely.box(x, y, x + step, y + step)
    got = geodesic_areas(np.array([poly]), c)[0]
    # independently: densified, to NTF's geographic CRS in degrees (EPSG:4275, same ellipsoid)
    ll = transform_geometries(np.array([shapely.segmentize(poly, step / 50)]), c, parse_crs("EPSG:4275"))[0]
    want = abs(Geod(ellps="clrk80ign").geometry_area_perimeter(ll)[0])
    assert got == pytest.approx(want, rel=2e-4)


def test_an_engineering_crs_measures_in_its_own_linear_unit():
    """A site grid (LOCAL_CS) has no ellipsoid but ground lengths: areas are planar, in its unit."""
    from fastsam_geo.coords import local_metres_per_unit
    from fastsam_geo.gsd import ground_gsd

    wkt = ('LOCAL_CS["Site grid",LOCAL_DATUM["unknown",32767],UNIT["{}",{}],AXIS["Easting",EAST],'
           'AXIS["Northing",NORTH]]')
    metres = parse_crs(wkt.format("metre", 1))
    feet = parse_crs(wkt.format("US survey foot", 0.304800609601219))
    sq = np.array([shapely.box(0, 0, 10, 10), None], dtype=object)
    assert geodesic_areas(sq, metres).tolist() == [100.0, 0.0]
    assert geodesic_areas(sq, feet)[0] == pytest.approx(100 * 0.304800609601219 ** 2)
    assert local_metres_per_unit(metres) == 1.0 and local_metres_per_unit(parse_crs("EPSG:32633")) is None
    assert ground_gsd(Affine(0.5, 0, 1000, 0, -0.5, 2000), feet, 100, 100) == pytest.approx(0.5 * 0.3048006)
    angles = parse_crs('ENGCRS["x",EDATUM["y"],CS[Cartesian,2],AXIS["x",east,ANGLEUNIT["degree",0.0174532925199433]],'
                       'AXIS["y",north,ANGLEUNIT["degree",0.0174532925199433]]]')
    with pytest.raises(CRSError, match="no ellipsoid and no linear unit"):
        geodesic_areas(sq, angles)


@pytest.mark.parametrize("dst, on_edge, utm", [
    ("EPSG:4326", (180.0, -16.5), "EPSG:32760"), ("EPSG:3857", (20037508.34, -1.86e6), "EPSG:32760"),
    ("EPSG:4807", (200.0, -18.33), "EPSG:32701"),  # NTF in grads: its antimeridian is 200 grads from Paris
])
def test_footprints_across_the_antimeridian_are_split_not_wrapped_round_the_world(dst, on_edge, utm):
    """A 30 m building on the antimeridian reprojected vertex by vertex spans the world; it must
    come out as two parts, one each side, with the building's area."""
    from fastsam_geo.coords import reproject_footprints

    utm = parse_crs(utm)
    x, y = transform_xy(np.array([on_edge[0]]), np.array([on_edge[1]]), parse_crs(dst), utm)
    house = shapely.box(x[0] - 12, y[0] - 10, x[0] + 18, y[0] + 10)
    inland = shapely.box(x[0] - 500, y[0], x[0] - 470, y[0] + 20)  # wholly west of it: untouched
    naive = transform_geometries(np.array([house, inland]), utm, parse_crs(dst))
    b = shapely.bounds(naive)
    assert b[0, 2] - b[0, 0] > 100 * (b[1, 2] - b[1, 0])  # the defect: round the world
    out = reproject_footprints(np.array([house, inland, None]), utm, parse_crs(dst))
    assert out[0].geom_type == "MultiPolygon" and len(out[0].geoms) == 2
    for part in out[0].geoms:
        pb = part.bounds
        assert pb[2] - pb[0] < 2 * (b[1, 2] - b[1, 0])  # each part about building-sized
    assert out[1].equals(naive[1]) and out[2] is None
    assert geodesic_areas(out[:1], parse_crs(dst))[0] == pytest.approx(600.0, rel=2e-3)
    # a CRS whose x does not wrap there keeps it as it is
    same = reproject_footprints(np.array([house]), utm, parse_crs("EPSG:3832"))
    assert same[0].geom_type == "Polygon"


def test_a_click_wraps_onto_a_raster_across_the_antimeridian_in_its_own_unit():
    """A turn is 360 in degrees but 400 in grads (NTF Paris): a click at -199.9 grads lands on a
    raster spanning 199.8-200.2 grads, as -179.9° does on one spanning 179.8°-180.2°."""
    from fastsam_geo.coords import longitude_turn
    from fastsam_geo.prompts import _Frame

    for crs, edge in (("EPSG:4326", 180.0), ("EPSG:4807", 200.0)):
        c = parse_crs(crs)
        assert longitude_turn(c) == pytest.approx(2 * edge)
        frame = _Frame(c, Affine(0.01, 0, edge - 0.2, 0, -0.01, 10.0), 40, 10)
        assert frame.wrap(np.array([-edge + 0.1]))[0] == pytest.approx(edge + 0.1)
