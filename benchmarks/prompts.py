"""Segment once, prompt many: the cost of a prompt on an already segmented raster.

On a generated 8192² scene (~49 buildings per 1024² tile):
1. a fresh SegmentedRaster answers one point prompt with nothing cached (it segments the
   tiles the point touches, loading the model);
2. the whole raster is segmented once into a disk cache;
3. a *new* SegmentedRaster on that cache (as a new process, the CLI or QGIS would) answers
   100 point prompts one call at a time, with no model loaded.
Then two text queries (crops embedded on the first, cached for the second).
Prints per-prompt times and the ratios, measured in this run.

    python benchmarks/prompts.py [--model untrained-s|colour] [--size 8192]

``untrained-s``: a FastSAM-s-architecture network with random weights (real compute and up
to 300 masks per tile, the worst case for merging and selection); ``colour``: the true masks.
CLIP for text: ViT-B-32 with random weights (same compute as trained).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["untrained-s", "colour"], default="untrained-s")
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fsg-bench"))
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--no-text", action="store_true")
    ap.add_argument("--text-size", type=int, default=2048, help="raster size for the text queries (CLIP on CPU "
                                                                  "embeds ~7 crops/s: keep the object count modest)")
    args = ap.parse_args()
    from fastsam_geo.prompts import PointPrompt, TextPrompt
    from fastsam_geo.session import SegmentedRaster
    from fastsam_geo.synthetic import make_scene, write_scene

    args.workdir.mkdir(parents=True, exist_ok=True)
    tif = args.workdir / f"scene_{args.size}.tif"
    scene = make_scene(args.size, args.size, seed=1, cell=146)
    if not tif.exists():
        write_scene(scene, tif, block=1024)
    if args.model == "colour":
        model = "fastsam_geo.synthetic:ColourSegmenter"
    else:
        from fastsam_geo.engine import make_untrained_checkpoint
        model = str(make_untrained_checkpoint(args.workdir / "fastsam-s-untrained.pt", arch="s", imgsz=1024))
    rng = np.random.default_rng(0)
    pts = [scene.truth_map()[k].representative_point()
           for k in rng.choice(len(scene.footprints), args.prompts + 1, replace=False)]

    # 1. one prompt, nothing cached
    sr = SegmentedRaster(tif, segmenter=model)
    t0 = time.perf_counter()
    sr.prompt([PointPrompt(pts[0].x, pts[0].y)])
    first = time.perf_counter() - t0
    print(f"first prompt, nothing cached: {first:.2f} s ({len(sr.store)} tiles segmented, model loaded)")

    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        SegmentedRaster(tif, segmenter=model, cache=cache).segment()
        print(f"segment the whole {args.size}² raster once into the cache: {time.perf_counter() - t0:.1f} s")
        sr = SegmentedRaster(tif, segmenter=model, cache=cache)
        times = []
        for p in pts[1:]:
            t0 = time.perf_counter()
            sr.prompt([PointPrompt(p.x, p.y)])
            times.append(time.perf_counter() - t0)
        assert sr._seg is None, "the model was loaded although every tile was cached"
        t = np.array(times)
        print(f"{len(t)} point prompts from the cache (model never loaded): median {np.median(t) * 1e3:.0f} ms, "
              f"p95 {np.percentile(t, 95) * 1e3:.0f} ms, max {t.max() * 1e3:.0f} ms (floor < 200 ms)")
        print(f"ratio first uncached / median cached prompt: {first / np.median(t):.0f}x")

        if not args.no_text:
            ttif = args.workdir / f"scene_{args.text_size}.tif"
            if not ttif.exists():
                write_scene(make_scene(args.text_size, args.text_size, seed=2, cell=146), ttif, block=1024)
            SegmentedRaster(ttif, segmenter=model, cache=cache).segment()
            sr = SegmentedRaster(ttif, segmenter=model, cache=cache, text_embedder="ViT-B-32:untrained")
            t0 = time.perf_counter()
            sr.prompt([TextPrompt("a building with a red roof")])
            t1 = time.perf_counter() - t0
            t0 = time.perf_counter()
            sr.prompt([TextPrompt("a large grey warehouse")])
            t2 = time.perf_counter() - t0
            print(f"text on {args.text_size}² (already segmented): first query {t1:.1f} s (embeds every object's "
                  f"crop), second {t2:.2f} s "
                  f"-> {t1 / t2:.0f}x faster (floor 20x)")


if __name__ == "__main__":
    main()
