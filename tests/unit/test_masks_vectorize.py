import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from fastsam_geo.errors import SegmenterError
from fastsam_geo.masks import crop_window, featureless, to_instances
from fastsam_geo.types import Instances, MaskSet, boxes_from_masks
from fastsam_geo.vectorize import mask_to_geometry


def test_boxes_from_masks_are_tight_and_exclusive():
    m = np.zeros((2, 10, 12), bool)
    m[0, 2:5, 3:7] = True
    assert boxes_from_masks(m).tolist() == [[3, 2, 7, 5], [0, 0, 0, 0]]


def test_masked_pixels_never_belong_to_an_object():
    m = np.zeros((1, 20, 20), bool)
    m[0, 5:15, 5:15] = True  # a segmenter that ignores the nodata strip
    valid = np.ones((20, 20), bool)
    valid[:, 10:] = False
    inst = to_instances(MaskSet(m, [0.5]), (20, 20), valid)
    assert inst.boxes.tolist() == [[5, 5, 10, 15]]
    assert inst.crops[0].all() and inst.crops[0].shape == (10, 5)


def test_masks_fully_in_nodata_or_tiny_are_dropped():
    m = np.zeros((2, 20, 20), bool)
    m[0, 0:5, 0:5] = True
    m[1, 10:12, 10:12] = True
    valid = np.ones((20, 20), bool)
    valid[:8, :8] = False
    assert len(to_instances(MaskSet(m, [0.5, 0.5]), (20, 20), valid, min_area=5)) == 0


def test_wrong_resolution_masks_are_a_segmenter_error():
    with pytest.raises(SegmenterError, match="expected the tile's native"):
        to_instances(MaskSet(np.zeros((1, 10, 10), bool), [1.0]), (20, 20))
    with pytest.raises(SegmenterError, match="2 masks but 1 scores"):
        MaskSet(np.zeros((2, 10, 10), bool), [1.0])
    with pytest.raises(SegmenterError, match="must return MaskSet"):
        to_instances(np.zeros((1, 10, 10)), (10, 10))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 40), st.integers(0, 40))
def test_instances_round_trip_through_dense(w, h, x, y):
    m = np.zeros((1, 64, 64), bool)
    m[0, y:y + h, x:x + w] = True
    inst = to_instances(MaskSet(m, [0.7]), (64, 64))
    assert (inst.dense().masks == m).all()
    assert isinstance(inst, Instances) and inst.areas.tolist() == [min(h, 64 - y) * min(w, 64 - x)]


def test_crop_window_pads_outside_the_box():
    crop = np.ones((2, 2), bool)
    out = crop_window(crop, (5, 5, 7, 7), (4, 4, 8, 8))
    assert out.sum() == 4 and out[1:3, 1:3].all()


T = Affine(0.5, 0, 1000.0, 0, -0.5, 2000.0)


def test_polygons_are_in_map_coordinates_not_pixels():
    m = np.zeros((10, 10), bool)
    m[2:6, 4:8] = True
    g = mask_to_geometry(m, T)
    assert g.equals(box(1002.0, 1997.0, 1004.0, 1999.0))


def test_courtyards_stay_holes_and_speckle_is_filled():
    m = np.zeros((60, 60), bool)
    m[5:55, 5:55] = True
    m[20:40, 20:40] = False  # courtyard: 400 px
    m[10, 10] = False  # speckle: 1 px
    g = mask_to_geometry(m, Affine.identity())
    assert len(g.interiors) == 1
    assert g.area == 50 * 50 - 400


def test_separate_parts_make_a_multipolygon_and_crumbs_are_dropped():
    m = np.zeros((40, 40), bool)
    m[0:10, 0:10] = True
    m[20:30, 20:30] = True
    m[38, 38] = True
    g = mask_to_geometry(m, Affine.identity())
    assert g.geom_type == "MultiPolygon" and len(g.geoms) == 2 and g.is_valid


def test_rotated_transform_is_honoured():
    rot = Affine.rotation(30) @ Affine.scale(2, -2)
    m = np.ones((3, 3), bool)
    g = mask_to_geometry(m, rot)
    expected = shapely.affinity.affine_transform(box(0, 0, 3, 3), (rot.a, rot.b, rot.d, rot.e, rot.c, rot.f))
    assert g.area == pytest.approx(36.0)
    assert g.symmetric_difference(expected).area < 1e-9


