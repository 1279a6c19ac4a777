"""Orchestration: tiles -> batches -> segmenter -> instances -> seam merge -> polygons.

Pure control flow over the adapters (``raster.TileReader``, a segmenter) and the pure core
(``masks``, ``merge``, ``vectorize``). Memory is bounded by one batch of tiles plus the
seam candidates the merger holds (about one row of tiles), never by the raster's area.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .cache import MemoryStore as TileStore
from .errors import Cancelled, SegmenterError, TileError
from .masks import Regions, suppress_duplicates, to_instances
from .merge import SeamMerger
from .models import SegmentFn
from .raster import TileReader
from .tiling import TileGrid
from .types import Instances, MaskSet, MergedObject, Progress, ProgressCallback, Tile
from .vectorize import objects_to_records


@dataclass(frozen=True)
class VectorOptions:
    """How masks become polygons: see :func:`fastsam_geo.vectorize.mask_to_geometry`.

    ``min_area`` drops instances smaller than this many pixels before merging.
    """

    min_area: int = 16
    min_component: int = 16
    min_hole: int = 9
    simplify: float = 0.0


@dataclass
class RunStats:
    """Counters of one run, for logs and benchmarks (seconds are wall-clock)."""

    tiles: int = 0
    tiles_skipped: int = 0
    tiles_cached: int = 0
    prepare_seconds: float = 0.0
    instances: int = 0
    objects: int = 0
    segment_seconds: float = 0.0
    read_seconds: float = 0.0
    post_seconds: float = 0.0
    failed: list = field(default_factory=list)  # (tile, error message) of tiles skipped after failing
    extra: dict = field(default_factory=dict)


def iter_batches(reader: TileReader, tiles: Sequence[Tile], batch_size: int | Callable[[], int], stats: RunStats,
                 store: TileStore | None = None, index: Callable[[Tile], int] | None = None,
                 stop: threading.Event | None = None) -> Iterator[tuple]:
    """Read ``tiles`` in order; yield ``("ready", tile, instances)`` for tiles that need no
    model (cached in ``store``, or fully masked: never sent to the model) and
    ``("batch", tiles, images, valids)`` for batches the model must see, every tile in the
    order given (a batch is cut short before a ready tile). ``batch_size`` may be
    a callable, asked before each batch (it shrinks after an out-of-memory error).
    """
    size = batch_size if callable(batch_size) else (lambda: batch_size)
    batch: tuple[list, list, list] = ([], [], [])
    for tile in tiles:
        if stop is not None and stop.is_set():
            return
        if store is not None and index is not None:
            cached = store.get(index(tile))
            if cached is not None:
                stats.tiles_cached += 1
                if batch[0]:  # tiles reach the merger in order, whichever were cached (a resumed
                    yield ("batch", *batch)  # job's output must be the uninterrupted run's)
                    batch = ([], [], [])
                yield ("ready", tile, cached)
                continue
        t0 = time.perf_counter()
        image, valid = reader.read(tile)
        stats.read_seconds += time.perf_counter() - t0
        if not valid.any():
            stats.tiles_skipped += 1
            if batch[0]:
                yield ("batch", *batch)
                batch = ([], [], [])
            yield ("ready", tile, Instances.empty((tile.height, tile.width)))
            continue
        batch[0].append(tile)
        batch[1].append(image)
        batch[2].append(valid)
        if len(batch[0]) >= size():
            yield ("batch", *batch)
            batch = ([], [], [])
    if batch[0]:
        yield ("batch", *batch)


def segment_tiles(segmenter: SegmentFn, images: list[np.ndarray]) -> list[MaskSet | Instances]:
    """Call the segmenter and check it returned one result per image."""
    results = list(segmenter(images))
    if len(results) != len(images):
        raise SegmenterError(f"segmenter returned {len(results)} results for {len(images)} images")
    return results


def segment_tile(reader: TileReader, tile: Tile, segmenter: SegmentFn, min_area: int = 16) -> Instances:
    """One tile's instances outside a run (the same steps as the batched stages: a fully
    masked tile never reaches the model; masks are clipped to valid pixels)."""
    image, valid = reader.read(tile)
    if not valid.any():
        return Instances.empty((tile.height, tile.width))
    return to_instances(segment_tiles(segmenter, [image])[0], (tile.height, tile.width), valid, min_area=min_area)


def staged(segmenter: object) -> bool:
    """Whether a segmenter exposes ``prepare`` / ``infer`` / ``decode`` stages to overlap."""
    return all(callable(getattr(segmenter, m, None)) for m in ("prepare", "infer", "decode"))


_DONE = object()


class _Worker(threading.Thread):
    """A stage thread feeding a bounded queue; its exception is handed to the consumer."""

    def __init__(self, fn: Callable[[Callable[[object], None]], None], maxsize: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.queue: queue.Queue = queue.Queue(maxsize)
        self.fn, self.stop = fn, stop

    def put(self, item: object) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def run(self) -> None:
        try:
            self.fn(self.put)
        except BaseException as exc:  # re-raised in the consumer thread
            self.put(("error", exc))
        self.put(_DONE)

    def items(self) -> Iterator:
        while True:
            item = self.queue.get()
            if item is _DONE:
                return
            if item[0] == "error":
                raise item[1]
            yield item

    def ready(self) -> Iterator:
        """What the worker has finished so far, without waiting."""
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if item is _DONE:
                self.queue.put(_DONE)  # leave the end marker for items()
                return
            if item[0] == "error":
                raise item[1]
            yield item


def run_state(grid: TileGrid, tiles: Sequence[Tile] | None, regions, stats: RunStats | None,
              merger: SeamMerger | None, finish: Callable | None) -> tuple:
    """What a run of :func:`iter_objects` (or its Dask twin) starts from: ``(stats, merger, finish,
    todo, regions)`` with defaults filled in: every tile when ``tiles`` is None, and the asked
    tiles' boxes as the regions when only ``tiles`` is given (``regions`` as :class:`Regions`)."""
    todo = list(grid) if tiles is None else list(tiles)
    if regions is None and tiles is not None:
        regions = [t.box for t in todo]
    if regions is not None and not isinstance(regions, Regions):
        regions = Regions(regions)
    return (stats if stats is not None else RunStats(), merger or SeamMerger(grid),
            finish or (lambda objs: objs), todo, regions)


