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


# -- lazy planning: cost independent of the raster's size -----------------------------------------

def _planned(width, height, *args):
    import time
    import tracemalloc

    tracemalloc.start()
    t0 = time.perf_counter()
    grid = plan_tiles(width, height, *args)
    _ = (len(grid), grid.tiles[-1], grid.xs[-1], grid.n_rows)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return grid, seconds, peak


@pytest.mark.parametrize("side", [300, 100_000, 2_530_000])
def test_planning_costs_the_same_for_any_raster_size(side):
    grid, seconds, peak = _planned(side, side, 1024, 128)
    assert seconds < 0.01 and peak < 64 << 10, (seconds, peak)  # eager planning: ~8e6 Tiles, gigabytes
    n = 1 if side <= 1024 else -(-(side - 1024) // 896) + 1
    assert len(grid) == n * n and len(grid.xs) == n and grid.tiles[-1].box[2:] == (side, side)


def test_sizes_no_run_could_finish_are_refused_naming_them():
    from fastsam_geo.tiling import MAX_PIXELS

    with pytest.raises(InputError, match=r"2147483647 x 2147483647 pixels \(4.61e\+18\)"):
        plan_tiles(2147483647, 2147483647)
    with pytest.raises(InputError, match="larger than"):
        plan_tiles(MAX_PIXELS // 10 + 1, 10)
    assert len(plan_tiles(MAX_PIXELS // 10, 10, 1024, 0)) > 0  # the limit itself is planned
    with pytest.raises(InputError, match="positive"):
        plan_tiles(0, 10)


def test_lazy_tiles_are_their_row_and_column():
    g = plan_tiles(5000, 3000, 1024, 128, Affine(0.5, 0, 10, 0, -0.5, 20))
    assert [g.tiles[i] for i in range(len(g))] == list(g) == [g.at(r, c) for r in range(g.n_rows)
                                                              for c in range(g.n_cols)]
    assert g.tiles[-1] == g.at(g.n_rows - 1, g.n_cols - 1) and g.tiles[1:3] == [g.at(0, 1), g.at(0, 2)]
    assert all(g.index(t) == i for i, t in enumerate(g))
    for bad in (len(g), -len(g) - 1):
        with pytest.raises(IndexError):
            g.tiles[bad]
    with pytest.raises(IndexError):
        g.at(g.n_rows, 0)


def test_a_held_tile_is_the_same_object_and_a_grid_pickles():
    import pickle

    g = plan_tiles(5000, 3000, 1024, 128)
    t = g.at(1, 2)
    assert g.tiles[g.index(t)] is t and any(n is g.at(1, 1) for n in g.neighbours(t))
    assert t in list(g.intersecting(t.box))
    back = pickle.loads(pickle.dumps(g))
    assert back == g and list(back) == list(g)