def test_simplify_reduces_vertices():
    yy, xx = np.mgrid[:200, :200]
    disc = (xx - 100) ** 2 + (yy - 100) ** 2 < 80 ** 2
    exact = mask_to_geometry(disc, Affine.identity())
    simple = mask_to_geometry(disc, Affine.identity(), simplify=1.0)
    assert len(simple.exterior.coords) < len(exact.exterior.coords) / 3
    assert simple.symmetric_difference(exact).area < 0.02 * exact.area


def _rasterio_outlines(mask, min_component, min_hole):
    """The reference: GDAL's polygonizer (rasterio ``shapes``, 4-connected) on the mask without
    its crumbs, interior rings under the hole limit removed."""
    import cv2
    from rasterio import features
    from shapely.geometry import Polygon, shape

    m = np.pad(mask, 1).astype(np.uint8)
    _, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=4)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = areas >= max(min_component, 0.05 * areas.max())
    keep[areas.argmax()] = True
    m = np.concatenate([[False], keep])[lab]
    limit = max(min_hole, 0.01 * m.sum()) if min_hole > 0 else 0
    polys = [shape(g) for g, _ in features.shapes(m.view(np.uint8), mask=m, connectivity=4,
                                                  transform=Affine.translation(-1, -1))]
    return shapely.union_all([Polygon(p.exterior, [r for r in p.interiors if Polygon(r).area >= limit])
                              for p in polys])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 24), st.integers(1, 24), st.floats(0.2, 0.95), st.booleans(),
       st.sampled_from([(1, 0), (16, 9), (1, 9), (4, 3)]), st.integers(0, 2**32 - 1))
def test_outlines_are_exactly_the_pixels_rasterio_traces(h, w, density, smooth, limits, seed):
    """Any mask (speckle, pinches where parts touch at a corner, islands in holes) traces to
    the same point set as GDAL's polygonizer, valid."""
    import cv2

    g = np.random.default_rng(seed)
    mask = g.random((h, w)) < density
    if smooth:
        mask = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0) > 0.5
    ours = mask_to_geometry(mask, Affine.identity(), min_component=limits[0], min_hole=limits[1])
    if not mask.any():
        assert ours is None
        return
    ref = _rasterio_outlines(mask, *limits)
    assert ours.is_valid
    assert ours.area == pytest.approx(ref.area, abs=1e-9)
    assert ours.symmetric_difference(ref).area < 1e-9


def test_island_in_a_filled_hole_is_covered_not_doubled():
    m = np.zeros((30, 30), bool)
    m[2:28, 2:28] = True
    m[10:15, 10:15] = False  # a 25 px hole (< 1 % of ~650 px is 6.5, so min_hole=30 fills it)
    m[12, 12] = True  # an island in it
    g = mask_to_geometry(m, Affine.identity(), min_component=1, min_hole=30)
    assert g.geom_type == "Polygon" and not g.interiors and g.area == 26 * 26


def test_merge_overlapping_fuses_parts_and_duplicates_but_not_neighbours():
    from fastsam_geo.masks import merge_overlapping
    m = np.zeros((4, 40, 40), bool)
    m[0, 5:20, 5:30] = True   # a building's top part
    m[1, 15:35, 5:30] = True  # its bottom part, overlapping the top (IoU 0.17) -> not fused at 0.5
    m[2, 6:19, 6:29] = True   # a near-duplicate of the top part, inside it -> fused
    m[3, 5:20, 32:38] = True  # a neighbour, touching nothing -> kept
    inst = to_instances(MaskSet(m, [0.9, 0.8, 0.7, 0.6]), (40, 40))
    out = merge_overlapping(inst, 0.5)
    assert len(out) == 3 and out.scores.tolist() == pytest.approx([0.9, 0.8, 0.6])
    fused = merge_overlapping(inst, 0.15)
    assert len(fused) == 2 and fused.areas[0] == (m[0] | m[1] | m[2]).sum()


def test_cache_encoding_round_trips():
    from fastsam_geo.cache import decode, encode
    rng = np.random.default_rng(0)
    m = rng.random((5, 30, 40)) > 0.6
    inst = to_instances(MaskSet(m, rng.random(5)), (30, 40))
    back = decode(encode(inst))
    assert (back.dense().masks == inst.dense().masks).all() and back.shape == inst.shape
    assert (back.scores == inst.scores).all()
    empty = decode(encode(Instances.empty((8, 9))))
    assert len(empty) == 0 and empty.shape == (8, 9)