def end_run(merger: SeamMerger, finish: Callable, progress: ProgressCallback | None, stats: RunStats,
            done: int, total: int) -> Iterator:
    """How a run of :func:`iter_objects` (or its Dask twin) ends: the merger's held objects
    flushed (through ``finish``), and a last progress report."""
    stats.tiles = done
    objects = merger.flush()
    if objects:
        yield finish(objects)
    if progress is not None:
        progress(Progress(done, total, stats.objects))


def iter_objects(reader: TileReader, grid: TileGrid, segmenter: SegmentFn, *, batch_size: int = 4,
                 min_area: int = 16, progress: ProgressCallback | None = None,
                 merger: SeamMerger | None = None, stats: RunStats | None = None,
                 tiles: Sequence[Tile] | None = None, regions: Regions | list[tuple[int, int, int, int]] | None = None,
                 store: TileStore | None = None, finish: Callable[[list[MergedObject]], object] | None = None,
                 threads: bool = True, dedup: bool = False, skip_failed: bool = False) -> Iterator:
    """Segment ``tiles`` (default: the whole grid) and yield merged objects (raster pixels).

    Objects cut by seams are merged across tiles; each is yielded once, as soon as every
    tile it touches has been processed. When only some ``tiles`` are asked for, the
    neighbours needed to finish the objects reaching into ``regions`` (raster-pixel boxes;
    default: the asked tiles) are segmented too, so those objects come out whole. Tiles
    found in ``store`` are not read or segmented; new results are put there.

    With ``threads`` the work runs in three overlapping stages: a reader thread reads (and,
    for staged segmenters, letterboxes) the next batch, the calling thread runs the network,
    and a post thread decodes masks, merges seams and applies ``finish`` (e.g. vectorising)
    to each list of finished objects; what is yielded is ``finish``'s result. ``progress``
    is called after each batch; if it returns False the run stops with
    :class:`~fastsam_geo.errors.Cancelled`. However the run ends (done, cancelled, failed, or
    the generator closed by its consumer), both stage threads have stopped before this
    generator returns, so the caller may close the reader right after. ``dedup``: keep one
    mask per object of each tile (:func:`~fastsam_geo.masks.suppress_duplicates`), applied after
    the store (which keeps the segmenter's own output). A batch that runs out of accelerator
    memory is split in halves (and later batches are smaller); a tile whose segmentation fails
    otherwise raises :class:`~fastsam_geo.errors.TileError` naming its window, or with
    ``skip_failed`` is recorded in ``stats.failed`` and counted as empty.
    """
    stats, merger, finish, todo, regions = run_state(grid, tiles, regions, stats, merger, finish)
    total = len(todo)
    done = [0]
    split = staged(segmenter)
    stop = threading.Event()

    size = [batch_size]  # halved for the rest of the run after an out-of-memory error

    def read_stage(put):
        for item in iter_batches(reader, todo, lambda: size[0], stats, store, grid.index, stop):
            if item[0] == "batch" and split:
                t0 = time.perf_counter()
                item = ("batch", item[1], segmenter.prepare(item[2]), item[3], item[2])
                stats.prepare_seconds += time.perf_counter() - t0
            put(item)

    def infer(tiles_, images, prepared=None):
        if not split:
            return segment_tiles(segmenter, images)
        return segmenter.infer(prepared if prepared is not None else segmenter.prepare(images))

    def network(item) -> list:
        """The network on one batch: ``[item]`` out, or several when the batch had to be split
        (out of memory: halves, and smaller batches from then on; another error: tile by tile,
        to name the tile that fails, which stops the run unless ``skip_failed``)."""
        if item[0] != "batch":
            return [item]
        t0 = time.perf_counter()
        _, batch_tiles, data, valids, *rest = item
        images = rest[0] if rest else data
        out = _guarded(infer, batch_tiles, images, valids, data if split else None, size, skip_failed,
                       reader.path, stats)
        stats.segment_seconds += time.perf_counter() - t0
        return out

    def post(item) -> object:
        t1 = time.perf_counter()
        if item[0] == "failed":  # skipped after failing: processed, with nothing found
            objects = merger.add(item[1], Instances.empty((item[1].height, item[1].width)))
            done[0] += 1
        elif item[0] == "ready":
            objects = merger.add(item[1], suppress_duplicates(item[2]) if dedup else item[2])
            done[0] += 1
        else:
            _, batch_tiles, raw, valids = item[:4]
            results = segmenter.decode(raw) if split else raw
            if len(results) != len(batch_tiles):
                raise SegmenterError(f"segmenter returned {len(results)} results for {len(batch_tiles)} images")
            objects = []
            for tile, result, valid in zip(batch_tiles, results, valids):
                inst = to_instances(result, (tile.height, tile.width), valid, min_area=min_area)
                if store is not None:
                    store.put(grid.index(tile), inst)
                stats.instances += len(inst)
                objects.extend(merger.add(tile, suppress_duplicates(inst) if dedup else inst))
            done[0] += len(batch_tiles)
        out = finish(objects) if objects else None
        stats.post_seconds += time.perf_counter() - t1
        return ("out", out)

    def report(item) -> Iterator:
        stats.tiles = done[0]
        if progress is not None and progress(Progress(done[0], total, stats.objects)) is False:
            raise Cancelled("cancelled")
        if item[1] is not None:
            yield item[1]

    try:
        while todo:
            if threads:
                yield from _threaded(read_stage, network, post, report, stop)
            else:
                for item in iter_batches(reader, todo, lambda: size[0], stats, store, grid.index):
                    if item[0] == "batch" and split:
                        item = ("batch", item[1], segmenter.prepare(item[2]), item[3], item[2])
                    for sub in network(item):
                        yield from report(post(sub))
            # objects reaching beyond the asked tiles: segment the tiles needed to finish them
            todo = [grid.tiles[i] for i in sorted(merger.awaited(regions))] if tiles is not None else []
            total += len(todo)
            stats.extra["expanded_tiles"] = stats.extra.get("expanded_tiles", 0) + len(todo)
    finally:
        stop.set()
    yield from end_run(merger, finish, progress, stats, done[0], total)


