"""Edge maps and object proposals on seeded synthetic scenes whose tiles disagree."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio import features

import fastsam_geo
from fastsam_geo.cli import main
from fastsam_geo.synthetic import PerturbedSegmenter, make_scene, write_scene
from fastsam_geo.tiling import plan_tiles

TILE, OVERLAP = 256, 48
W, H = 700, 640


class SoftSegmenter:
    """Probabilities as a real network's disagree between tiles: each tile's (perturbed, 1-px
    jittered) masks blurred into a soft map, scaled by a per-tile gain (0.6-1) over a per-tile
    background level (0-0.12), both seeded by the tile's pixels. Without blending, the background
    steps between tiles draw the tile grid into the edge map."""

    batch_size = 4

    def __init__(self):
        self.base = PerturbedSegmenter(miss=0.0, split=0.0, jitter=1)

    def __call__(self, images):
        return self.base(images)

    def probability(self, images):
        out = []
        for img, inst in zip(images, self.base(images)):
            rng = np.random.default_rng(int(hashlib.sha1(img.tobytes()).hexdigest()[:12], 16))
            gain, floor = rng.uniform(0.6, 1.0), rng.uniform(0.0, 0.12)
            m = np.zeros(img.shape[:2], np.float32)
            for (x0, y0, x1, y1), c in zip(inst.boxes.tolist(), inst.crops):
                m[y0:y1, x0:x1][c] = 1.0
            m = cv2.GaussianBlur(m, (0, 0), 0.8)
            out.append(floor + (gain - floor) * m)
        return out


@pytest.fixture(scope="module")
def scene_and_path(tmp_path_factory):
    scene = make_scene(W, H, seed=5, cell=70, big=(200, 180, 520, 480))  # big: larger than a tile
    return scene, write_scene(scene, tmp_path_factory.mktemp("e") / "scene.tif")


@pytest.fixture(scope="module")
def edge_map(scene_and_path, tmp_path_factory):
    _, path = scene_and_path
    out = tmp_path_factory.mktemp("eo") / "edges.tif"
    fastsam_geo.edge_map(path, out, segmenter=SoftSegmenter(), tile_size=TILE, overlap=OVERLAP)
    return out


def outline_distance(scene) -> np.ndarray:
    """Pixels from each pixel to the nearest true outline (a boundary between labels)."""
    lab = features.rasterize([(p, i + 1) for i, p in enumerate(scene.truth_pixels())], out_shape=(H, W),
                             dtype="int32")
    edge = np.zeros((H, W), bool)
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[:, :-1] |= lab[:, 1:] != lab[:, :-1]
    edge[1:] |= lab[1:] != lab[:-1]
    edge[:-1] |= lab[1:] != lab[:-1]
    return cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 5)


def seam_lines() -> np.ndarray:
    """Pixels within 1 px of a line where tiles meet: every inner window edge and core boundary."""
    grid = plan_tiles(W, H, TILE, OVERLAP)
    xs = {v for t in grid for v in (t.x, t.x + t.width, t.core[0], t.core[2])} - {0, W}
    ys = {v for t in grid for v in (t.y, t.y + t.height, t.core[1], t.core[3])} - {0, H}
    seam = np.zeros((H, W), bool)
    for x in xs:
        seam[:, max(0, x - 2):x + 1] = True
    for y in ys:
        seam[max(0, y - 2):y + 1] = True
    return seam


def test_edge_map_is_a_cog_on_the_input_grid(scene_and_path, edge_map):
    _, path = scene_and_path
    with rasterio.open(path) as src, rasterio.open(edge_map) as out:
        assert (out.crs, out.transform, out.width, out.height) == (src.crs, src.transform, src.width, src.height)
        assert out.count == 1 and out.dtypes[0] == "uint8"
        assert out.profile["tiled"] and out.compression is not None and out.overviews(1)
        assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_strong_edges_lie_on_true_outlines(scene_and_path, edge_map):
    scene, _ = scene_and_path
    with rasterio.open(edge_map) as out:
        e = out.read(1)
    strong = e >= 64  # a probability change of >= 0.25 per pixel
    near = outline_distance(scene) <= 2
    share = near[strong].mean()
    assert strong.sum() > 2000 and share >= 0.9, (int(strong.sum()), share)
    # and the outlines are found: most true outline pixels have a strong edge within 2 px
    found = cv2.dilate(strong.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert found[outline_distance(scene) < 1].mean() >= 0.9


def test_no_seam_line_shows(scene_and_path, edge_map):
    scene, _ = scene_and_path
    with rasterio.open(edge_map) as out:
        e = out.read(1).astype(np.float64)
    seam, away = seam_lines(), outline_distance(scene) > 3
    on_seams, elsewhere = e[seam & away].mean(), e[~seam & away].mean()
    # edge strength along seams is no higher than elsewhere (away from outlines, where seams would show)
    assert on_seams <= elsewhere + 1.0, (on_seams, elsewhere)
    assert e[seam].mean() <= e[~seam].mean() + 1.0, (e[seam].mean(), e[~seam].mean())


def test_edges_bad_input_is_one_line(scene_and_path, tmp_path):
    _, path = scene_and_path
    for args in (["edges", str(path), "-o", str(tmp_path / "e.png")],
                 ["edges", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "e.tif")],
                 ["edges", str(path), "-o", str(tmp_path / "no" / "e.tif")],
                 ["edges", str(path), "-o", str(path)]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2 and res.output.count("\n") == 1 and res.output.startswith("Error:"), res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def truth_boxes(scene) -> np.ndarray:
    return np.array([p.bounds for p in scene.truth_map()])


def test_proposals_one_box_per_object_across_seams(scene_and_path, tmp_path):
    scene, path = scene_and_path
    out = tmp_path / "boxes.gpkg"
    gdf = fastsam_geo.object_proposals(path, out, segmenter=PerturbedSegmenter(miss=0.0, split=0.0, jitter=1),
                                       tile_size=TILE, overlap=OVERLAP)
    truth = truth_boxes(scene)
    got = np.array(gdf.geometry.bounds)
    assert gdf.crs == scene.crs and list(gdf["rank"]) == list(range(1, len(gdf) + 1))
    assert (np.diff(gdf["score"].to_numpy()) <= 0).all()

    def iou(a, b):
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ix * iy
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    hits = [sum(iou(t, g) >= 0.7 for g in got) for t in truth]
    assert all(h == 1 for h in hits), [(i, h) for i, h in enumerate(hits) if h != 1]
    assert len(gdf) == len(truth), (len(gdf), len(truth))
    assert (gdf["tiles"] > 1).sum() >= 5  # objects in overlaps, seen by several tiles, became one box
    import geopandas as gpd

    back = gpd.read_file(out)
    assert len(back) == len(gdf) and {"score", "rank", "tiles"} <= set(back.columns)


def test_proposals_command_runs_as_a_subprocess(scene_and_path, tmp_path):
    _, path = scene_and_path
    out = tmp_path / "b.geojson"
    res = subprocess.run([sys.executable, "-m", "fastsam_geo.cli", "proposals", str(path), "-o", str(out),
                          "--model", "fastsam_geo.synthetic:ColourSegmenter", "--tile-size", "256",
                          "--overlap", "48", "-q"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    import geopandas as gpd

    assert len(gpd.read_file(out)) > 10
    bad = subprocess.run([sys.executable, "-m", "fastsam_geo.cli", "proposals", str(path), "-o",
                          str(tmp_path / "b.txt")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr


def test_edges_are_written_core_by_core_each_tile_segmented_once(scene_and_path, tmp_path, monkeypatch):
    """Bounded memory: each write is one tile core (plus a 1-px rim for the filter), from at most
    three rows of tiles held at once, and every tile goes through the segmenter exactly once."""
    import fastsam_geo.edges as edges_mod

    _, path = scene_and_path
    grid = plan_tiles(W, H, TILE, OVERLAP)
    seen, windows = [], []
    real_blend = edges_mod.blend

    def spy_blend(window, views):
        windows.append((window, len(views), len({v[0].row for v in views})))
        return real_blend(window, views)

    class Counting(SoftSegmenter):
        def probability(self, images):
            seen.extend(hashlib.sha1(im.tobytes()).hexdigest() for im in images)
            return super().probability(images)

    monkeypatch.setattr(edges_mod, "blend", spy_blend)
    fastsam_geo.edge_map(path, tmp_path / "e.tif", segmenter=Counting(), tile_size=TILE, overlap=OVERLAP)
    assert len(seen) == len(grid)
    assert len(windows) == len(grid)
    for (x0, y0, x1, y1), _, rows in windows:
        assert (x1 - x0) <= TILE + 2 and (y1 - y0) <= TILE + 2 and rows <= 3


class CardedRecorder:
    """Finds nothing, records each image's size; ``path`` names weights whose card records a
    GSD (0.15 m), as the bundled model's does."""

    def __init__(self, path):
        self.path = str(path)
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, images):
        from fastsam_geo.types import MaskSet

        self.sizes.extend(im.shape[:2] for im in images)
        return [MaskSet(np.zeros((0, *im.shape[:2]), bool), np.zeros(0, np.float32)) for im in images]


