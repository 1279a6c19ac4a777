"""Issue 16: tiles fanned out over a Dask LocalCluster, measured in one run, and a country-scale
projection from the measurements.

Prints, on one synthetic scene (objects every ~48 px; ``ColourSegmenter``, a CPU segmenter whose
work grows with the tile's pixels):

- tiles/s in-process, with 1 and with 2 local worker processes (1 thread each), and the ratios;
- the scheduler's overhead per tile: a zero-cost segmenter run on 1 worker vs in-process;
- bytes sent back per tile (bit-packed cropped masks), here and, with ``--real``, with the bundled
  building model on a shared OpenAerialMap mosaic (in-process: the same records a worker sends);
- the client's busy time per tile (merging, vectorising; the rest of its time it waits for
  workers) and the seam candidates the merger holds per tile column;

then projects a country-scale run (``--area-km2`` at ``--res`` m on N GPU workers of
``--gpu-tiles-s`` tiles/s each; the GPU rate is an input, not measured here): tiles, result bytes,
client merge memory, time, and the worker count past which the single client is the bottleneck.

    PYTHONPATH=. python benchmarks/dask_fanout.py [--size 1792 --tile 256 --real]

(named ``dask_fanout`` because a module named ``distributed`` would hide the dask package).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = "fastsam_geo.synthetic:ColourSegmenter"
ZERO = "dask_fanout:zero"


def zero():
    """A segmenter that costs nothing: the overhead around the model is what remains."""
    from fastsam_geo.types import MaskSet

    def seg(images):
        return [MaskSet(np.zeros((0, *im.shape[:2]), bool), np.zeros(0, np.float32)) for im in images]

    return seg


class TrackingMerger:
    """Wraps a SeamMerger to record the most seam candidates (and their packed bytes) it held."""

    def __init__(self, merger):
        self.m, self.peak, self.peak_bytes, self.seconds = merger, 0, 0, 0.0

    def add(self, tile, inst):
        t0 = time.perf_counter()
        out = self.m.add(tile, inst)
        self.seconds += time.perf_counter() - t0
        if self.m.pending > self.peak:
            self.peak = self.m.pending
            self.peak_bytes = sum(x.nbytes for v in self.m._views.values() for x in vars(v).values()
                                  if isinstance(x, np.ndarray))
        return out

    def __getattr__(self, name):
        return getattr(self.m, name)


def run_dask(client, path, spec, tile, overlap):
    """One run through the distributed path; returns (seconds, stats, merger)."""
    from fastsam_geo.cache import MemoryStore
    from fastsam_geo.distributed import iter_objects_dask
    from fastsam_geo.merge import SeamMerger
    from fastsam_geo.pipeline import RunStats
    from fastsam_geo.session import SegmentedRaster
    from fastsam_geo.vectorize import objects_to_records

    sr = SegmentedRaster(path, segmenter=spec, tile_size=tile, overlap=overlap, cache=False)
    stats = RunStats()
    merger = TrackingMerger(SeamMerger(sr.grid, prefer="edge", nested=False))
    transform = sr.info.transform

    def vectorise(objects):
        t0 = time.perf_counter()
        geoms, _ = objects_to_records(objects, transform)
        stats.objects += len(geoms)
        stats.extra["vectorise_seconds"] = stats.extra.get("vectorise_seconds", 0.0) + time.perf_counter() - t0
        return geoms

    t0 = time.perf_counter()
    with sr.reader:
        for _ in iter_objects_dask(client, sr.reader, sr.grid, spec, sr.options, batch_size=4, stats=stats,
                                   merger=merger, store=MemoryStore(0), finish=vectorise):
            pass
    return time.perf_counter() - t0, stats, merger, sr.grid


def run_local(path, spec, tile, overlap):
    from fastsam_geo import segment_raster
    from fastsam_geo.pipeline import RunStats

    stats = RunStats()
    t0 = time.perf_counter()
    segment_raster(path, segmenter=spec, tile_size=tile, overlap=overlap, stats=stats)
    return time.perf_counter() - t0, stats


def real_bytes_per_tile(tile: int) -> tuple[float, float, int]:
    """Mean encoded record bytes per tile and objects per tile, bundled model on an OAM mosaic."""
    from fastsam_geo.cache import encode
    from fastsam_geo.session import SegmentedRaster

    path = "/work/shared/data/oam_osm/aoi5_nairobi_kenya/mosaic_z20_a.tif"
    if not os.path.exists(path):
        return float("nan"), float("nan"), 0
    sr = SegmentedRaster(path, tile_size=tile, overlap=tile // 8, cache=None, device="cpu")
    sr.segment()
    sizes, objs = [], []
    for i in range(len(sr.grid)):
        inst = sr.store.get(i)
        if inst is not None:
            sizes.append(sum(a.nbytes for a in encode(inst).values()))
            objs.append(len(inst))
    return float(np.mean(sizes)), float(np.mean(objs)), len(sizes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1792)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--real", action="store_true", help="also measure bytes/tile with the bundled model on OAM")
    ap.add_argument("--area-km2", type=float, default=580_000)
    ap.add_argument("--res", type=float, default=0.3)
    ap.add_argument("--gpu-tiles-s", type=float, default=25.0, help="assumed tiles/s of one GPU worker (1024 px)")
    ap.add_argument("--width-km", type=float, default=1000.0, help="the country's east-west extent")
    args = ap.parse_args()

    import warnings

    import distributed

    warnings.simplefilter("ignore")

    from fastsam_geo.synthetic import make_scene, write_scene

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), str(HERE),
                                                             os.environ.get("PYTHONPATH")]))
    tmp = Path(tempfile.mkdtemp(prefix="fsg-dask-"))
    path = str(write_scene(make_scene(args.size, args.size, seed=1, cell=48), tmp / "scene.tif"))
    t_local, s_local = run_local(path, WORK, args.tile, args.overlap)
    t_local, s_local = run_local(path, WORK, args.tile, args.overlap)  # warm (page cache, imports)
    z_local, _ = run_local(path, ZERO, args.tile, args.overlap)
    z_local, _ = run_local(path, ZERO, args.tile, args.overlap)
    n = s_local.tiles
    print(f"scene {args.size}² px, {n} tiles of {args.tile} px (overlap {args.overlap}), "
          f"{s_local.objects} objects; {os.cpu_count()} CPU cores")
    print(f"in-process            : {n / t_local:7.1f} tiles/s")
    rates, res = {}, {}
    for workers in (1, 2):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None) as lc, distributed.Client(lc) as client:
            run_dask(client, path, WORK, args.tile, args.overlap)  # warm: workers import and load once
            t, stats, merger, grid = run_dask(client, path, WORK, args.tile, args.overlap)
            rates[workers] = n / t
            res[workers] = (t, stats, merger, grid)
            print(f"Dask, {workers} worker{'s' if workers > 1 else ' '}     : {n / t:7.1f} tiles/s "
                  f"({n / t / (n / t_local):.2f} x in-process)")
            if workers == 1:
                run_dask(client, path, ZERO, args.tile, args.overlap)
                tz, _, _, _ = run_dask(client, path, ZERO, args.tile, args.overlap)
    print(f"2 workers / 1 worker  : {rates[2] / rates[1]:.2f} x (2 cores shared with the client and other users)")
    overhead = (tz - z_local) / n
    print(f"scheduler overhead    : {overhead * 1e3:.1f} ms/tile (zero-cost segmenter: {tz / n * 1e3:.1f} ms/tile "
          f"on 1 worker vs {z_local / n * 1e3:.1f} in-process; tasks of 4 tiles)")
    t2, st2, m2, grid = res[2]
    _, st1, m1, _ = res[1]
    bytes_tile = st2.extra["bytes_back"] / n
    busy = (t2 - st2.extra.get("wait_seconds", 0.0)) / n
    merge_t, vec_t = m1.seconds / n, st1.extra["vectorise_seconds"] / n  # 1 worker: the least contended
    print(f"bytes back per tile   : {bytes_tile:,.0f} B ({st2.instances / n:.1f} masks/tile; a dense "
          f"{args.tile}² bool mask is {args.tile ** 2:,} B)")
    print(f"client per tile       : merge {merge_t * 1e3:.1f} ms + vectorise {vec_t * 1e3:.1f} ms (1 worker); "
          f"busy {busy * 1e3:.1f} ms with 2 workers on the same 2 cores (waits "
          f"{st2.extra.get('wait_seconds', 0):.1f} of {t2:.1f} s)")
    print(f"seam candidates held  : peak {m2.peak} views, {m2.peak_bytes:,} packed bytes, over {grid.n_cols} tile "
          f"columns ({m2.peak_bytes / grid.n_cols:,.0f} B/column)")

    real_b, real_objs, real_n = real_bytes_per_tile(1024) if args.real else (float("nan"), float("nan"), 0)
    if args.real:
        print(f"bundled model, OAM    : {real_b:,.0f} B/tile, {real_objs:.1f} objects/tile (1024 px at 0.15 m, "
              f"{real_n} tiles)")

    # -- projection ------------------------------------------------------------------------------------
    tile, overlap = 1024, 128
    stride_m = (tile - overlap) * args.res
    tiles = args.area_km2 * 1e6 / stride_m ** 2
    cols = args.width_km * 1e3 / stride_m
    per_tile = real_b if args.real and real_b == real_b else bytes_tile * (tile / args.tile) ** 2
    # client time per tile scales with the objects it merges and traces: per object, from here
    per_obj_merge = merge_t / max(st1.instances / n, 1e-9)
    per_obj_vec = vec_t / max(st1.instances / n, 1e-9)
    objs_tile = real_objs if args.real and real_objs == real_objs else st2.instances / n * (tile / args.tile) ** 2
    client_tile = (per_obj_merge + per_obj_vec) * objs_tile
    interior = (tile - 2 * overlap) ** 2 / tile ** 2  # share of a tile no other tile sees
    held_col = m2.peak_bytes / grid.n_cols * (tile / args.tile)  # a column's seam strip grows with the tile side
    n_sat = 1 / (client_tile * args.gpu_tiles_s)
    print(f"\nprojection: {args.area_km2:,.0f} km² at {args.res} m, tiles {tile} px overlap {overlap} "
          f"(stride {stride_m:.0f} m), {args.width_km:,.0f} km wide")
    print(f"  tiles               : {tiles / 1e6:.2f} M ({cols:,.0f} per row)")
    print(f"  result bytes back   : {tiles * per_tile / 1e9:.1f} GB ({per_tile:,.0f} B/tile)")
    print(f"  client merge memory : {cols * held_col / 1e6:.0f} MB of seam candidates (one row of tiles), plus "
          f"a window of 2 tasks/worker")
    print(f"  client time/tile    : {client_tile * 1e3:.1f} ms -> at most {1 / client_tile:.0f} tiles/s through one "
          f"client")
    for gpus in (1, 4, 16, 64):
        rate = min(gpus * args.gpu_tiles_s, 1 / client_tile)
        print(f"  {gpus:3d} GPU workers     : {rate:6.0f} tiles/s, {tiles / rate / 3600:7.1f} h"
              + ("  (client-bound)" if gpus * args.gpu_tiles_s > 1 / client_tile else ""))
    print(f"  one client saturates past ~{n_sat:.1f} GPU workers at {args.gpu_tiles_s:g} tiles/s each")
    lean = (per_obj_merge + per_obj_vec * (1 - interior)) * objs_tile
    print(f"  interior objects ({interior:.0%} of a tile) vectorised on the workers: {lean * 1e3:.1f} ms/tile, "
          f"{1 / lean:.0f} tiles/s per client; k row strips with a client each: k x that")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
