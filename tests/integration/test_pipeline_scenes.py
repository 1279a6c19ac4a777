"""End to end on seeded synthetic scenes: known buildings at known map coordinates.

ColourSegmenter returns each tile's true masks from the pixels alone, so any error in
reading, stretching, tiling, merging or georeferencing shows up as a wrong footprint.
"""

import dataclasses

import numpy as np
import pytest
import rasterio
import shapely

from conftest import match_truth
from fastsam_geo import EmptyResultWarning, segment_raster
from fastsam_geo.pipeline import RunStats
from fastsam_geo.raster import TileReader
from fastsam_geo.synthetic import ColourSegmenter, make_scene, write_scene
from fastsam_geo.tiling import plan_tiles

CRSS = {
    "utm": dict(crs="EPSG:32633", origin=(500000.0, 4500000.0), res=0.3),
    "webmerc": dict(crs="EPSG:3857", origin=(1390000.0, 5160000.0), res=0.3),
    "wgs84": dict(crs="EPSG:4326", origin=(12.49, 41.89), res=3e-6),
}
TILE, OVERLAP = 256, 32


def scene_for(crs_key, seed=7):
    # 740 x 620 px with 256-px tiles: 4 x 3 tiles; the big L-shaped building (300 x 280 px)
    # is larger than a tile; the nodata strip crosses several buildings
    return make_scene(740, 620, seed=seed, cell=62, big=(190, 150, 490, 430),
                      nodata=((600, 0, 618, 620),), **CRSS[crs_key])


def assert_every_building_once(gdf, scene, min_iou=0.9):
    truth = scene.truth_map()
    counts, ious = match_truth(list(gdf.geometry), truth)
    bad = [(i, c, round(v, 3)) for i, (c, v) in enumerate(zip(counts, ious)) if c != 1 or v < min_iou]
    assert not bad, f"buildings lost, split, duplicated or misplaced (index, count, IoU): {bad}"
    assert len(gdf) == len(truth), f"{len(gdf)} polygons for {len(truth)} buildings"


@pytest.mark.parametrize("crs_key", list(CRSS))
def test_every_building_exactly_once_in_several_crs(tmp_path, crs_key):
    scene = scene_for(crs_key)
    path = write_scene(scene, tmp_path / "scene.tif")
    grid = plan_tiles(scene.width, scene.height, TILE, OVERLAP)
    # the scene really exercises the seams: many buildings cross a tile edge
    crossing = sum(1 for f in scene.footprints
                   if len({(t.row, t.col) for t in grid.intersecting(tuple(int(v) for v in f.bounds))}) > 1)
    assert crossing >= 15
    gdf = segment_raster(path, segmenter=ColourSegmenter(), tile_size=TILE, overlap=OVERLAP)
    assert gdf.crs == scene.crs
    assert_every_building_once(gdf, scene)
    big = gdf.area_m2.idxmax()
    assert gdf.geometry[big].area == pytest.approx(scene.truth_map()[0].area, rel=0.01)
    # true square metres: compare against the geodesic area of the truth
    from fastsam_geo.coords import geodesic_areas
    assert gdf.area_m2[big] == pytest.approx(geodesic_areas(np.array(scene.truth_map()[:1]), scene.crs)[0],
                                             rel=0.01)


@pytest.mark.parametrize("tile,overlap", [(128, 0), (200, 16), (256, 100), (1024, 128)])
def test_any_tiling_gives_the_same_buildings(tmp_path, tile, overlap):
    scene = scene_for("utm", seed=3)
    path = write_scene(scene, tmp_path / "scene.tif")
    gdf = segment_raster(path, segmenter=ColourSegmenter(), tile_size=tile, overlap=overlap)
    assert_every_building_once(gdf, scene)


def test_courtyards_are_holes(tmp_path):
    scene = scene_for("utm", seed=11)
    path = write_scene(scene, tmp_path / "scene.tif")
    gdf = segment_raster(path, segmenter=ColourSegmenter(), tile_size=TILE, overlap=OVERLAP)
    holes_truth = sum(len(p.interiors) for p in scene.truth_map() if p.geom_type == "Polygon")
    holes_out = sum(len(p.interiors) for g in gdf.geometry for p in g.geoms)  # MultiPolygons
    assert holes_truth >= 3 and holes_out == holes_truth