def _is_oom(exc: BaseException) -> bool:
    """An accelerator out-of-memory error (torch's, without importing torch)."""
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def _guarded(infer, tiles: list[Tile], images: list, valids: list, prepared, size: list[int], skip_failed: bool,
             path: str, stats: RunStats) -> list[tuple]:
    """``infer`` on a batch, as ``("batch", tiles, raw, valids)`` items: split in halves on an
    out-of-memory error (and ``size[0]``, the batch size for the rest of the run, halved);
    on another error retried tile by tile, so the tile that fails is named (``TileError``)
    or, with ``skip_failed``, given back as a ``("failed", tile)`` item."""
    try:
        return [("batch", tiles, infer(tiles, images, prepared), valids)]
    except Exception as exc:
        if len(tiles) > 1:
            if _is_oom(exc):
                size[0] = max(1, min(size[0], len(tiles)) // 2)
            h = len(tiles) // 2 if _is_oom(exc) else 1
            parts = [(tiles[i:i + h], images[i:i + h], valids[i:i + h]) for i in range(0, len(tiles), h)]
            return [item for t, im, v in parts for item in _guarded(infer, t, im, v, None, size, skip_failed,
                                                                   path, stats)]
        tile = tiles[0]
        x0, y0, x1, y1 = tile.box
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = f"tile row {tile.row}, column {tile.col} (pixels x {x0}-{x1}, y {y0}-{y1})"
        if not skip_failed:
            raise TileError(f"{path}: segmenting {where} failed: {first}"
                            + ("; use a smaller --tile-size or --device cpu" if _is_oom(exc) else
                               "; --skip-failed-tiles goes on without it")) from exc
        stats.failed.append((tile, first))
        return [("failed", tile)]


def _threaded(read_stage, network, post, report, stop: threading.Event) -> Iterator:
    """Run the three stages: a reader thread, the network here, a post thread; yield what
    ``report`` yields for each post result. On every way out (done, an error in any stage, a
    cancel, the consumer closing the generator) both threads are stopped and joined before
    this returns: nothing reads from the raster after the caller closes it."""
    post_in: queue.Queue = queue.Queue(2)
    reader_thread = _Worker(read_stage, 2, stop)
    post_thread = _Worker(lambda put: [put(post(i)) for i in iter(post_in.get, _DONE)], 0, stop)
    reader_thread.start()
    post_thread.start()
    finished = False
    try:
        for batch in reader_thread.items():
            for item in network(batch):
                while True:  # hand over to the post stage; meanwhile yield what it finished
                    for out in post_thread.ready():
                        yield from report(out)
                    try:
                        post_in.put(item, timeout=0.05)
                        break
                    except queue.Full:
                        if not post_thread.is_alive():
                            break  # it died: its error is in its queue
        _send(post_in, _DONE, post_thread)
        for out in post_thread.items():
            yield from report(out)
        finished = True
    finally:
        if not finished:
            stop.set()  # the stages' puts and the reader's loop give up at once
            _send(post_in, _DONE, post_thread)
        post_thread.join()
        reader_thread.join()


def _send(q: queue.Queue, item: object, consumer: threading.Thread) -> None:
    """Put ``item`` on ``q`` unless its consumer thread has ended (never block on a dead one)."""
    while consumer.is_alive():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def run(reader: TileReader, grid: TileGrid, segmenter: SegmentFn, *, batch_size: int = 4,
        options: VectorOptions = VectorOptions(), progress: ProgressCallback | None = None,
        stats: RunStats | None = None, tiles: Sequence[Tile] | None = None,
        regions: list[tuple[int, int, int, int]] | None = None,
        store: TileStore | None = None, threads: bool = True) -> Iterator[tuple[list, list[float]]]:
    """:func:`iter_objects`, vectorised in the post stage: yields ``(geometries, scores)`` in the
    raster's CRS."""
    stats = stats if stats is not None else RunStats()
    transform = reader.info.transform

    def vectorise(objects):
        geoms, scores = objects_to_records(objects, transform, min_component=options.min_component,
                                           min_hole=options.min_hole, simplify=options.simplify)
        stats.objects += len(geoms)
        return geoms, scores

    for geoms, scores in iter_objects(reader, grid, segmenter, batch_size=batch_size, min_area=options.min_area,
                                      progress=progress, stats=stats, tiles=tiles, regions=regions, store=store,
                                      finish=vectorise, threads=threads):
        if geoms:
            yield geoms, scores