def test_memory_store_is_bounded_by_bytes_least_recently_used_out():
    from fastsam_geo.cache import MemoryStore, instances_nbytes
    rng = np.random.default_rng(1)
    tiles = [to_instances(MaskSet(rng.random((3, 64, 64)) > 0.5, rng.random(3)), (64, 64)) for _ in range(5)]
    one = max(instances_nbytes(t) for t in tiles)
    store = MemoryStore(max_bytes=3 * one)
    for i, t in enumerate(tiles):
        store.put(i, t)
        if i == 2:
            store.get(0)  # 0 becomes the most recently used: 1 and 2 go first
    assert store.nbytes <= 3 * one and len(store) == 3
    assert store.get(1) is None and store.get(2) is None and store.get(0) is tiles[0] and store.get(4) is tiles[4]
    nothing = MemoryStore(max_bytes=0)
    nothing.put(0, tiles[0])
    assert len(nothing) == 0 and nothing.nbytes == 0


@settings(max_examples=150, deadline=None)
@given(st.integers(8, 60), st.integers(8, 60), st.floats(0.3, 0.9), st.integers(1, 5), st.integers(0, 2**16),
       st.sampled_from([(0, 0), (16, 9), (4, 30)]))
def test_a_long_object_traced_part_by_part_is_the_one_its_mask_gives(h, w, density, n_parts, seed, limits):
    """An object joined from overlapping tile views (parts) traces to the same polygon whether
    its mask is materialised (dense) or its parts are traced and united (the path for objects
    too long for one array). Only speckle may differ: united outlines cannot tell two parts
    touching at a corner from one, so a crumb touching a part diagonally may stay."""
    import cv2

    from fastsam_geo.types import MergedObject
    from fastsam_geo.vectorize import object_geometry
    g = np.random.default_rng(seed)
    mask = cv2.blur((g.random((h, w)) < density).astype(np.float32), (3, 3)) > 0.5
    if not mask.any():
        mask[h // 2, w // 2] = True
    parts = []
    for _ in range(n_parts):  # overlapping windows, like tiles' views, covering the mask
        x0, y0 = int(g.integers(0, w // 2)), int(g.integers(0, h // 2))
        parts.append(((x0, y0, w, h), mask[y0:, x0:]))
    parts.append(((0, 0, w, h // 2 + 1), mask[:h // 2 + 1]))
    parts.append(((0, h // 2, w, h), mask[h // 2:]))
    obj = MergedObject((0, 0, w, h), tuple(parts), 0.9)
    t = Affine(0.5, 0, 300000, 0, -0.5, 5000000)
    mc, mh = limits
    dense = object_geometry(obj, t, min_component=mc, min_hole=mh)
    by_parts = object_geometry(obj, t, min_component=mc, min_hole=mh, dense_limit=0)
    assert by_parts.is_valid and dense.is_valid
    stats = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=4)[2]
    areas = stats[1:, cv2.CC_STAT_AREA]
    crumbs = int(areas[areas < max(mc, 0.05 * areas.max())].sum())
    holes = ~mask
    hstats = cv2.connectedComponentsWithStats(np.pad(holes, 1).view(np.uint8), connectivity=8)[2]
    small_holes = int(sum(a for a in hstats[2:, cv2.CC_STAT_AREA] if a < max(mh, 0.01 * mask.sum())))
    diff = dense.symmetric_difference(by_parts).area / 0.25  # in pixels
    assert diff <= crumbs + small_holes + 1e-6
    if crumbs == 0:
        assert diff < 1e-6


def test_suppress_duplicates_keeps_one_mask_per_object():
    from fastsam_geo.masks import suppress_duplicates
    m = np.zeros((5, 40, 60), bool)
    m[0, 5:20, 5:20] = True  # a roof
    m[1, 6:21, 5:20] = True  # the same roof again, shifted a pixel (IoU 0.88), lower score
    m[2, 8:14, 8:14] = True  # a part of it (inside), higher score than the roof
    m[3, 5:20, 20:35] = True  # the neighbour touching it: kept
    m[4, 25:35, 40:55] = True  # alone: kept
    inst = to_instances(MaskSet(m, [0.8, 0.6, 0.9, 0.7, 0.5]), (40, 60))
    out = suppress_duplicates(inst)
    # the part outscores the roof, so it stays and the roof (containing it) goes; the shifted
    # copy is then compared with the part too (contains it) and goes
    assert out.boxes.tolist() == [[8, 8, 14, 14], [20, 5, 35, 20], [40, 25, 55, 35]]
    assert out.scores.tolist() == pytest.approx([0.9, 0.7, 0.5])
    m[2] = False  # without the part: the roof beats its shifted copy
    out = suppress_duplicates(to_instances(MaskSet(m, [0.8, 0.6, 0.9, 0.7, 0.5]), (40, 60)))
    assert out.boxes.tolist() == [[5, 5, 20, 20], [20, 5, 35, 20], [40, 25, 55, 35]]


def test_a_hole_over_nodata_is_never_filled():
    """A roof with a 2x2 nodata hole: small holes are filled (speckle), but never over masked
    pixels, which must not end up inside a polygon."""
    mask = np.ones((20, 20), bool)
    mask[8:10, 8:10] = False  # 4 px: below min_hole
    mask[3, 3] = False  # 1 px speckle hole over valid pixels
    invalid = np.zeros((20, 20), bool)
    invalid[8:10, 8:10] = True
    g = mask_to_geometry(mask, Affine.identity(), invalid=invalid)
    assert len(g.interiors) == 1 and g.area == 400 - 4
    assert mask_to_geometry(mask, Affine.identity()).area == 400  # without nodata both are filled


def test_a_long_diagonal_object_is_traced_without_a_bounding_box_sized_array():
    """A road joined from 60 tile views along a diagonal 12,000 px long: its box holds 144 MP
    (a dense mask would be 144 MB); tracing, area and point tests stay within a few MB."""
    import tracemalloc

    from fastsam_geo.types import MergedObject
    from fastsam_geo.vectorize import object_geometry
    step, side = 200, 260
    crop = np.zeros((side, side), bool)
    for k in range(side):  # a 12-px-wide diagonal band inside each view
        crop[k, max(0, k - 6):k + 6] = True
    parts = tuple(((i * step, i * step, i * step + side, i * step + side), crop) for i in range(60))
    obj = MergedObject((0, 0, 59 * step + side, 59 * step + side), parts, 0.9)
    tracemalloc.start()
    g = object_geometry(obj, Affine.identity())
    area = obj.area
    inside = obj.contains(5000.5, 5000.5)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert g.is_valid and g.geom_type == "Polygon" and g.area == area and inside
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB"


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**16), st.floats(0.5, 30), st.integers(0, 8), st.lists(st.tuples(
    st.integers(0, 39), st.integers(0, 29), st.integers(1, 40), st.integers(1, 30)), min_size=1, max_size=6))
def test_featureless_is_the_std_of_the_box_and_ring(seed, min_std, ring, raw_boxes):
    """For any image and boxes: flagged exactly when the pixels in the box grown by ``ring``
    (clipped to the tile) have a standard deviation under ``min_std`` (the integral images agree
    with numpy on the window)."""
    rng = np.random.default_rng(seed)
    grey = np.clip(rng.normal(rng.uniform(0, 255), rng.uniform(0, 12), (30, 40)), 0, 255).astype(np.uint8)
    boxes = [(x, y, min(40, x + w), min(30, y + h)) for x, y, w, h in raw_boxes]
    got = featureless(np.asarray(boxes), grey, min_std, ring)
    for flag, (x0, y0, x1, y1) in zip(got, boxes):
        sd = grey[max(0, y0 - ring):y1 + ring, max(0, x0 - ring):x1 + ring].astype(float).std()
        if abs(sd - min_std) > 1e-6:
            assert flag == (sd < min_std), (sd, min_std)


def test_a_uniform_roof_is_not_featureless_thanks_to_its_ring():
    """A flat roof: its box alone is one tone, but the ring reaches the ground around it."""
    grey = np.full((100, 100), 90, np.uint8)
    grey[30:60, 30:70] = 220  # the roof
    roof = np.array([(30, 30, 70, 60)])
    assert not featureless(roof, grey)[0]
    assert featureless(roof, grey, ring=0)[0]
    assert not featureless(roof, grey, min_std=0)[0]  # 0: the filter is off