@pytest.mark.parametrize("run", ["edges", "proposals"])
def test_edges_and_proposals_cut_tiles_at_the_models_gsd_as_segment_does(tmp_path, run):
    """On 0.3 m imagery a model trained at 0.15 m sees 256-px tiles cut from 128 native px (the
    network enlarges them), as `segment --gsd auto` feeds it; `--gsd native` cuts 256 px."""
    import json

    from rasterio.transform import from_origin

    tif = tmp_path / "coarse.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(tif, "w", driver="GTiff", width=400, height=300, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 4500000, 0.3, 0.3)) as dst:
        dst.write(rng.integers(0, 255, (3, 300, 400), dtype=np.uint8))
    weights = tmp_path / "m.pt"
    weights.write_bytes(b"")
    weights.with_suffix(".json").write_text(json.dumps({"gsd": 0.15, "gsd_range": [0.14, 0.16]}))
    sizes = {}
    for gsd in ("auto", "native"):
        seg = CardedRecorder(weights)
        kw = dict(segmenter=seg, tile_size=256, overlap=32, gsd=gsd)
        if run == "edges":
            fastsam_geo.edge_map(tif, tmp_path / f"e_{gsd}.tif", **kw)
        else:
            fastsam_geo.object_proposals(tif, **kw)
        sizes[gsd] = max(max(s) for s in seg.sizes)
    assert sizes == {"auto": 128, "native": 256}
