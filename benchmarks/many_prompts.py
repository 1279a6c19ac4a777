"""Many point prompts in one call on an already segmented raster (a GeoPackage of clicks).

A generated 4096² scene (~49 buildings per 1024² tile) is segmented once with the true-mask
fake segmenter (the network is not what is measured), then one ``SegmentedRaster.prompt``
call answers N random points (about a quarter land on a building). Prints, measured in this
run, the seconds for the call and the points per second.

    python benchmarks/many_prompts.py [--points 100000] [--size 4096]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np

from fastsam_geo.prompts import PointPrompt
from fastsam_geo.session import SegmentedRaster
from fastsam_geo.synthetic import ColourSegmenter, make_scene, write_scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=4096)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    scene = make_scene(args.size, args.size, seed=3)
    tif = write_scene(scene, tempfile.mkdtemp(prefix="fsg-prompts-") + "/scene.tif")
    sr = SegmentedRaster(tif, segmenter=ColourSegmenter(), tile_size=1024, overlap=128)
    sr.segment()  # every tile now in the session's store: prompts cost no network time
    rng = np.random.default_rng(0)
    xs, ys = scene.transform * (rng.uniform(0, args.size, args.points), rng.uniform(0, args.size, args.points))
    prompts = [PointPrompt(float(x), float(y)) for x, y in zip(xs, ys)]
    t0 = time.perf_counter()
    gdf = sr.prompt(prompts)
    dt = time.perf_counter() - t0
    print(f"{args.points} points on a segmented {args.size}² raster: {dt:.2f} s ({args.points / dt:,.0f} points/s), "
          f"{int(gdf.found.sum())} found")


if __name__ == "__main__":
    main()