def test_uint16_single_band_with_global_stretch(tmp_path):
    """A 16-bit one-band raster: stretched once for the whole raster, so tiles agree at seams."""
    scene = make_scene(600, 500, seed=5, cell=70, **CRSS["utm"])
    path = write_scene(scene, tmp_path / "pan16.tif", dtype="uint16", count=1)
    with TileReader(path) as reader:
        assert reader.stretch.lo is not None
        grid = plan_tiles(600, 500, 256, 64)
        a, b = grid.at(0, 0), grid.at(0, 1)
        ia, _ = reader.read(a)
        ib, _ = reader.read(b)
        ov = b.x, a.x + a.width  # overlapping columns
        np.testing.assert_array_equal(ia[:, ov[0]:ov[1]], ib[:, :ov[1] - ov[0]])
        assert ia.shape[2] == 3 and (ia[..., 0] == ia[..., 1]).all()  # grey replicated to RGB
    # with one band, building "colours" collapse to grey levels: segment by level
    gdf = segment_raster(path, segmenter=ColourSegmenter(background="mode"), tile_size=256, overlap=64)
    assert len(gdf) > 0


def test_alpha_band_masks_pixels(tmp_path):
    scene = scene_for("utm", seed=2)
    path = write_scene(scene, tmp_path / "alpha.tif", alpha=True)
    with rasterio.open(path) as src:
        assert src.count == 4
    gdf = segment_raster(path, segmenter=ColourSegmenter(), tile_size=TILE, overlap=OVERLAP)
    assert_every_building_once(gdf, scene)
    strip = scene.nodata[0]
    t = scene.transform
    x0, _ = t @ (strip[0], 0)
    x1, _ = t @ (strip[2], 0)
    from shapely.geometry import box
    strip_poly = box(x0, gdf.total_bounds[1] - 1, x1, gdf.total_bounds[3] + 1)
    assert gdf.geometry.intersection(strip_poly).area.sum() == pytest.approx(0, abs=1e-6)


def test_fully_nodata_tiles_are_never_sent_to_the_model(tmp_path):
    scene = make_scene(700, 300, seed=1, cell=60, nodata=((0, 0, 300, 300),), **CRSS["utm"])
    path = write_scene(scene, tmp_path / "half.tif")
    seg = ColourSegmenter()
    stats = RunStats()
    segment_raster(path, segmenter=seg, tile_size=128, overlap=0, stats=stats)
    grid = plan_tiles(700, 300, 128, 0)
    assert stats.tiles_skipped >= 6 and seg.calls == len(grid) - stats.tiles_skipped


def test_raster_smaller_than_a_tile(tmp_path):
    scene = make_scene(150, 90, seed=4, cell=45, **CRSS["webmerc"])
    path = write_scene(scene, tmp_path / "small.tif")
    gdf = segment_raster(path, segmenter=ColourSegmenter())
    assert_every_building_once(gdf, scene)


def test_empty_result_is_a_valid_layer_with_a_warning(tmp_path):
    scene = dataclasses.replace(make_scene(300, 300, **CRSS["utm"]), footprints=())  # no buildings
    path = write_scene(scene, tmp_path / "empty.tif")
    out = tmp_path / "out.gpkg"
    with pytest.warns(EmptyResultWarning, match="no objects"):
        gdf = segment_raster(path, segmenter=ColourSegmenter(), output=out)
    assert len(gdf) == 0 and list(gdf.columns) == ["score", "quality", "area_m2", "source", "model", "geometry"]
    import geopandas as gpd
    back = gpd.read_file(out)
    assert len(back) == 0 and {"score", "area_m2"} <= set(back.columns) and back.crs == scene.crs


def test_progress_reports_and_cancels(tmp_path):
    from fastsam_geo.errors import Cancelled
    scene = scene_for("utm")
    path = write_scene(scene, tmp_path / "scene.tif")
    seen = []
    segment_raster(path, segmenter=ColourSegmenter(), tile_size=TILE, overlap=OVERLAP,
                   progress=lambda p: seen.append((p.done, p.total)))
    assert seen[-1][0] == seen[-1][1] == len(plan_tiles(740, 620, TILE, OVERLAP))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    out = tmp_path / "cancelled.gpkg"
    with pytest.raises(Cancelled):
        segment_raster(path, segmenter=ColourSegmenter(), tile_size=TILE, overlap=OVERLAP,
                       progress=lambda p: False, output=out)
    assert not out.exists()


