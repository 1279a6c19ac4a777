"""Fan-out over a Dask cluster: tiles read and segmented on the workers, seams merged here.

Dask distributed is the scheduler the PyData/geospatial stack already runs (dask-jobqueue on
HPC, dask-kubernetes, Coiled), so a run uses it rather than a scheduler of its own. Nothing here
imports dask until a function is called: ``import fastsam_geo`` and runs without a client never
load it.

- **Tasks**: one per batch of consecutive tiles (grid order), submitted through a window of
  about two batches per worker thread. A task gets the raster's path (workers read it
  themselves: a shared file system, ``/vsicurl/`` or ``/vsis3/`` with credentials in the workers'
  environment), the tiles' windows, the run's global stretch and the segmenter's *spec*.
- **The model loads once per worker process**: :func:`worker_segmenter` keeps one segmenter per
  ``(spec, options)``; calls to it are serialised (one accelerator per worker: run workers with
  one thread each, ``--nthreads 1``).
- **Small results**: each tile comes back as :func:`fastsam_geo.cache.encode`'s record, masks
  cropped to their boxes and bit-packed (about 1 bit per box pixel), never a full tile.
- **Merging as tiles complete**: results are handed to the seam merger in tile order, each as
  soon as it and every tile before it are in (a reorder buffer no larger than the window), so
  objects stream out while the cluster works, the client holds a window of results plus the
  merger's seam candidates, and the output is exactly the in-process run's, object for object.
  Tiles found in ``store`` (a job folder, a cache) are never submitted; new results are put
  there, by the client, as they arrive.
- **Lost workers**: Dask reruns a lost worker's tasks elsewhere; the window waits for them.
  ``progress`` returning False, Ctrl-C or an error cancels every outstanding task.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from .cache import MemoryStore, decode, encode
from .errors import Cancelled, InputError, TileError
from .masks import suppress_duplicates, to_instances
from .merge import SeamMerger
from .options import Options
from .pipeline import RunStats, end_run, run_state, segment_tiles
from .raster import TileReader, is_local
from .tiling import TileGrid
from .types import Instances, MergedObject, Progress, ProgressCallback, Tile

WINDOW_PER_THREAD = 2
"""Batches in flight per worker thread: one running, one queued (no idle gap between tasks)."""


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise InputError("a Dask cluster needs the distributed extra: pip install 'fastsam-geo[distributed]'") \
            from exc
    return distributed


@contextlib.contextmanager
def cluster(scheduler: str | None = None, workers: int | None = None, *, timeout: float = 30) -> Iterator:
    """A ``dask.distributed.Client``: connected to ``scheduler`` (``tcp://HOST:PORT``, a cluster
    someone runs), or to a ``LocalCluster`` of ``workers`` processes (one thread each, loopback,
    no dashboard) started for the block and stopped after it."""
    if (scheduler is None) == (workers is None):
        raise InputError("give a scheduler address or a number of workers, not both")
    if workers is not None and not (isinstance(workers, int) and 1 <= workers <= 4096):
        raise InputError(f"workers must be a number from 1 to 4096, got {workers!r}")
    distributed = _import_distributed()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=timeout)
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from exc
        with client:
            yield client
        return
    # silence_logs: a task's failure reaches the user as our one-line error, not also as the workers'
    # "Compute Failed ... Traceback" log records on stderr
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=logging.CRITICAL) as lc, \
            distributed.Client(lc) as client:
        yield client


# -- on the workers -------------------------------------------------------------------------------

_MODELS: dict = {}
_READERS = threading.local()
_LOAD_LOCK = threading.Lock()


def worker_segmenter(spec: object, options: Options) -> tuple[Callable, threading.Lock]:
    """The segmenter for ``(spec, options)`` in this process, loaded on first use and kept (the
    model loads once per worker, not per task), with the lock serialising calls to it."""
    from .models import load_segmenter

    key = (None if spec is None else str(spec), options)
    with _LOAD_LOCK:
        if key not in _MODELS:
            _MODELS[key] = (load_segmenter(spec, options), threading.Lock())
        return _MODELS[key]


def _reader(proto: TileReader) -> TileReader:
    """This thread's open reader for the raster ``proto`` describes (opened once, kept)."""
    cache = _READERS.__dict__.setdefault("readers", {})
    key = (proto.path, tuple(proto.bands), proto.stretch)
    if key not in cache:
        reader = TileReader(proto.path, proto.bands, stretch=proto.stretch)
        reader.__enter__()
        cache[key] = reader
    return cache[key]


