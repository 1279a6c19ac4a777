"""Orchestration: tiles -> batches -> segmenter -> instances -> seam merge -> polygons.

Pure control flow over the adapters (``raster.TileReader``, a segmenter) and the pure core
(``masks``, ``merge``, ``vectorize``). Memory is bounded by one batch of tiles plus the
seam candidates the merger holds (about one row of tiles), never by the raster's area.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import Cancelled, SegmenterError
from .masks import to_instances
from .merge import SeamMerger
from .raster import TileReader
from .tiling import TileGrid
from .types import Instances, MaskSet, Progress, ProgressCallback, Tile
from .vectorize import objects_to_records

SegmentFn = Callable[[list[np.ndarray]], Sequence[MaskSet | Instances]]


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
    instances: int = 0
    objects: int = 0
    segment_seconds: float = 0.0
    read_seconds: float = 0.0
    post_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def iter_batches(reader: TileReader, tiles: Sequence[Tile], batch_size: int, stats: RunStats,
                 skipped: list[Tile]) -> Iterator[tuple[list[Tile], list[np.ndarray], list[np.ndarray]]]:
    """Read ``tiles`` in order and yield batches of non-empty ones.

    Fully masked tiles are never sent to the model; they are appended to ``skipped``
    (the caller still tells the merger they hold nothing).
    """
    batch: tuple[list, list, list] = ([], [], [])
    for tile in tiles:
        t0 = time.perf_counter()
        image, valid = reader.read(tile)
        stats.read_seconds += time.perf_counter() - t0
        if not valid.any():
            stats.tiles_skipped += 1
            skipped.append(tile)
            continue
        batch[0].append(tile)
        batch[1].append(image)
        batch[2].append(valid)
        if len(batch[0]) == batch_size:
            yield batch
            batch = ([], [], [])
    if batch[0]:
        yield batch


def segment_tiles(segmenter: SegmentFn, images: list[np.ndarray]) -> list[MaskSet | Instances]:
    """Call the segmenter and check it returned one result per image."""
    results = list(segmenter(images))
    if len(results) != len(images):
        raise SegmenterError(f"segmenter returned {len(results)} results for {len(images)} images")
    return results


def run(reader: TileReader, grid: TileGrid, segmenter: SegmentFn, *, batch_size: int = 4,
        options: VectorOptions = VectorOptions(), progress: ProgressCallback | None = None,
        merger: SeamMerger | None = None, stats: RunStats | None = None,
        tiles: Sequence[Tile] | None = None,
        region: tuple[int, int, int, int] | None = None) -> Iterator[tuple[list, list[float]]]:
    """Segment ``tiles`` (default: the whole grid) and yield ``(geometries, scores)`` batches.

    Geometries are in the raster's CRS. Objects cut by seams are merged across tiles;
    each is yielded once, as soon as every tile it touches has been processed. When only
    some ``tiles`` are asked for, the neighbours needed to finish the objects that reach
    into ``region`` (raster pixels; default the asked tiles) are segmented too, so those
    objects come out whole. ``progress`` is called after each batch; if it returns False
    the run stops with :class:`~fastsam_geo.errors.Cancelled`.
    """
    stats = stats if stats is not None else RunStats()
    merger = merger or SeamMerger(grid)
    todo = list(grid) if tiles is None else list(tiles)
    if region is None and tiles is not None and todo:
        region = (min(t.x for t in todo), min(t.y for t in todo),
                  max(t.x + t.width for t in todo), max(t.y + t.height for t in todo))
    transform = reader.info.transform
    total, done = len(todo), 0

    def emit(objects: list) -> tuple[list, list[float]]:
        geoms, scores = objects_to_records(objects, transform, min_component=options.min_component,
                                           min_hole=options.min_hole, simplify=options.simplify)
        stats.objects += len(geoms)
        return geoms, scores

    def add_empty(skipped: list[Tile]) -> list:
        objs = [o for t in skipped for o in merger.add(t, Instances.empty((t.height, t.width)))]
        skipped.clear()
        return objs

    while todo:
        skipped: list[Tile] = []
        for batch_tiles, images, valids in iter_batches(reader, todo, batch_size, stats, skipped):
            t0 = time.perf_counter()
            results = segment_tiles(segmenter, images)
            t1 = time.perf_counter()
            stats.segment_seconds += t1 - t0
            done += len(skipped)
            objects = add_empty(skipped)
            for tile, result, valid in zip(batch_tiles, results, valids):
                inst = to_instances(result, (tile.height, tile.width), valid, min_area=options.min_area)
                stats.instances += len(inst)
                objects.extend(merger.add(tile, inst))
            done += len(batch_tiles)
            stats.tiles = done
            out = emit(objects)
            stats.post_seconds += time.perf_counter() - t1
            if out[0]:
                yield out
            if progress is not None and progress(Progress(done, total, stats.objects)) is False:
                raise Cancelled("cancelled")
        done += len(skipped)
        out = emit(add_empty(skipped))
        if out[0]:
            yield out
        # objects reaching beyond the asked tiles: segment the tiles needed to finish them
        todo = [grid.tiles[i] for i in sorted(merger.awaited(region))] if tiles is not None else []
        total += len(todo)
        stats.extra["expanded_tiles"] = stats.extra.get("expanded_tiles", 0) + len(todo)
    stats.tiles = done
    out = emit(merger.flush())
    if out[0]:
        yield out
    if progress is not None:
        progress(Progress(done, total, stats.objects))
