"""End-to-end speed against the bare network and against plain ultralytics, on one raster.

Measured in one run, on the same raster, weights, tile size and device:

* **network**: the forward pass alone on pre-letterboxed batches (the ceiling);
* **ours**: ``SegmentedRaster.segment_to_file`` end to end (read, stretch, network, masks,
  seam merging, vectorising, areas, GeoPackage);
* **plain ultralytics**: a straightforward loop, tile by tile with the same tiling:
  ``FastSAM(weights)(tile, retina_masks=True)`` then ``rasterio.features.shapes`` on each
  full-tile mask, written to a GeoPackage (no seam merging);

and prints the ratios. Weights: a FastSAM-s (or -x) architecture with random weights built
from ultralytics' yaml (compute does not depend on weight values; with random weights
many anchors pass the confidence threshold, the stress case for post-processing).

    python benchmarks/throughput.py [--arch s|x] [--size 4096] [--device auto] [--batch N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "true")


def plain_ultralytics(tif: Path, weights: Path, out: Path, tile: int, overlap: int, device: str, conf: float,
                      iou: float, imgsz: int) -> int:
    """The straightforward baseline: ultralytics FastSAM per tile + rasterio shapes per mask."""
    import geopandas as gpd
    import rasterio
    from rasterio import features
    from rasterio.windows import Window
    from shapely.geometry import shape
    from ultralytics import FastSAM

    model = FastSAM(str(weights))
    geoms = []
    with rasterio.open(tif) as src:
        from fastsam_geo.tiling import plan_tiles
        for t in plan_tiles(src.width, src.height, tile, overlap):
            img = src.read([1, 2, 3], window=Window(t.x, t.y, t.width, t.height)).transpose(1, 2, 0)
            res = model(np.ascontiguousarray(img[..., ::-1]), retina_masks=True, imgsz=imgsz, conf=conf, iou=iou,
                        device=device, verbose=False)[0]
            if res.masks is None:
                continue
            tr = src.window_transform(Window(t.x, t.y, t.width, t.height))
            for m in res.masks.data.cpu().numpy().astype(np.uint8):
                for g, _ in features.shapes(m, mask=m.astype(bool), transform=tr):
                    geoms.append(shape(g))
        crs = src.crs
    gpd.GeoDataFrame(geometry=geoms, crs=crs).to_file(out)
    return len(geoms)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="s", choices=["s", "x"])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--conf", type=float, default=0.4)
    ap.add_argument("--iou", type=float, default=0.9)
    ap.add_argument("--skip-plain", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="network / ours pairs to run (median reported)")
    ap.add_argument("--sequential", action="store_true", help="also time the stages run one after the other")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fsg-bench"))
    args = ap.parse_args()

    from fastsam_geo.engine import FastSAMSegmenter, make_untrained_checkpoint
    from fastsam_geo.pipeline import RunStats
    from fastsam_geo.session import SegmentedRaster
    from fastsam_geo.synthetic import make_scene, write_scene

    args.workdir.mkdir(parents=True, exist_ok=True)
    tif = args.workdir / f"scene_{args.size}.tif"
    if not tif.exists():
        write_scene(make_scene(args.size, args.size, seed=1, cell=146), tif, block=1024)
    weights = make_untrained_checkpoint(args.workdir / f"FastSAM-{args.arch}-untrained.pt", arch=args.arch,
                                        imgsz=args.tile)
    seg = FastSAMSegmenter(weights, device=args.device, conf=args.conf, iou=args.iou, batch_size=args.batch)
    overlap = args.tile // 8
    sr = SegmentedRaster(tif, segmenter=seg, tile_size=args.tile, overlap=overlap)
    n_tiles = len(sr.grid)
    print(f"raster {args.size}² -> {n_tiles} tiles of {args.tile} px; FastSAM-{args.arch} (random weights), "
          f"device {seg.device}, batch {seg.batch_size}, torch threads {__import__('torch').get_num_threads()}")

    # warm-up (first CUDA/cuDNN calls, lazy imports), not timed
    with sr.reader:
        warm = [sr.reader.read(t)[0] for t in list(sr.grid)[: seg.batch_size]]
    seg(warm)

    # 1. the bare network on pre-letterboxed batches; 2. ours, end to end. Alternated
    # --repeat times (the machine's speed drifts by a few % between minutes): the ratio
    # reported is the median of the pairs'.
    batches = []
    with sr.reader:
        tiles = list(sr.grid)
        for i in range(0, n_tiles, seg.batch_size):
            batches.append(seg.prepare([sr.reader.read(t)[0] for t in tiles[i:i + seg.batch_size]]).tensor)
    sync = getattr(__import__("torch").cuda, "synchronize", None) if seg.device.startswith("cuda") else None
    pairs = []
    with tempfile.TemporaryDirectory() as d:
        for rep in range(args.repeat):
            t0 = time.perf_counter()
            for b in batches:
                seg.forward(b)
            if sync:
                sync()
            t_net = time.perf_counter() - t0
            stats = RunStats()
            t0 = time.perf_counter()  # a fresh one-shot run each time, as the CLI's: nothing cached
            one_shot = SegmentedRaster(tif, segmenter=seg, tile_size=args.tile, overlap=overlap, cache=False)
            n_ours = one_shot.segment_to_file(Path(d) / "ours.gpkg", stats=stats)
            t_ours = time.perf_counter() - t0
            pairs.append((t_net / t_ours, t_net, t_ours))
            print(f"[{rep + 1}/{args.repeat}] network alone {n_tiles / t_net:6.2f} tiles/s | ours end to end "
                  f"{n_tiles / t_ours:6.2f} tiles/s ({n_ours} polygons; in-network {stats.segment_seconds:.1f} s, "
                  f"read {stats.read_seconds:.1f} s, prepare {stats.prepare_seconds:.1f} s, post "
                  f"{stats.post_seconds:.1f} s, overlapped) | ratio {t_net / t_ours:.2f}")
        del batches
        ratio, t_net, t_ours = sorted(pairs)[len(pairs) // 2]
        print(f"network alone : {n_tiles / t_net:6.2f} tiles/s")
        print(f"ours, end2end : {n_tiles / t_ours:6.2f} tiles/s")
        print(f"RATIO ours / network = {ratio:.2f} (median of {len(pairs)}; floor: 0.8 on CPU, 0.9 on GPU)")
        if args.sequential:  # the same work with the three stages run one after the other
            from fastsam_geo.pipeline import VectorOptions, run

            t0 = time.perf_counter()
            with sr.reader:
                n_seq = sum(len(g) for g, _ in run(sr.reader, sr.grid, seg, batch_size=seg.batch_size,
                                                   options=VectorOptions(), threads=False))
            t_seq = time.perf_counter() - t0
            print(f"ours without overlap (read, network, post in turn): {n_tiles / t_seq:6.2f} tiles/s "
                  f"({n_seq} polygons, not written) -> overlap gains {t_seq / t_ours:.2f}x")
        if not args.skip_plain:
            t0 = time.perf_counter()
            n_plain = plain_ultralytics(tif, weights, Path(d) / "plain.gpkg", args.tile, overlap, seg.device,
                                        args.conf, args.iou, seg.imgsz)
            t_plain = time.perf_counter() - t0
            print(f"plain ultralytics loop: {n_tiles / t_plain:6.2f} tiles/s ({n_plain} polygons, no seam merging)")
            print(f"RATIO ours / plain ultralytics = {t_plain / t_ours:.2f}x faster (floor: 2x)")
    km2 = n_tiles * ((args.tile - overlap) * 0.3 / 1000) ** 2
    print(f"at 0.3 m ground resolution: {km2 / t_ours * 3600:.1f} km²/h end to end")


if __name__ == "__main__":
    main()
