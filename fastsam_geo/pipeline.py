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

from .cache import MemoryStore as TileStore
from .errors import Cancelled, SegmenterError
from .masks import to_instances
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
    instances: int = 0
    objects: int = 0
    segment_seconds: float = 0.0
    read_seconds: float = 0.0
    post_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def iter_batches(reader: TileReader, tiles: Sequence[Tile], batch_size: int, stats: RunStats,
                 ready: list[tuple[Tile, Instances]], store: TileStore | None = None,
                 index: Callable[[Tile], int] | None = None
                 ) -> Iterator[tuple[list[Tile], list[np.ndarray], list[np.ndarray]]]:
    """Read ``tiles`` in order and yield batches of the ones the model must see.

    Tiles already in ``store`` are not read: their instances are appended to ``ready``, as
    are fully masked tiles (with no instances; they are never sent to the model).
    """
    batch: tuple[list, list, list] = ([], [], [])
    for tile in tiles:
        if store is not None and index is not None:
            cached = store.get(index(tile))
            if cached is not None:
                stats.tiles_cached += 1
                ready.append((tile, cached))
                continue
        t0 = time.perf_counter()
        image, valid = reader.read(tile)
        stats.read_seconds += time.perf_counter() - t0
        if not valid.any():
            stats.tiles_skipped += 1
            ready.append((tile, Instances.empty((tile.height, tile.width))))
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


def iter_objects(reader: TileReader, grid: TileGrid, segmenter: SegmentFn, *, batch_size: int = 4,
                 min_area: int = 16, progress: ProgressCallback | None = None,
                 merger: SeamMerger | None = None, stats: RunStats | None = None,
                 tiles: Sequence[Tile] | None = None, regions: list[tuple[int, int, int, int]] | None = None,
                 store: TileStore | None = None) -> Iterator[list[MergedObject]]:
    """Segment ``tiles`` (default: the whole grid) and yield merged objects (raster pixels).

    Objects cut by seams are merged across tiles; each is yielded once, as soon as every
    tile it touches has been processed. When only some ``tiles`` are asked for, the
    neighbours needed to finish the objects reaching into ``regions`` (raster-pixel boxes;
    default: the asked tiles) are segmented too, so those objects come out whole. Tiles
    found in ``store`` are not read or segmented; new results are put there. ``progress`` is
    called after each batch; if it returns False the run stops with
    :class:`~fastsam_geo.errors.Cancelled`.
    """
    stats = stats if stats is not None else RunStats()
    merger = merger or SeamMerger(grid)
    todo = list(grid) if tiles is None else list(tiles)
    if regions is None and tiles is not None:
        regions = [t.box for t in todo]
    total, done = len(todo), 0

    while todo:
        ready: list[tuple[Tile, Instances]] = []
        for batch_tiles, images, valids in iter_batches(reader, todo, batch_size, stats, ready, store,
                                                        grid.index):
            t0 = time.perf_counter()
            results = segment_tiles(segmenter, images)
            t1 = time.perf_counter()
            stats.segment_seconds += t1 - t0
            objects = [o for t, inst in ready for o in merger.add(t, inst)]
            done += len(ready)
            ready.clear()
            for tile, result, valid in zip(batch_tiles, results, valids):
                inst = to_instances(result, (tile.height, tile.width), valid, min_area=min_area)
                if store is not None:
                    store.put(grid.index(tile), inst)
                stats.instances += len(inst)
                objects.extend(merger.add(tile, inst))
            done += len(batch_tiles)
            stats.tiles = done
            stats.post_seconds += time.perf_counter() - t1
            if objects:
                yield objects
            if progress is not None and progress(Progress(done, total, stats.objects)) is False:
                raise Cancelled("cancelled")
        objects = [o for t, inst in ready for o in merger.add(t, inst)]
        done += len(ready)
        if objects:
            yield objects
        # objects reaching beyond the asked tiles: segment the tiles needed to finish them
        todo = [grid.tiles[i] for i in sorted(merger.awaited(regions))] if tiles is not None else []
        total += len(todo)
        stats.extra["expanded_tiles"] = stats.extra.get("expanded_tiles", 0) + len(todo)
    stats.tiles = done
    objects = merger.flush()
    if objects:
        yield objects
    if progress is not None:
        progress(Progress(done, total, stats.objects))


def run(reader: TileReader, grid: TileGrid, segmenter: SegmentFn, *, batch_size: int = 4,
        options: VectorOptions = VectorOptions(), progress: ProgressCallback | None = None,
        stats: RunStats | None = None, tiles: Sequence[Tile] | None = None,
        regions: list[tuple[int, int, int, int]] | None = None,
        store: TileStore | None = None) -> Iterator[tuple[list, list[float]]]:
    """:func:`iter_objects`, vectorised: yields ``(geometries, scores)`` in the raster's CRS."""
    stats = stats if stats is not None else RunStats()
    transform = reader.info.transform
    for objects in iter_objects(reader, grid, segmenter, batch_size=batch_size, min_area=options.min_area,
                                progress=progress, stats=stats, tiles=tiles, regions=regions, store=store):
        t0 = time.perf_counter()
        geoms, scores = objects_to_records(objects, transform, min_component=options.min_component,
                                           min_hole=options.min_hole, simplify=options.simplify)
        stats.objects += len(geoms)
        stats.post_seconds += time.perf_counter() - t0
        if geoms:
            yield geoms, scores
