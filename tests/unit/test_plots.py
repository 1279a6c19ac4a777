"""fastsam_geo.plots: what each figure draws, where, in which colours, with which counts.

Rendered with matplotlib's Agg backend on small seeded scenes (known buildings at known map
coordinates), so a figure whose outlines are offset from the image, whose legend counts
differ from evaluate()'s, or whose tile grid is not plan_tiles' fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import matplotlib
import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry import box

from fastsam_geo import BoxPrompt, PointPrompt, evaluate, plan_tiles, plots
from fastsam_geo.errors import InputError
from fastsam_geo.synthetic import Scene, colour_of, make_scene, write_scene

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.colors import to_rgba

UTM = CRS.from_epsg(32633)
EXACT = dict(rtol=0, atol=1e-6)  # map units: a relative tolerance would forgive 5 m at x = 500 km


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory):
    scene = make_scene(700, 600, seed=3, cell=90, crs="EPSG:32633", origin=(500000.0, 4500000.0), res=0.3)
    path = tmp_path_factory.mktemp("plots") / "scene.tif"
    write_scene(scene, path)
    return scene, path


def truth_frame(scene: Scene) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(geometry=scene.truth_map(), crs=scene.crs)


def collection(ax, gid: str):
    found = [c for c in ax.collections if c.get_gid() == gid]
    assert len(found) == 1, f"expected one collection {gid!r}, got {[c.get_gid() for c in ax.collections]}"
    return found[0]


def n_paths(ax, gid: str) -> int:
    return sum(len(c.get_paths()) for c in ax.collections if c.get_gid() == gid)


def test_import_does_not_load_matplotlib_or_folium():
    code = ("import sys, fastsam_geo, fastsam_geo.plots\n"
            "bad = [m for m in ('matplotlib', 'folium', 'rasterio.plot') if m in sys.modules]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_show_objects_draws_every_polygon_on_the_image_with_crs_labels(scene_tif):
    scene, path = scene_tif
    gdf = truth_frame(scene)
    ax = plots.show_objects(path, gdf)
    assert n_paths(ax, "objects") == len(gdf)
    coll = collection(ax, "objects")
    assert np.allclose(coll.get_edgecolor()[0], to_rgba(plots.OUTLINE["edgecolor"]))
    assert ax.get_title() == f"{len(gdf)} objects"
    assert "EPSG:32633" in ax.get_xlabel() and ax.get_xlabel().startswith("Easting (m)")
    assert ax.get_ylabel() == "Northing (m)"
    xmin, ymin, xmax, ymax = 500000.0, 4500000.0 - 600 * 0.3, 500000.0 + 700 * 0.3, 4500000.0
    assert np.allclose(ax.images[0].get_extent(), (xmin, xmax, ymin, ymax), **EXACT)  # the raster's bounds
    assert np.allclose(ax.get_xlim(), (xmin, xmax), **EXACT) and np.allclose(ax.get_ylim(), (ymin, ymax), **EXACT)
    # outlines are the polygons' own coordinates (in the raster's CRS), not pixels
    verts = np.concatenate([p.vertices for p in coll.get_paths()])
    assert np.allclose(verts.min(axis=0), gdf.total_bounds[:2], **EXACT)
    assert np.allclose(verts.max(axis=0), gdf.total_bounds[2:], **EXACT)


def test_objects_in_another_crs_are_reprojected_and_empty_ones_skipped(scene_tif):
    scene, path = scene_tif
    gdf = truth_frame(scene).to_crs(4326)
    gdf = gpd.GeoDataFrame(geometry=[*gdf.geometry, shapely.Polygon()], crs=4326)  # a prompt that found nothing
    ax = plots.show_objects(path, gdf)
    verts = np.concatenate([p.vertices for p in collection(ax, "objects").get_paths()])
    assert n_paths(ax, "objects") == len(gdf) - 1
    assert np.allclose(verts.min(axis=0), truth_frame(scene).total_bounds[:2], rtol=0, atol=1e-3)


def test_outlines_sit_on_the_buildings_in_the_rendered_picture(tmp_path):
    """Render, then look at pixels: the building's colour just inside its outline, the ground
    just outside it, the outline colour on the edge. A third of a raster pixel of offset
    between the image and the polygons (or a flip) turns some of them."""
    t = Affine(0.5, 0, 300000.0, 0, -0.5, 5000000.0)
    foot = box(25, 20, 75, 60)
    scene = Scene(100, 80, CRS.from_epsg(32633), t, (foot,))
    path = write_scene(scene, tmp_path / "one.tif")
    fig = plt.figure(figsize=(8, 6.4), dpi=100)  # 8 screen pixels per raster pixel
    ax = fig.add_axes((0, 0, 1, 1))
    plots.show_objects(path, truth_frame(scene), ax, edgecolor="#ff0000", linewidth=1.0)
    ax.set_axis_off()
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())

    def colour_at(col: float, row: float) -> np.ndarray:  # raster pixel coords -> rendered RGB
        x, y = ax.transData.transform(t @ (col, row))
        return rgba[int(np.floor(rgba.shape[0] - y)), int(np.floor(x)), :3].astype(int)

    building, d = np.array(colour_of(1)), 0.3
    for col, row in [(25 + d, 40), (75 - d, 40), (50, 20 + d), (50, 60 - d), (50, 40)]:  # just inside
        assert np.abs(colour_at(col, row) - building).max() <= 2, (col, row, colour_at(col, row))
    for col, row in [(25 - d, 40), (75 + d, 40), (50, 20 - d), (50, 60 + d)]:  # just outside: grey ground
        c = colour_at(col, row)
        assert np.ptp(c) <= 2 and np.abs(c - building).max() > 20, (col, row, c)
    for col, row in [(25, 40), (75, 40), (50, 20), (50, 60)]:  # the outline on the edge (antialiased)
        r, g, b = colour_at(col, row)
        assert r >= 200 and g <= 40 and b <= 60, (col, row, (r, g, b))


def test_large_raster_is_read_decimated(tmp_path):
    path = write_scene(make_scene(2000, 1000, seed=1, cell=200), tmp_path / "wide.tif")
    ax = plots.show_raster(path, max_size=500)
    assert ax.images[0].get_array().shape[:2] == (250, 500)
    img, transform, view = plots.read_image(path, max_size=500)
    assert img.shape == (250, 500, 4) and img.dtype == np.uint8 and view.scale == 4
    assert transform.a == pytest.approx(0.3 * 4)


def test_bbox_zooms_and_a_bbox_outside_is_an_input_error(scene_tif):
    scene, path = scene_tif
    view = (500030.0, 4499850.0, 500090.0, 4499910.0)
    ax = plots.show_objects(path, truth_frame(scene), bbox=view)
    assert np.allclose(ax.get_xlim(), (500030.0, 500090.0), **EXACT)
    assert np.allclose(ax.get_ylim(), (4499850.0, 4499910.0), **EXACT)
    inside = truth_frame(scene).intersects(box(*view)).sum()
    assert ax.get_title() == f"{inside} objects" and 0 < inside < len(scene.footprints)
    with pytest.raises(InputError, match="outside"):
        plots.show_objects(path, truth_frame(scene), bbox=(0, 0, 10, 10))


def test_geographic_axis_labels():
    x, y = plots.axis_labels(CRS.from_epsg(4326))
    assert "longitude (°)" in x.lower() and "EPSG:4326" in x and "latitude (°)" in y.lower()


@pytest.fixture(scope="module")
def evaluation_case(scene_tif):
    """References with one partial building; predictions: two missed, one false, one moved
    (a false positive and a false negative), the partial one found (ignored either way)."""
    scene, path = scene_tif
    ref = truth_frame(scene)
    ref["partial"] = 0
    ref.loc[5, "partial"] = 1
    geoms = list(ref.geometry)
    keep = [g for i, g in enumerate(geoms) if i not in (0, 1, 2)]
    moved = shapely.affinity.translate(geoms[2], 40.0, 0.0)
    fake = box(500005.0, 4499825.0, 500008.0, 4499828.0)
    pred = gpd.GeoDataFrame(geometry=[*keep, moved, fake], crs=ref.crs)
    return path, pred, ref


@pytest.mark.parametrize("ignore_partial", [True, False])
def test_evaluation_counts_and_colours_are_evaluates(evaluation_case, ignore_partial):
    path, pred, ref = evaluation_case
    result = evaluate(pred, ref, iou=0.5, ignore_partial=ignore_partial)
    assert (result.fp, result.fn) == (2, 3)  # the moved one, the false one; two missed and the moved one
    ax = plots.show_evaluation(path, pred, ref, ignore_partial=ignore_partial)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"TP: matched ({result.tp})" in texts
    assert f"FP: no reference ({result.fp})" in texts
    assert f"FN: missed reference ({result.fn})" in texts
    assert any(t.startswith("ignored") for t in texts) == ignore_partial
    assert (n_paths(ax, "tp"), n_paths(ax, "fp"), n_paths(ax, "fn")) == (result.tp, result.fp, result.fn)
    assert n_paths(ax, "ignored") == (1 if ignore_partial else 0)
    assert n_paths(ax, "ignored_pred") == (1 if ignore_partial else 0)
    assert f"F1 {result.f1:.3f}" in ax.get_title()
    edges = {k: collection(ax, k).get_edgecolor()[0][:3] for k in ("tp", "fp", "fn")}
    for k, c in edges.items():
        assert np.allclose(c, to_rgba(plots.EVAL_COLORS[k])[:3]), k
    pairs = [("tp", "fp"), ("tp", "fn"), ("fp", "fn")]
    assert min(np.abs(edges[a] - edges[b]).sum() for a, b in pairs) > 0.5  # three distinct colours
    assert collection(ax, "fn").get_linestyle()[0][1] is not None  # missed references dashed


def test_evaluation_accepts_a_result_and_refuses_one_that_does_not_fit(evaluation_case, tmp_path):
    path, pred, ref = evaluation_case
    result = evaluate(pred, ref, ignore_partial=True)
    ax = plots.show_evaluation(path, pred, ref, result, ignore_partial=True)
    assert f"TP: matched ({result.tp})" in [t.get_text() for t in ax.get_legend().get_texts()]
    with pytest.raises(InputError, match="ignore_partial"):
        plots.show_evaluation(path, pred, ref, evaluate(pred, ref), ignore_partial=True)
    # files work the same, and the figure saves as PNG (the CLI's evaluate --plot)
    pred.to_file(tmp_path / "pred.gpkg")
    ref.to_file(tmp_path / "ref.geojson")
    ax = plots.show_evaluation(path, tmp_path / "pred.gpkg", tmp_path / "ref.geojson", ignore_partial=True)
    num = ax.figure.number
    out = plots.save(ax, tmp_path / "eval.png")
    assert Path(out).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert num not in plt.get_fignums()


def test_tile_grid_windows_seams_labels_and_objects_across_seams(scene_tif):
    scene, path = scene_tif
    grid = plan_tiles(700, 600, 256, 32, scene.transform)
    gdf = truth_frame(scene)
    ax = plots.show_tiles(path, 256, 32, objects=gdf)
    assert n_paths(ax, "tiles") == len(grid) == 9
    windows = np.concatenate([p.vertices for c in ax.collections if c.get_gid() == "tiles" for p in c.get_paths()])
    assert np.allclose(windows.min(axis=0), (500000.0, 4500000.0 - 180.0), **EXACT)  # raster corners
    assert np.allclose(windows.max(axis=0), (500000.0 + 210.0, 4500000.0), **EXACT)
    inner = len(set(grid.xs)) - 1, len(set(grid.ys)) - 1
    assert len(collection(ax, "seams").get_segments()) == inner[0] * grid.n_rows + inner[1] * grid.n_cols
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == sorted(f"{t.row},{t.col}" for t in grid.tiles)
    # objects crossing a seam, counted independently from the tiles' cores in pixels
    cuts_x = {t.core[0] for t in grid.tiles if t.core[0] > 0}
    cuts_y = {t.core[1] for t in grid.tiles if t.core[1] > 0}
    crossing = sum(1 for f in scene.footprints
                   if any(f.bounds[0] < c < f.bounds[2] for c in cuts_x) or any(f.bounds[1] < r < f.bounds[3]
                                                                                  for r in cuts_y))
    assert crossing > 0
    assert n_paths(ax, "across a seam") == crossing
    assert n_paths(ax, "objects") == len(gdf) - crossing
    assert f"objects across a seam ({crossing})" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_prompts_are_drawn_where_they_point_in_the_raster_crs(scene_tif):
    scene, path = scene_tif
    target = scene.truth_map()[7]
    cx, cy = target.representative_point().coords[0]
    lon, lat = Transformer.from_crs(UTM, 4326, always_xy=True).transform(cx, cy)
    xmin, ymin, xmax, ymax = target.bounds
    mx0, my0 = Transformer.from_crs(UTM, 3857, always_xy=True).transform(xmin - 1, ymin - 1)
    mx1, my1 = Transformer.from_crs(UTM, 3857, always_xy=True).transform(xmax + 1, ymax + 1)
    prompts = [PointPrompt(lon, lat, crs="EPSG:4326"), PointPrompt(cx + 2, cy, label=0),
               BoxPrompt(mx0, my0, mx1, my1, crs="EPSG:3857")]
    result = gpd.GeoDataFrame({"prompt_id": [0, 2]}, geometry=[target, target], crs=UTM)
    left, right = plots.show_prompts(path, prompts, result)
    for ax in (left, right):
        offsets = {c.get_label(): c.get_offsets() for c in ax.collections if c.get_label().endswith("points")}
        assert np.allclose(offsets["foreground points"], [[cx, cy]], **EXACT)
        assert np.allclose(offsets["background points"], [[cx + 2, cy]], **EXACT)
        (bx0, by0), (bx1, by1) = collection(ax, "boxes").get_paths()[0].vertices.min(axis=0), \
            collection(ax, "boxes").get_paths()[0].vertices.max(axis=0)
        assert bx0 <= xmin - 0.9 and bx1 >= xmax + 0.9 and by0 <= ymin - 0.9 and by1 >= ymax + 0.9
        assert sorted(t.get_text() for t in ax.texts) == ["0", "1", "2"]
        # the view fits the prompts and the result, with room around them
        x0, x1 = ax.get_xlim()
        assert x0 < xmin and x1 > xmax
    assert n_paths(left, "result") == 0 and n_paths(right, "result") == 2
    assert right.get_title() == "result: 2 objects"
    single = plots.show_prompts(path, prompts)
    assert not isinstance(single, tuple) and single.get_title() == "3 prompts"


def test_explore_offline_is_a_static_figure_and_online_a_folium_map(scene_tif):
    scene, path = scene_tif
    gdf = truth_frame(scene)
    gdf["score"] = 0.9
    before = plt.get_fignums()
    fig = plots.explore(path, gdf, online=False)
    assert isinstance(fig, matplotlib.figure.Figure) and plt.get_fignums() == before  # shown once, by value
    assert "offline" in fig.axes[0].get_title() and n_paths(fig.axes[0], "objects") == len(gdf)
    folium = pytest.importorskip("folium")
    m = plots.explore(path, gdf, online=True)
    assert isinstance(m, folium.Map)
    html = m.get_root().render()
    assert f"objects ({len(gdf)})" in html and "data:image/png;base64" in html