def segment_task(proto: TileReader, tiles: Sequence[Tile], spec: object, options: Options) -> list:
    """Read and segment ``tiles`` on a worker. Per tile: ``None`` (every pixel masked: never sent
    to the model), a :func:`~fastsam_geo.cache.encode` record, or ``("error", message)`` when
    the segmenter failed on that tile alone (a failing batch is retried tile by tile)."""
    reader = _reader(proto)
    out: list = [None] * len(tiles)
    todo = []
    for i, tile in enumerate(tiles):
        image, valid = reader.read(tile)
        if valid.any():
            todo.append((i, tile, image, valid))
    if not todo:
        return out
    seg, lock = worker_segmenter(spec, options)

    def run(items):
        with lock:
            results = segment_tiles(seg, [im for _, _, im, _ in items])
        for (i, tile, _, valid), res in zip(items, results):
            out[i] = encode(to_instances(res, (tile.height, tile.width), valid, min_area=options.min_area))

    try:
        run(todo)
    except Exception:
        for item in todo:
            try:
                run([item])
            except Exception as exc:
                out[item[0]] = ("error", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return out


# -- on the client ---------------------------------------------------------------------------------

def iter_objects_dask(client, reader: TileReader, grid: TileGrid, spec: object, options: Options, *,
                      batch_size: int = 4, progress: ProgressCallback | None = None,
                      merger: SeamMerger | None = None, stats: RunStats | None = None,
                      tiles: Sequence[Tile] | None = None, regions=None, store: MemoryStore | None = None,
                      finish: Callable[[list[MergedObject]], object] | None = None) -> Iterator:
    """:func:`fastsam_geo.pipeline.iter_objects` with the network on ``client``'s workers: the
    same arguments and the same objects, in the same order (see the module's notes)."""
    from distributed import as_completed

    stats, merger, finish, todo, regions = run_state(grid, tiles, regions, stats, merger, finish)
    nthreads = client.nthreads()
    stats.extra["workers"] = len(nthreads)
    window = max(2, WINDOW_PER_THREAD * max(1, sum(nthreads.values())))
    proto = _proto(reader)
    total, done = len(todo), [0]
    stats.extra.setdefault("bytes_back", 0)
    futures: dict = {}
    try:
        while todo:
            units = _units(todo, store, grid, batch_size)
            results: dict[int, list] = {}
            ac = as_completed()
            nxt = submitted = 0
            t_wait = time.perf_counter()
            while nxt < len(units):
                while submitted < len(units) and len(futures) + len(results) < window:  # in flight + buffered
                    if units[submitted][0] == "task":
                        fut = client.submit(segment_task, proto, units[submitted][1], spec, options, pure=False)
                        futures[fut] = submitted
                        ac.add(fut)
                    submitted += 1
                if units[nxt][0] == "task" and nxt not in results:
                    fut = next(ac)
                    i = futures.pop(fut)
                    results[i] = _result(fut, units[i][1])
                    stats.extra["bytes_back"] += _nbytes(results[i])
                    continue
                kind, batch = units[nxt]
                stats.extra["wait_seconds"] = stats.extra.get("wait_seconds", 0.0) + time.perf_counter() - t_wait
                objects = _merge(kind, batch, results.pop(nxt, None), store, grid, merger, options, stats,
                                 lambda t: client.submit(segment_task, proto, [t], spec, options, pure=False).result())
                done[0] += len(batch)
                nxt += 1
                out = finish(objects) if objects else None
                stats.tiles = done[0]
                if progress is not None and progress(Progress(done[0], total, stats.objects)) is False:
                    raise Cancelled("cancelled")
                if out is not None:
                    yield out
                t_wait = time.perf_counter()
            todo = [grid.tiles[i] for i in sorted(merger.awaited(regions))] if tiles is not None else []
            total += len(todo)
    finally:
        if futures:
            client.cancel(list(futures))
    yield from end_run(merger, finish, progress, stats, done[0], total)


def _result(fut, batch: Sequence[Tile]) -> list:
    """A task's result; a task whose workers kept dying (Dask's ``KilledWorker``, after its allowed
    failures) is a :class:`TileError` naming its tiles, not an unexpected error: with a job folder
    the finished tiles are kept and a rerun resumes."""
    try:
        return fut.result()
    except Exception as exc:
        if type(exc).__name__ != "KilledWorker":
            raise
        first, last = batch[0], batch[-1]
        raise TileError(f"Dask workers died running tiles ({first.row}, {first.col}) to ({last.row}, {last.col}) "
                        "(out of memory? see the workers' logs); with --job-dir, rerunning the same command "
                        "resumes from the finished tiles") from exc


def _proto(reader: TileReader) -> TileReader:
    """A closed copy of ``reader`` to send to workers (path, bands, the run's global stretch)."""
    proto = TileReader.__new__(TileReader)
    proto.__dict__.update(reader.__getstate__())
    if is_local(proto.path):  # a worker runs in another folder: "scene.tif" would be its own
        proto.path = os.path.abspath(proto.path)
    return proto


def _units(todo: list[Tile], store: MemoryStore | None, grid: TileGrid, batch_size: int) -> list[tuple]:
    """``todo`` in order as ``("stored", [tile])`` (found in the store: not submitted) and
    ``("task", [tiles])`` (consecutive tiles to segment, at most ``batch_size``)."""
    units: list[tuple] = []
    for tile in todo:
        if store is not None and store.has(grid.index(tile)):
            units.append(("stored", [tile]))
        elif units and units[-1][0] == "task" and len(units[-1][1]) < batch_size:
            units[-1][1].append(tile)
        else:
            units.append(("task", [tile]))
    return units


def _merge(kind: str, batch: list[Tile], result: list | None, store, grid: TileGrid, merger: SeamMerger,
           options: Options, stats: RunStats, again: Callable[[Tile], list]) -> list[MergedObject]:
    """One unit's tiles into the merger, in order; new results into the store. ``again``
    segments a tile whose stored record turned out damaged (the store removed it)."""
    objects: list[MergedObject] = []
    for k, tile in enumerate(batch):
        shape = (tile.height, tile.width)
        inst = None
        if kind == "stored":
            inst = store.get(grid.index(tile))  # validated on load; None if damaged: segment it here
            if inst is None:
                result = again(tile)
                k = 0
            else:
                stats.tiles_cached += 1
        if inst is None:
            rec = result[k]
            if rec is None:
                stats.tiles_skipped += 1
                inst = Instances.empty(shape)
            elif isinstance(rec, tuple):
                if not options.skip_failed_tiles:
                    x0, y0, x1, y1 = tile.box
                    raise TileError(f"segmenting tile row {tile.row}, column {tile.col} (pixels x {x0}-{x1}, "
                                    f"y {y0}-{y1}) failed on a worker: {rec[1]}; --skip-failed-tiles goes on "
                                    "without it")
                stats.failed.append((tile, rec[1]))
                inst = Instances.empty(shape)
            else:
                inst = decode(rec)
                if store is not None:
                    store.put(grid.index(tile), inst)
                stats.instances += len(inst)
        objects.extend(merger.add(tile, suppress_duplicates(inst) if options.dedup else inst))
    return objects


def _nbytes(result: list) -> int:
    """Bytes of a task's results as they travel (the arrays' payload)."""
    return sum(sum(a.nbytes for a in r.values()) for r in result if isinstance(r, dict))
