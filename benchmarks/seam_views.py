"""Seam merging when tile views disagree: quality and cost, this merger vs an earlier revision's.

A seeded label image of buildings (rectangles, L-shapes, courtyards; some larger than a tile)
is cut into tiles; each tile's view is perturbed as a real network's is (every mask grown or
shrunk by 1 px at random, 15 % missed, 10 % of those wholly inside a tile split in two;
seeded per tile, so views differ from tile to tile). The same perturbed tiles go through the
current ``SeamMerger`` and, with ``--old-rev``, the merger of an earlier git revision (loaded
from git, nothing installed). Printed, for each, measured in this run:

* of the buildings some tile saw whole and unsplit: how many come out split (two or more
  outputs), lost, cut (IoU more than 0.05 below their worst whole view) or fused;
* duplicates (output pairs sharing half of the smaller);
* the merger's cost per tile (``add`` + ``flush``, median of ``--repeat`` runs) and the ratio.

    python benchmarks/seam_views.py [--size 3072] [--tile 512] [--overlap 64] [--old-rev 4bff2fd]
    python benchmarks/seam_views.py --stress --old-rev 4bff2fd    # merge cost on FastSAM-s outputs

``--stress`` times the mergers on what a FastSAM-s architecture with random weights returns for a
2048² synthetic scene in 1024-px tiles (up to 300 large, ragged masks per tile: the everything-mode
stress case), with and without duplicate suppression first.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from fastsam_geo.masks import to_instances
from fastsam_geo.merge import EDGE, SeamMerger
from fastsam_geo.synthetic import make_scene, perturb_instances
from fastsam_geo.tiling import plan_tiles
from fastsam_geo.types import MaskSet, MergedObject


def label_image(size: int, seed: int) -> np.ndarray:
    from rasterio import features

    scene = make_scene(size, size, seed=seed, cell=120, big=(size // 3, size // 3, size // 3 + 700, size // 3 + 500))
    return features.rasterize(((f, i + 1) for i, f in enumerate(scene.footprints)), out_shape=(size, size),
                              dtype="int32")


def perturbed_tiles(labels: np.ndarray, tile: int, overlap: int, seed: int):
    """Per tile: (tile, perturbed instances, [(label, what, [(box, crop, whole)])])."""
    h, w = labels.shape
    grid = plan_tiles(w, h, tile, overlap)
    out = []
    for t in grid:
        win = labels[t.y:t.y + t.height, t.x:t.x + t.width]
        ids = [int(i) for i in np.unique(win) if i]
        masks = np.stack([win == i for i in ids]) if ids else np.zeros((0, *win.shape), bool)
        inst = to_instances(MaskSet(masks, np.full(len(ids), 0.9)), win.shape)
        pinst, log = perturb_instances(inst, np.random.default_rng([seed, grid.index(t)]))
        inner = (t.x > 0, t.y > 0, t.x + t.width < w, t.y + t.height < h)
        views = []
        for label, (what, idx) in zip(ids, log):
            got = []
            for i in idx:
                x0, y0, x1, y1 = (int(v) for v in pinst.boxes[i])
                d = min((v for v, on in zip((x0, y0, t.width - x1, t.height - y1), inner) if on), default=99)
                got.append(((x0 + t.x, y0 + t.y, x1 + t.x, y1 + t.y), pinst.crops[i], d > EDGE))
            views.append((label, what, got))
        out.append((t, pinst, views))
    return grid, out


def load_old_merger(rev: str):
    """``SeamMerger`` of git revision ``rev``, loaded as a module of this package (its relative
    imports resolve against today's modules; old ``MergedObject(box, mask, ...)`` calls are shimmed)."""
    src = subprocess.run(["git", "show", f"{rev}:fastsam_geo/merge.py"], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    path = Path(tempfile.mkdtemp()) / "old_merge.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"fastsam_geo._merge_{rev}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    mod.MergedObject = lambda box, mask, score, tiles=1, sources=(): MergedObject.from_mask(box, mask, score, tiles,
                                                                                            sources)
    return mod.SeamMerger


def run(merger_cls, grid, tiles):
    merger = merger_cls(grid)
    t0 = time.perf_counter()
    objs = []
    for t, inst, _ in tiles:
        objs += merger.add(t, inst)
    objs += merger.flush()
    return objs, time.perf_counter() - t0


def judge(objs, labels, tiles) -> dict:
    views: dict[int, list] = {}
    for _, _, vs in tiles:
        for label, what, got in vs:
            views.setdefault(label, []).append((what, got))
    masks = [o.window_mask(o.box) for o in objs]
    counts = dict(seen_whole=0, split=0, lost=0, cut=0, fused=0, duplicates=0)
    # which truth labels each output covers (pixel counts), via the label image under its box
    covers = []
    for o, m in zip(objs, masks):
        x0, y0, x1, y1 = o.box
        ids, n = np.unique(labels[y0:y1, x0:x1][m], return_counts=True)
        covers.append({int(i): int(c) for i, c in zip(ids, n) if i})
    sizes = np.bincount(labels.ravel())
    hits: dict[int, list[int]] = {}
    for k, cov in enumerate(covers):
        for i, c in cov.items():
            if c >= 0.25 * sizes[i]:
                hits.setdefault(i, []).append(k)
    for label, vs in views.items():
        t = labels == label
        whole = []
        for what, got in vs:
            if what != "kept":
                continue
            for (bx0, by0, bx1, by1), crop, is_whole in got:
                if is_whole:
                    v = np.zeros_like(t)
                    v[by0:by1, bx0:bx1] = crop
                    whole.append(np.count_nonzero(v & t) / np.count_nonzero(v | t))
        if not whole:
            continue
        counts["seen_whole"] += 1
        mine = hits.get(label, [])
        if not mine:
            counts["lost"] += 1
            continue
        if len(mine) > 1:
            counts["split"] += 1
            continue
        o = objs[mine[0]]
        m = np.zeros_like(t)
        x0, y0, x1, y1 = o.box
        m[y0:y1, x0:x1] = masks[mine[0]]
        if np.count_nonzero(m & t) / np.count_nonzero(m | t) < min(whole) - 0.05:
            counts["cut"] += 1
        if any(j != label and c >= 0.5 * sizes[j] for j, c in covers[mine[0]].items()):
            counts["fused"] += 1
    # duplicates: pairs sharing half of the smaller (boxes first)
    boxes = np.array([o.box for o in objs])
    for i in range(len(objs)):
        near = np.flatnonzero((boxes[:, 0] < boxes[i, 2]) & (boxes[:, 2] > boxes[i, 0])
                              & (boxes[:, 1] < boxes[i, 3]) & (boxes[:, 3] > boxes[i, 1]))
        for j in near[near > i]:
            a = objs[i].window_mask(objs[i].box)
            b = objs[j].window_mask(objs[i].box)
            if np.count_nonzero(a & b) >= 0.5 * min(objs[i].area, objs[j].area):
                counts["duplicates"] += 1
    return counts


def stress(old_rev: str | None, repeat: int) -> None:
    from fastsam_geo.engine import FastSAMSegmenter, make_untrained_checkpoint
    from fastsam_geo.masks import suppress_duplicates
    from fastsam_geo.raster import TileReader
    from fastsam_geo.synthetic import write_scene

    d = Path(tempfile.mkdtemp())
    scene = make_scene(2048, 2048, seed=1)
    tif = write_scene(scene, d / "scene.tif")
    seg = FastSAMSegmenter(make_untrained_checkpoint(d / "s.pt", arch="s"), device="cpu")
    grid = plan_tiles(2048, 2048, 1024, 128)
    with TileReader(tif) as reader:
        raw = [(t, seg([reader.read(t)[0]])[0]) for t in grid]
    cases = {"raw (nested)": [(t, i, None) for t, i in raw],
             "after dedup": [(t, suppress_duplicates(i), None) for t, i in raw]}
    mergers = {"current": SeamMerger}
    if old_rev:
        mergers[old_rev] = load_old_merger(old_rev)
    for case, tiles in cases.items():
        n = sum(len(i) for _, i, _ in tiles) / len(tiles)
        times = {}
        for name, cls in mergers.items():
            kw = {"nested": case.startswith("raw")} if name == "current" else {}
            times[name] = statistics.median(run(lambda g, cls=cls, kw=kw: cls(g, **kw), grid, tiles)[1]
                                            for _ in range(repeat)) / len(tiles)
        line = ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in times.items())
        ratio = f"; current / {old_rev}: {times['current'] / times[old_rev]:.2f}" if old_rev else ""
        print(f"FastSAM-s random weights, {case}: {n:.0f} masks per tile; merge per tile: {line}{ratio}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=3072)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--old-rev", default=None, help="git revision whose merger to compare (e.g. 4bff2fd)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stress", action="store_true", help="time merging FastSAM-s (random weights) outputs")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    if args.stress:
        stress(args.old_rev, args.repeat)
        return
    mergers = {"current": SeamMerger}
    if args.old_rev:
        mergers[args.old_rev] = load_old_merger(args.old_rev)
    totals = {name: dict(seen_whole=0, split=0, lost=0, cut=0, fused=0, duplicates=0) for name in mergers}
    times = {name: [] for name in mergers}
    n_tiles = 0
    for seed in args.seeds:
        labels = label_image(args.size, seed)
        grid, tiles = perturbed_tiles(labels, args.tile, args.overlap, seed)
        n_tiles += len(tiles)
        for name, cls in mergers.items():
            objs, _ = run(cls, grid, tiles)
            for k, v in judge(objs, labels, tiles).items():
                totals[name][k] += v
            times[name].append(statistics.median(run(cls, grid, tiles)[1] for _ in range(args.repeat)) / len(tiles))
    print(f"{len(args.seeds)} scenes of {args.size}², tiles {args.tile} px, overlap {args.overlap}, {n_tiles} tiles; "
          "views: 1 px jitter, 15 % missed, 10 % split")
    print(f"{'merger':>10} | seen whole | split | lost | cut (IoU < worst whole - 0.05) | fused | duplicates | "
          "ms per tile")
    for name in mergers:
        c = totals[name]
        bad = c["split"] + c["lost"] + c["cut"]
        print(f"{name:>10} | {c['seen_whole']:>10} | {c['split']:>5} | {c['lost']:>4} | "
              f"{c['cut']:>30} | {c['fused']:>5} | {c['duplicates']:>10} | "
              f"{1000 * statistics.mean(times[name]):.2f}   ({100 * bad / max(1, c['seen_whole']):.1f} % not whole)")
    if args.old_rev:
        print(f"merge cost per tile, current / {args.old_rev}: "
              f"{statistics.mean(times['current']) / statistics.mean(times[args.old_rev]):.2f}")


if __name__ == "__main__":
    main()
