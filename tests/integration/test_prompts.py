"""Prompts in map coordinates select whole merged objects; segment once, prompt many."""

import warnings

import numpy as np
import pytest
import shapely

from conftest import CountingSegmenter
from fastsam_geo import segment_raster
from fastsam_geo.coords import parse_crs, transform_xy
from fastsam_geo.errors import CRSError, PromptError
from fastsam_geo.prompts import BoxPrompt, PointPrompt, TextPrompt
from fastsam_geo.session import SegmentedRaster
from fastsam_geo.synthetic import ColourSegmenter, make_scene, write_scene
from fastsam_geo.tiling import plan_tiles
from fastsam_geo.types import Instances

TILE, OVERLAP = 256, 32
UTM = dict(crs="EPSG:32633", origin=(500000.0, 4500000.0), res=0.3)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    sc = make_scene(740, 620, seed=7, cell=62, big=(190, 150, 490, 430), **UTM)
    return sc, write_scene(sc, tmp_path_factory.mktemp("prompts") / "scene.tif")


def to(crs, xs, ys, src):
    return transform_xy(np.asarray(xs), np.asarray(ys), src, parse_crs(crs))


def test_points_in_4326_and_boxes_in_3857_on_a_utm_raster(scene):
    sc, tif = scene
    truth = sc.truth_map()
    grid = plan_tiles(sc.width, sc.height, TILE, OVERLAP)

    def crossing(k):
        b = sc.footprints[k].bounds
        return len(list(grid.intersecting(tuple(int(v) for v in b)))) > 1

    seam = [k for k in range(1, len(truth)) if crossing(k)]
    picks = [0, *seam[:6]]  # the big building (larger than a tile) + six cut by seams
    assert len(picks) == 7
    pts = [truth[k].representative_point() for k in picks]
    lon, lat = to("EPSG:4326", [p.x for p in pts], [p.y for p in pts], sc.crs)
    box_picks = [0, *seam[6:9]]
    prompts = [PointPrompt(x, y, crs="EPSG:4326") for x, y in zip(lon, lat)]
    for k in box_picks:
        x0, y0, x1, y1 = truth[k].bounds
        mx, my = to("EPSG:3857", [x0, x1], [y0, y1], sc.crs)
        prompts.append(BoxPrompt(mx[0], my[0], mx[1], my[1], crs="EPSG:3857"))
    seg = CountingSegmenter()
    gdf = segment_raster(tif, segmenter=seg, tile_size=TILE, overlap=OVERLAP, prompts=prompts)
    assert list(gdf.prompt_id) == list(range(11))
    assert list(gdf.prompt_type) == ["point"] * 7 + ["box"] * 4
    assert gdf.found.all() and gdf.crs == sc.crs
    for row, k in zip(gdf.itertuples(), picks + box_picks):
        t = truth[k]
        iou = t.intersection(row.geometry).area / t.union(row.geometry).area
        assert iou >= 0.9, (row.prompt_id, k, iou)


def test_only_the_tiles_a_prompt_touches_are_segmented_then_cached(scene):
    sc, tif = scene
    seg = CountingSegmenter()
    sr = SegmentedRaster(tif, segmenter=seg, tile_size=TILE, overlap=OVERLAP)
    t = sc.truth_map()[5].representative_point()
    first = sr.prompt([PointPrompt(t.x, t.y)])
    n_tiles = len(sr.grid)
    assert first.found.all() and 0 < seg.images < n_tiles / 2
    before = seg.images
    again = sr.prompt([PointPrompt(t.x, t.y)])
    assert seg.images == before  # answered from the cache: no network time
    assert again.geometry[0].equals(first.geometry[0])


def test_one_shot_runs_keep_no_tile_results_and_sessions_keep_a_bounded_amount(scene):
    _, tif = scene
    once = SegmentedRaster(tif, segmenter=CountingSegmenter(), tile_size=TILE, overlap=OVERLAP, cache=False)
    whole = once.segment()
    assert len(whole) and len(once.store) == 0  # memory does not grow with the raster's area
    every = SegmentedRaster(tif, segmenter=CountingSegmenter(), tile_size=TILE, overlap=OVERLAP)
    every.segment()
    assert len(every.store) == len(every.grid)  # the default bound (256 MB) holds this small raster
    kept = SegmentedRaster(tif, segmenter=CountingSegmenter(), tile_size=TILE, overlap=OVERLAP)
    kept.store.max_bytes = 3 * every.store.nbytes // len(every.store)  # about three tiles' worth
    again = kept.segment()
    assert again.geometry.union_all().equals(whole.geometry.union_all())
    assert 0 < len(kept.store) < len(kept.grid) and kept.store.nbytes <= kept.store.max_bytes


