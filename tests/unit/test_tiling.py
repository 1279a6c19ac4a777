import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from fastsam_geo.errors import InputError
from fastsam_geo.tiling import axis_starts, plan_tiles

sizes = st.integers(1, 3000)
tiles = st.integers(64, 1100)


@st.composite
def grids(draw):
    t = draw(tiles)
    o = draw(st.integers(0, t - 1))
    # up to ~15 tiles a side at the smallest stride: every edge case, bounded work
    limit = min(3000, t + 15 * (t - o))
    return draw(st.integers(1, limit)), draw(st.integers(1, limit)), t, o


@settings(max_examples=200, deadline=None)
@given(grids())
def test_windows_cover_raster_stay_inside_and_cores_partition(args):
    w, h, t, o = args
    g = plan_tiles(w, h, t, o)
    cover_x = np.zeros(w, int)
    cover_y = np.zeros(h, int)
    core_x = np.zeros(w, int)
    core_y = np.zeros(h, int)
    for tile in g:
        assert 0 <= tile.x and tile.x + tile.width <= w
        assert 0 <= tile.y and tile.y + tile.height <= h
        assert tile.width == min(t, w) and tile.height == min(t, h)
        x0, y0, x1, y1 = tile.core
        assert tile.x <= x0 < x1 <= tile.x + tile.width  # core inside its own window
        assert tile.y <= y0 < y1 <= tile.y + tile.height
        if tile.row == 0:
            cover_x[tile.x:tile.x + tile.width] += 1
            core_x[x0:x1] += 1
        if tile.col == 0:
            cover_y[tile.y:tile.y + tile.height] += 1
            core_y[y0:y1] += 1
    assert (cover_x >= 1).all() and (cover_y >= 1).all()
    assert (core_x == 1).all() and (core_y == 1).all()  # cores partition exactly


@settings(max_examples=300, deadline=None)
@given(sizes, grids())
def test_stride_and_last_tile_flush(length, args):
    _, _, t, o = args
    starts = axis_starts(length, t, o)
    assert starts[0] == 0
    if length <= t:
        assert starts == [0]
        return
    assert starts[-1] == length - t  # flush with the edge, never past it
    steps = np.diff(starts)
    assert (steps[:-1] == t - o).all()
    assert 0 < steps[-1] <= t - o


def test_small_raster_is_one_tile_of_its_own_size():
    g = plan_tiles(300, 200, 1024, 128)
    assert len(g) == 1
    (tile,) = g
    assert (tile.width, tile.height) == (300, 200) and tile.core == (0, 0, 300, 200)


def test_tile_transform_is_the_window_corner():
    t = Affine(0.5, 0, 1000, 0, -0.5, 2000)
    g = plan_tiles(3000, 3000, 1024, 128, t)
    tile = g.at(1, 2)
    assert tile.transform @ (0, 0) == t @ (tile.x, tile.y)


def test_intersecting_and_neighbours():
    g = plan_tiles(2500, 2500, 1024, 128)
    assert {(t.row, t.col) for t in g.intersecting((900, 10, 910, 20))} == {(0, 0), (0, 1)}
    assert len(list(g.neighbours(g.at(1, 1)))) == 8
    assert len(list(g.neighbours(g.at(0, 0)))) == 3


@pytest.mark.parametrize("t,o,match", [(512, 512, "smaller than the tile size"), (512, 600, "smaller"),
                                       (16, 0, ">= 32"), (512, -1, "non-negative")])
def test_bad_tiling_parameters(t, o, match):
    with pytest.raises(InputError, match=match):
        plan_tiles(1000, 1000, t, o)


@settings(max_examples=100, deadline=None)
@given(grids(), st.data())
def test_every_pixel_has_exactly_one_owner(args, data):
    w, h, t, o = args
    g = plan_tiles(w, h, t, o)
    x, y = data.draw(st.integers(0, w - 1)), data.draw(st.integers(0, h - 1))
    owners = list(g.owning((x, y, x + 1, y + 1)))
    assert len(owners) == 1
    x0, y0, x1, y1 = owners[0].core
    assert x0 <= x < x1 and y0 <= y < y1
    box = (max(0, x - 40), max(0, y - 40), min(w, x + 40), min(h, y + 40))
    expected = {(tl.row, tl.col) for tl in g if tl.core[0] < box[2] and box[0] < tl.core[2]
                and tl.core[1] < box[3] and box[1] < tl.core[3]}
    assert {(tl.row, tl.col) for tl in g.owning(box)} == expected
