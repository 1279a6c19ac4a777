"""Pipeline overhead and memory outside the model, on generated rasters.

For each size (default 8192² and 16384²), writes a seeded scene with ~49 buildings per 1024²
tile, then runs `segment_raster` in a fresh subprocess with a zero-cost fake segmenter
(ColourSegmenter: returns the true masks straight from the pixels) and writes a GeoPackage.
Prints, measured in this run: per-tile time outside the segmenter (read + stretch + merge +
vectorise + area + write), and the child's peak RSS; then the RSS ratio between sizes.

With ``--model s`` (or ``x``) the child runs a FastSAM-s (-x) architecture with random weights
instead (built from ultralytics' yaml; compute and memory do not depend on weight values, and
random weights are the stress case: ~300 candidate masks per tile), for peak RSS with the real
network, batching and threads:

    python benchmarks/pipeline.py [--sizes 8192 16384] [--workdir /tmp/fsg-bench]
    python benchmarks/pipeline.py --model s --sizes 10000 20000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def child(path: str, out: str, model: str) -> None:
    from fastsam_geo import segment_raster
    from fastsam_geo.pipeline import RunStats
    from fastsam_geo.synthetic import ColourSegmenter

    if model != "none":
        import threading

        from fastsam_geo.engine import FastSAMSegmenter, make_untrained_checkpoint
        from fastsam_geo.session import SegmentedRaster

        weights = make_untrained_checkpoint(Path(out).with_name(f"FastSAM-{model}-untrained.pt"), arch=model)
        peak = {"RssAnon": 0, "RssFile": 0}

        def sample():  # ru_maxrss counts shared library code too: sample the anonymous part
            while True:
                with open("/proc/self/status") as f:
                    for line in f:
                        k = line.split(":")[0]
                        if k in peak:
                            peak[k] = max(peak[k], int(line.split()[1]) // 1024)
                time.sleep(0.2)

        threading.Thread(target=sample, daemon=True).start()
        stats = RunStats()
        t0 = time.perf_counter()
        sr = SegmentedRaster(path, segmenter=FastSAMSegmenter(weights, conf=0.4, iou=0.9), cache=False)  # as the CLI
        n = sr.segment_to_file(out, stats=stats)  # streamed: polygons go to disk as tiles finish
        total = time.perf_counter() - t0
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(dict(tiles=stats.tiles, objects=n, total_s=total, segmenter_s=stats.segment_seconds,
                              read_s=stats.read_seconds, peak_rss_mb=rss_mb, peak_anon_mb=peak["RssAnon"],
                              peak_file_mb=peak["RssFile"])))
        return
    inner = ColourSegmenter()
    spent = [0.0]

    def timed(images):
        t0 = time.perf_counter()
        try:
            return inner(images)
        finally:
            spent[0] += time.perf_counter() - t0

    stats = RunStats()
    t0 = time.perf_counter()
    gdf = segment_raster(path, segmenter=timed, batch_size=1, output=out, stats=stats)
    total = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(tiles=stats.tiles, objects=len(gdf), total_s=total, segmenter_s=spent[0],
                          read_s=stats.read_seconds, peak_rss_mb=rss_mb)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fsg-bench"))
    ap.add_argument("--model", default="none", choices=["none", "s", "x"],
                    help="none: zero-cost fake segmenter; s/x: FastSAM-s/-x architecture, random weights")
    args = ap.parse_args()
    from fastsam_geo.synthetic import make_scene, write_scene

    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        tif = args.workdir / f"scene_{size}.tif"
        if not tif.exists():
            t0 = time.perf_counter()
            write_scene(make_scene(size, size, seed=1, cell=146), tif, block=1024)
            print(f"wrote {tif.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        out = args.workdir / f"out_{size}_{args.model}.gpkg"
        # the child stands for the CLI, which owns its process and so tunes glibc's allocator
        # (fastsam_geo.engine.release_freed_memory); the library alone would not
        env = {"FASTSAM_GEO_MALLOC": "1", **os.environ, "PYTHONWARNINGS": "ignore"}
        r = subprocess.run([sys.executable, __file__, "--child", str(tif), str(out), args.model], capture_output=True,
                           text=True, env=env)
        if r.returncode:
            sys.exit(r.stderr)
        rec = json.loads(r.stdout.strip().splitlines()[-1])
        rec["size"] = size
        rec["overhead_per_tile_s"] = (rec["total_s"] - rec["segmenter_s"]) / rec["tiles"]
        rows.append(rec)
        print(f"{size}²: {rec['tiles']} tiles, {rec['objects']} objects, total {rec['total_s']:.1f} s, "
              f"segmenter {rec['segmenter_s']:.1f} s -> overhead {rec['overhead_per_tile_s']:.3f} s/tile "
              f"(floor 0.3), peak RSS {rec['peak_rss_mb']:.0f} MB"
              + (f" (sampled peaks: anonymous {rec['peak_anon_mb']} MB, shared library files {rec['peak_file_mb']} MB)"
                 if "peak_anon_mb" in rec else ""))
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"peak RSS ratio {b['size']}² / {a['size']}² = {b['peak_rss_mb'] / a['peak_rss_mb']:.2f} "
              f"for {b['tiles'] / a['tiles']:.1f}x the tiles (floor 1.3)")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