def test_disk_cache_answers_a_new_process_without_the_model(scene, tmp_path):
    sc, tif = scene
    sr = SegmentedRaster(tif, segmenter="fastsam_geo.synthetic:ColourSegmenter", tile_size=TILE,
                         overlap=OVERLAP, cache=tmp_path)
    full = sr.segment()
    assert len(full) == len(sc.footprints) and len(sr.store) == len(sr.grid)

    class Refuse:
        cache_key = None

        def __call__(self, images):
            raise AssertionError("the model must not run: everything is cached")

    # same spec -> same cache key; the segmenter is never even loaded
    sr2 = SegmentedRaster(tif, segmenter="fastsam_geo.synthetic:ColourSegmenter", tile_size=TILE,
                          overlap=OVERLAP, cache=tmp_path)
    sr2._seg = Refuse()
    pts = [p.representative_point() for p in sc.truth_map()[:20]]
    gdf = sr2.prompt([PointPrompt(p.x, p.y) for p in pts])
    assert gdf.found.all() and len(gdf) == 20
    # a different tiling is a different cache entry, never stale masks
    sr3 = SegmentedRaster(tif, segmenter="fastsam_geo.synthetic:ColourSegmenter", tile_size=200,
                          overlap=OVERLAP, cache=tmp_path)
    assert len(sr3.store) == 0


class WithHulls(ColourSegmenter):
    """True masks plus, for each building, its bounding rectangle as a second, larger mask
    (as FastSAM returns nested parts: a roof section inside a building inside a compound)."""

    def __call__(self, images):
        out = []
        for inst in super().__call__(images):
            boxes = np.concatenate([inst.boxes, inst.boxes])
            crops = inst.crops + tuple(np.ones_like(c) for c in inst.crops)
            out.append(Instances(boxes, np.r_[inst.scores, inst.scores * 0.5], crops, inst.shape))
        return out


def test_background_points_remove_masks(scene):
    sc, tif = scene
    big = sc.truth_map()[0]  # an L-shape: its bounding rectangle also covers the notch
    rect = shapely.box(*big.bounds)
    notch = rect.difference(big).representative_point()
    inside = big.representative_point()
    # nested masks are FastSAM's everything mode: keep them (dedup=False)
    sr = SegmentedRaster(tif, segmenter=WithHulls(), tile_size=1024, overlap=OVERLAP, dedup=False)
    both = sr.prompt([PointPrompt(inside.x, inside.y)]).geometry[0]
    assert both.symmetric_difference(rect).area < 1e-6  # union of the building and its rectangle
    grouped = sr.prompt([PointPrompt(inside.x, inside.y, group="a"), PointPrompt(notch.x, notch.y, label=0, group="a")])
    assert grouped.found[0] and grouped.geometry[0].symmetric_difference(big).area < 1e-6  # rectangle removed
    # an ungrouped background point applies to every point prompt of the call
    other = sc.truth_map()[4].representative_point()
    glob = sr.prompt([PointPrompt(inside.x, inside.y), PointPrompt(notch.x, notch.y, label=0),
                      PointPrompt(other.x, other.y)])
    assert list(glob.prompt_id) == [0, 2]
    assert glob.geometry[0].symmetric_difference(big).area < 1e-6
    # a group whose background point hits the building itself selects nothing
    none = sr.prompt([PointPrompt(inside.x, inside.y, group=1), PointPrompt(inside.x + 0.3, inside.y, label=0,
                                                                             group=1)])
    assert not none.found[0]


def test_a_prompt_that_finds_nothing_keeps_its_row(scene):
    sc, tif = scene
    t = sc.transform
    empty_x, empty_y = t @ (2, 2)  # background corner
    b = sc.truth_map()[3].representative_point()
    with pytest.warns(UserWarning, match=r"^1 of 2 prompt\(s\) selected no object \(prompt_id 0\)"):
        gdf = segment_raster(tif, segmenter=ColourSegmenter(), tile_size=TILE, overlap=OVERLAP,
                             prompts=[PointPrompt(empty_x, empty_y), PointPrompt(b.x, b.y)])
    assert list(gdf.found) == [False, True] and gdf.geometry[0] is None and np.isnan(gdf.score[0])


@pytest.mark.parametrize("prompt,match", [
    (PointPrompt(0.0, 0.0), r"prompt 0 \(point \(0, 0\)\) lies outside the raster, whose bounds are"),
    (BoxPrompt(1.0, 1.0, 2.0, 2.0, crs="EPSG:4326"), r"prompt 0 \(box .* in EPSG:4326\) lies outside"),
])
def test_prompt_outside_the_raster(scene, prompt, match):
    _, tif = scene
    with pytest.raises(PromptError, match=match):
        segment_raster(tif, segmenter=ColourSegmenter(), prompts=[prompt])


def test_bad_prompts():
    with pytest.raises(CRSError, match="unknown CRS"):
        parse_crs("EPSG:999999")
    with pytest.raises(PromptError, match="label must be 1"):
        PointPrompt(1, 2, label=2)
    with pytest.raises(PromptError, match="min < max"):
        BoxPrompt(3, 0, 1, 1)
    with pytest.raises(PromptError, match="empty"):
        TextPrompt("  ")