def test_float_imagery_with_nan_and_an_internal_mask(tmp_path):
    """Float32 data: NaN pixels and pixels under the GDAL mask band are both invalid."""
    import numpy as np
    from rasterio.windows import Window

    scene = scene_for("utm", seed=8)
    src_tif = write_scene(scene, tmp_path / "rgb.tif", nodata=None)
    out = tmp_path / "float.tif"
    with rasterio.open(src_tif) as src, rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        prof = src.profile | dict(dtype="float32", nodata=None)
        data = src.read().astype("float32") / 255.0
        data[:, :, 600:610] = np.nan  # NaN columns
        with rasterio.open(out, "w", **prof) as dst:
            dst.write(data)
            mask = np.full((scene.height, scene.width), 255, np.uint8)
            mask[:, 610:618] = 0  # masked columns
            dst.write_mask(mask)
    with TileReader(out, stretch="none") as reader:
        img, valid = reader.read(plan_tiles(740, 620, 1024, 0).tiles[0])
    assert not valid[:, 600:618].any() and valid[:, :600].all()
    assert (img[:, 600:618] == 0).all()
    with rasterio.open(out) as ds:
        assert ds.read(1, window=Window(0, 0, 2, 2)).dtype == np.float32


def test_bbox_segments_only_the_tiles_it_touches(tmp_path):
    from fastsam_geo.errors import InputError

    scene = scene_for("utm")
    path = write_scene(scene, tmp_path / "scene.tif")
    t = scene.transform
    # a box over pixels 20..120 x 20..100, given in lon/lat
    from fastsam_geo.coords import parse_crs, transform_xy
    (x0, x1), (y1, y0) = zip(t @ (20, 20), t @ (120, 100))
    lon, lat = transform_xy([x0, x1], [y0, y1], scene.crs, parse_crs(4326))
    seg = ColourSegmenter()
    stats = RunStats()
    gdf = segment_raster(path, segmenter=seg, tile_size=TILE, overlap=OVERLAP, stats=stats,
                         bbox=(lon[0], lat[0], lon[1], lat[1]), bbox_crs="EPSG:4326")
    # the box lies in tile (0, 0); only neighbours needed to finish objects reaching out of it
    # are read too, never the whole raster
    assert seg.calls == 1 + stats.extra["expanded_tiles"] < len(plan_tiles(740, 620, TILE, OVERLAP))
    from shapely.geometry import box
    area = box(x0, y0, x1, y1)
    truth = [p for p in scene.truth_map() if p.intersects(area)]
    counts, ious = match_truth(list(gdf.geometry), truth)
    # whole objects, not cut at the tile edge
    assert len(gdf) == len(truth) > 0 and set(counts) == {1} and min(ious) > 0.9

    # a box on the big building (larger than a tile) returns it whole
    bx, by = t @ (300, 300)
    big = segment_raster(path, segmenter=ColourSegmenter(), tile_size=TILE, overlap=OVERLAP,
                         bbox=(bx, by, bx + 1, by + 1))
    assert len(big) == 1 and big.geometry[0].symmetric_difference(scene.truth_map()[0]).area < 1e-6
    with pytest.raises(InputError, match="outside the raster"):
        segment_raster(path, segmenter=seg, bbox=(0, 0, 1, 1))


def test_threaded_and_sequential_runs_agree(tmp_path):
    from fastsam_geo.pipeline import VectorOptions, run
    scene = scene_for("utm", seed=12)
    path = write_scene(scene, tmp_path / "scene.tif")
    grid = plan_tiles(740, 620, TILE, OVERLAP, scene.transform)
    out = {}
    for threads in (True, False):
        with TileReader(path) as reader:
            geoms = [g for gs, _ in run(reader, grid, ColourSegmenter(), batch_size=3, options=VectorOptions(),
                                        threads=threads) for g in gs]
        out[threads] = sorted(g.wkb for g in geoms)
    assert out[True] == out[False] and len(out[True]) == len(scene.footprints)


def test_a_failing_segmenter_raises_instead_of_hanging(tmp_path):
    scene = scene_for("utm")
    path = write_scene(scene, tmp_path / "scene.tif")
    from fastsam_geo.synthetic import colour_of

    def broken(images):  # fails on the tiles showing building 6, every time (a batch is retried per tile)
        if any((im == np.asarray(colour_of(7), np.uint8)).all(-1).any() for im in images):
            raise RuntimeError("CUDA error: device-side assert")
        return ColourSegmenter()(images)

    out = tmp_path / "o.gpkg"
    with pytest.raises(RuntimeError, match="device-side assert"):
        segment_raster(path, segmenter=broken, tile_size=TILE, overlap=OVERLAP, batch_size=2, output=out)
    assert not out.exists()


