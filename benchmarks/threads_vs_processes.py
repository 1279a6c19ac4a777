"""Threads or processes for the post stage? Measured, not assumed.

The network runs the tiles of a 4096² scene (FastSAM-s architecture, random weights, CPU)
while the post stage (mask decoding, instances, seam merging, vectorising) runs flat out
beside it on 8 captured network outputs, round and round: once in a thread of the same
process (what the pipeline does), once in a spawned process with one torch thread (what a
process pool would do). Prints both stages' tiles/s in each case, so the better way to
overlap them is the one with more of both.

    python benchmarks/threads_vs_processes.py [--size 4096] [--repeat 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "true")
WORKDIR = Path("/tmp/fsg-bench")


def setup(size: int):
    """The segmenter, the session and 8 tiles' raw network outputs (captured once, on disk)."""
    import torch

    from fastsam_geo.engine import FastSAMSegmenter, make_untrained_checkpoint
    from fastsam_geo.session import SegmentedRaster
    from fastsam_geo.synthetic import make_scene, write_scene

    WORKDIR.mkdir(parents=True, exist_ok=True)
    tif = WORKDIR / f"scene_{size}.tif"
    if not tif.exists():
        write_scene(make_scene(size, size, seed=1, cell=146), tif, block=1024)
    weights = make_untrained_checkpoint(WORKDIR / "FastSAM-s-untrained.pt", arch="s", imgsz=1024)
    seg = FastSAMSegmenter(weights, device="cpu", conf=0.4, iou=0.9)
    sr = SegmentedRaster(tif, segmenter=seg, tile_size=1024, overlap=128, cache=False)
    raws_path = WORKDIR / f"raws_{size}.pt"
    if not raws_path.exists():
        raws = []
        with sr.reader:
            for t in list(sr.grid)[:8]:
                image, valid = sr.reader.read(t)
                raw = seg.infer(seg.prepare([image]))
                raws.append((t, raw.preds.clone(), raw.protos.clone(), raw.geo, raw.shapes, raw.greys, valid))
        torch.save(raws, raws_path)
    return seg, sr, torch.load(raws_path, weights_only=False)


def post_loop(stop, counter, size, ready=None, state=None) -> None:
    from fastsam_geo.engine.fastsam import Raw
    from fastsam_geo.masks import to_instances
    from fastsam_geo.merge import SeamMerger
    from fastsam_geo.vectorize import objects_to_records

    seg, sr, raws = state if state is not None else setup(size)
    if state is None:  # a post process gets one torch thread
        import torch

        torch.set_num_threads(1)
    if ready is not None:
        ready.set()
    n = 0
    while not stop.is_set():
        merger = SeamMerger(sr.grid)
        for t, p, pr, geo, shapes, greys, valid in raws:
            inst = to_instances(seg.decode(Raw(p, pr, geo, shapes, greys))[0], (t.height, t.width), valid, min_area=16)
            objects_to_records(merger.add(t, inst), sr.reader.info.transform)
            n += 1
            counter.value = n
            if stop.is_set():
                break


class _Count:
    value = 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    seg, sr, raws = setup(args.size)
    with sr.reader:
        batches = [seg.prepare([sr.reader.read(t)[0]]).tensor for t in list(sr.grid)]
    seg.forward(batches[0])

    def network() -> float:
        t0 = time.perf_counter()
        for b in batches:
            seg.forward(b)
        return len(batches) / (time.perf_counter() - t0)

    def beside(kind: str, worker, stop, count, ready=None) -> None:
        """The network while ``worker`` runs the post stage flat out; print both rates."""
        worker.start()
        if ready is not None:
            ready.wait()  # a spawned process imports everything and loads its state first
        time.sleep(3)  # past the worker's start-up
        c0, t0 = count.value, time.perf_counter()
        r = network()
        post = (count.value - c0) / (time.perf_counter() - t0)
        print(f"with a post {kind}: network {r:.2f} tiles/s, post {post:.2f} tiles/s", flush=True)
        stop.set()
        worker.join()

    ctx = mp.get_context("spawn")  # fork would copy torch's OpenMP pool mid-state: it deadlocks
    for _ in range(args.repeat):
        print(f"network alone      : {network():.2f} tiles/s", flush=True)
        stop, count = threading.Event(), _Count()
        beside("THREAD ", threading.Thread(target=post_loop, args=(stop, count, args.size, None, (seg, sr, raws)),
                                           daemon=True), stop, count)
        stop, count, ready = ctx.Event(), ctx.Value("i", 0), ctx.Event()
        beside("PROCESS", ctx.Process(target=post_loop, args=(stop, count, args.size, ready), daemon=True),
               stop, count, ready)


if __name__ == "__main__":
    main()