def test_unknown_prompt_crs(scene):
    _, tif = scene
    with pytest.raises(CRSError, match="unknown CRS 'EPSG:999999'"):
        segment_raster(tif, segmenter=ColourSegmenter(), prompts=[PointPrompt(1, 2, crs="EPSG:999999")])


def test_box_larger_than_a_tile_picks_the_big_building(scene):
    sc, tif = scene
    big = sc.truth_map()[0]
    gdf = segment_raster(tif, segmenter=ColourSegmenter(), tile_size=TILE, overlap=OVERLAP,
                         prompts=[BoxPrompt(*big.bounds)])
    assert gdf.geometry[0].symmetric_difference(big).area < 1e-6
    assert shapely.get_num_interior_rings(gdf.geometry[0]) == 0


def test_thousands_of_points_in_one_call_answer_as_one_at_a_time(scene):
    """One call with 3,000 clicks (a GeoPackage of points): the same objects as asking one by
    one, and the warning for the clicks on bare ground is one short line, not every id."""
    sc, tif = scene
    sr = SegmentedRaster(tif, segmenter=ColourSegmenter(), tile_size=TILE, overlap=OVERLAP)
    g = np.random.default_rng(4)
    xs, ys = sc.transform * (g.uniform(0, sc.width, 3000), g.uniform(0, sc.height, 3000))
    pts = [PointPrompt(float(x), float(y)) for x, y in zip(xs, ys)]
    with pytest.warns(UserWarning) as w:
        many = sr.prompt(pts)
    msg = str(w[-1].message)
    assert len(msg) < 200 and "more" in msg and "\n" not in msg, msg
    assert len(many) == 3000 and 300 < many.found.sum() < 2700
    for k in g.choice(3000, 40, replace=False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = sr.prompt([pts[k]])
        assert one.found[0] == many.found[k]
        if one.found[0]:
            assert one.geometry[0].equals(many.geometry[k])


@pytest.mark.parametrize("prompt_crs", ["EPSG:4326", "EPSG:3857"])
def test_a_click_across_the_antimeridian_lands_on_the_raster(tmp_path, prompt_crs):
    """A geographic raster spanning 179.9°E to 180.1°E (longitudes past 180, as Fiji's and
    Chukotka's are stored): a click at -179.95° (or its Web Mercator x) is on it."""
    sc = make_scene(400, 300, seed=2, cell=60, crs="EPSG:4326", origin=(179.9, -17.0), res=0.0005)
    tif = write_scene(sc, tmp_path / "fiji.tif")
    building = next(p for p in sc.truth_map() if p.centroid.x > 180.01)
    lon, lat = building.representative_point().x - 360, building.representative_point().y
    x, y = to(prompt_crs, [lon], [lat], parse_crs(4326))
    gdf = segment_raster(tif, segmenter=ColourSegmenter(), tile_size=256, overlap=32,
                         prompts=[PointPrompt(float(x[0]), float(y[0]), crs=prompt_crs)])
    assert gdf.found[0] and gdf.geometry[0].intersection(building).area > 0.9 * building.area


class RightBlind:
    """The true masks, except every object whose box starts in a tile's right third: that tile
    misses it, while the tile to its right (overlapping) sees it. Real networks miss objects at
    one tile's border that the next tile sees."""

    batch_size = 4

    def __init__(self):
        self.inner = ColourSegmenter()

    def __call__(self, images):
        out = []
        for img, inst in zip(images, self.inner(images)):
            keep = [k for k in range(len(inst)) if inst.boxes[k][0] < img.shape[1] * 2 // 3]
            out.append(Instances(inst.boxes[keep], inst.scores[keep], tuple(inst.crops[k] for k in keep),
                                 inst.shape))
        return out


def test_a_click_finds_every_object_a_whole_run_writes(tmp_path):
    """A point selects among the objects a whole run writes: also one the tile owning the click
    missed and its neighbour saw in their overlap (before, only owning tiles were segmented)."""
    sc = make_scene(700, 300, seed=12, cell=50, **UTM)
    tif = write_scene(sc, tmp_path / "s.tif")
    kw = dict(tile_size=TILE, overlap=96, gsd="native")
    whole = segment_raster(tif, segmenter=RightBlind(), **kw)
    clicks = [PointPrompt(p.x, p.y) for p in whole.geometry.representative_point()]
    for k, click in enumerate(clicks):  # one at a time: each click segments only what it needs
        got = segment_raster(tif, segmenter=RightBlind(), prompts=[click], **kw)
        assert got.found[0], f"object {k} at {click} of the whole run not found"
        g, w = got.geometry[0], whole.geometry[k]
        assert g.intersection(w).area / g.union(w).area > 0.99