class Doubling(ColourSegmenter):
    """True masks, plus each building again shifted a pixel at a lower score, plus its top-left
    quarter: the duplicates and nested parts a box NMS lets through."""

    def __call__(self, images):
        from fastsam_geo.types import Instances
        out = []
        for inst in super().__call__(images):
            boxes, crops, scores = list(inst.boxes), list(inst.crops), list(inst.scores)
            h = inst.shape[0]
            for (x0, y0, x1, y1), c, s in zip(inst.boxes.tolist(), inst.crops, inst.scores.tolist()):
                if y1 < h:  # the same roof, a pixel lower
                    boxes.append((x0, y0 + 1, x1, y1 + 1))
                    crops.append(c)
                    scores.append(s * 0.9)
                qh, qw = max(1, (y1 - y0) // 2), max(1, (x1 - x0) // 2)
                if c[:qh, :qw].all():  # a part of it
                    boxes.append((x0, y0, x0 + qw, y0 + qh))
                    crops.append(c[:qh, :qw])
                    scores.append(s * 0.8)
            out.append(Instances(np.asarray(boxes, np.int32), np.asarray(scores, np.float32), tuple(crops),
                                 inst.shape))
        return out


def overlapping_pairs(gdf, fraction=0.2):
    geoms = list(gdf.geometry)
    import shapely
    tree = shapely.STRtree(geoms)
    return [(i, j) for i, g in enumerate(geoms) for j in tree.query(g) if j > i
            and g.intersection(geoms[j]).area > fraction * min(g.area, geoms[j].area)]


def test_duplicate_and_nested_masks_are_suppressed_by_default(tmp_path):
    scene = scene_for("utm", seed=6)
    path = write_scene(scene, tmp_path / "scene.tif")
    gdf = segment_raster(path, segmenter=Doubling(), tile_size=TILE, overlap=OVERLAP)
    assert not overlapping_pairs(gdf)
    assert_every_building_once(gdf, scene, min_iou=0.85)
    kept = segment_raster(path, segmenter=Doubling(), tile_size=TILE, overlap=OVERLAP, dedup=False)
    assert len(overlapping_pairs(kept)) > len(scene.footprints)  # what --no-dedup keeps


def test_nodata_is_where_every_band_is_nodata_as_gdal_says(tmp_path):
    """nodata = 0 on a 3-band raster: a dark pixel (0, 12, 30) is data, (0, 0, 0) is not."""
    scene = make_scene(300, 200, seed=2, cell=60, **CRSS["utm"])
    path = write_scene(scene, tmp_path / "dark.tif", nodata=0)
    with rasterio.open(path, "r+") as ds:
        data = ds.read()
        data[:, 10:20, 10:20] = np.array([0, 12, 30], np.uint8)[:, None, None]  # dark shadow, one band 0
        data[:, 30:40, 10:20] = 0  # true nodata
        ds.write(data)
        gdal = ds.dataset_mask()
    with TileReader(path) as reader:
        img, valid = reader.read(plan_tiles(300, 200, 1024, 0).tiles[0])
    assert valid[10:20, 10:20].all() and (img[10:20, 10:20] == (0, 12, 30)).all()
    assert not valid[30:40, 10:20].any()
    assert (valid == (gdal > 0)).all()


def test_a_small_nodata_hole_in_a_building_stays_a_hole(tmp_path):
    scene = make_scene(300, 200, seed=3, cell=100, min_size=40, **CRSS["utm"])
    x0, y0, x1, y1 = (int(v) for v in scene.footprints[0].bounds)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    hole = (cx, cy, cx + 2, cy + 2)  # 4 px of nodata inside the first building
    assert scene.footprints[0].contains(shapely.box(*hole))
    path = write_scene(dataclasses.replace(scene, nodata=(hole,)), tmp_path / "hole.tif")
    gdf = segment_raster(path, segmenter=ColourSegmenter(), tile_size=TILE, overlap=OVERLAP)
    t = scene.transform
    (hx0, hx1), (hy1, hy0) = zip(t @ (hole[0], hole[1]), t @ (hole[2], hole[3]))
    nodata = shapely.box(hx0, hy0, hx1, hy1)
    assert gdf.geometry.intersection(nodata).area.sum() == pytest.approx(0, abs=1e-9)
    assert any(len(p.interiors) for g in gdf.geometry for p in g.geoms)
