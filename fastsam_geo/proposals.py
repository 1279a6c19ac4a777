"""Object proposals: every candidate box the segmenter found, georeferenced, once per object.

FastSAM's paper uses its everything-mode boxes as class-agnostic object proposals. Here the
per-tile results the pipeline produces (the same tiles, cache and threads as a segmentation run)
are collected as boxes (each candidate mask's tight box, raster pixels) and de-duplicated across
seams by :func:`dedup_boxes`: a box seen whole by two tiles becomes one, a partial view cut by a
tile's inner edge gives way to another tile's whole view, and the partial views of an object no
tile sees whole are joined. Boxes of one tile are never merged with each other (nested objects,
FastSAM's everything mode, stay).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import shapely

from .errors import EmptyResultError
from .io import check_output, empty_frame, write
from .models import load_segmenter, model_card, resolve_gsd
from .options import Options
from .pipeline import iter_objects
from .progress import as_callback
from .raster import TileReader, model_levels, read_info
from .tiling import TileGrid, plan_tiles
from .types import Instances, ProgressCallback, Tile

__all__ = ["BoxSet", "dedup_boxes", "proposals"]

COLUMNS = {"score": "float32", "rank": "int64", "tiles": "int64"}
EDGE_MARGIN = 8
"""A box within this many pixels of an inner tile edge is a partial view (as the seam merger's)."""
TOLERANCE = 3
"""Pixels two tiles' boxes of one object may differ by on each side (real networks draw a roof a
pixel or two wider in one tile than in the next: for a 10-px building that alone halves the IoU)."""


@dataclass(frozen=True, eq=False)
class BoxSet:
    """Candidate boxes in raster pixels: ``boxes`` float64 ``(N, 4)`` XYXY (exclusive max),
    ``scores`` float32 ``(N,)``, ``tile`` int64 ``(N,)`` (grid index of the tile that saw each)
    and ``partial`` bool ``(N,)`` (within :data:`EDGE_MARGIN` px of that tile's inner edges);
    ``crops`` maps the index of each partial box to its bool mask crop (the box's shape)."""

    boxes: np.ndarray
    scores: np.ndarray
    tile: np.ndarray
    partial: np.ndarray
    crops: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(intersection areas, IoU)`` of XYXY boxes ``a`` ``(N, 4)`` and ``b`` ``(M, 4)``."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return inter, np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def dedup_boxes(found: BoxSet, iou: float = 0.5, cover: float = 0.7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One box per object across tiles. Returns ``(boxes (K, 4), scores (K,), tiles (K,))``: the
    kept boxes by decreasing score, with how many tiles' views each stands for.

    1. Whole views, best score first: a box is dropped when a kept whole box *of another tile*
       has IoU >= ``iou`` with it or differs by at most :data:`TOLERANCE` px on every side (the
       same object seen by two tiles).
    2. Partial views: dropped when a kept whole box of another tile, grown by :data:`TOLERANCE`,
       covers at least ``cover`` of the partial box (the cut view of an object another tile saw whole).
    3. The partial views left (objects no tile sees whole) are joined, across tiles only, where
       their masks share a pixel (``crops``; where a crop is missing, where their boxes overlap by
       half the smaller): the joined box is their union, its score the highest. ``tiles`` counts
       the whole views a kept box stands for, or the tiles joined.
    """
    n = len(found)
    if n == 0:
        return np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64)
    b, s, t, part = found.boxes, found.scores, found.tile, found.partial
    whole = np.flatnonzero(~part)
    whole = whole[np.argsort(-s[whole], kind="stable")]
    _, wiou = _iou_matrix(b[whole], b[whole])
    close_ = np.abs(b[whole][:, None, :] - b[whole][None, :, :]).max(2) <= TOLERANCE
    same = (wiou >= iou) | close_
    kept: list[int] = []  # positions in `whole`
    count: dict[int, int] = {}
    for i in range(len(whole)):
        dup = next((k for k in kept if t[whole[k]] != t[whole[i]] and same[i, k]), None)
        if dup is None:
            kept.append(i)
            count[i] = 1
        else:
            count[dup] += 1
    kb = b[whole[kept]]
    rest = np.flatnonzero(part)
    if len(rest) and len(kb):
        inter, _ = _iou_matrix(b[rest], kb + np.array([-TOLERANCE, -TOLERANCE, TOLERANCE, TOLERANCE]))
        area = (b[rest, 2] - b[rest, 0]) * (b[rest, 3] - b[rest, 1])
        other = t[rest][:, None] != t[whole[kept]][None, :]
        covered = ((inter >= cover * area[:, None]) & other).any(1)
        rest = rest[~covered]
    # join the remaining partial views across tiles (union-find)
    parent = list(range(len(rest)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if len(rest) > 1:
        inter, _ = _iou_matrix(b[rest], b[rest])
        area = (b[rest, 2] - b[rest, 0]) * (b[rest, 3] - b[rest, 1])
        small = np.minimum(area[:, None], area[None, :])
        cand = (inter > 0) & (t[rest][:, None] != t[rest][None, :])
        for i, j in zip(*np.nonzero(np.triu(cand, 1))):
            a, c = int(rest[i]), int(rest[j])
            if a in found.crops and c in found.crops:
                ok = _masks_touch(b[a], found.crops[a], b[c], found.crops[c])
            else:
                ok = inter[i, j] >= 0.5 * small[i, j]
            if ok:
                parent[root(int(i))] = root(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(len(rest)):
        groups.setdefault(root(i), []).append(int(rest[i]))
    out_b = [kb] if len(kb) else []
    out_s = [s[whole[kept]]]
    out_t = [np.array([count[k] for k in kept], np.int64)]
    for g in groups.values():
        gb = b[g]
        out_b.append(np.array([[gb[:, 0].min(), gb[:, 1].min(), gb[:, 2].max(), gb[:, 3].max()]]))
        out_s.append(np.array([s[g].max()], np.float32))
        out_t.append(np.array([len(set(t[g].tolist()))], np.int64))
    boxes = np.concatenate(out_b) if out_b else np.zeros((0, 4))
    scores, tiles = np.concatenate(out_s).astype(np.float32), np.concatenate(out_t)
    order = np.argsort(-scores, kind="stable")
    return boxes[order], scores[order], tiles[order]


def _masks_touch(abox: np.ndarray, acrop: np.ndarray, bbox: np.ndarray, bcrop: np.ndarray) -> bool:
    """Whether two crops (raster-pixel XYXY boxes) share a pixel."""
    ax0, ay0, bx0, by0 = int(abox[0]), int(abox[1]), int(bbox[0]), int(bbox[1])
    x0, y0 = max(ax0, bx0), max(ay0, by0)
    x1, y1 = min(int(abox[2]), int(bbox[2])), min(int(abox[3]), int(bbox[3]))
    if x1 <= x0 or y1 <= y0:
        return False
    a = acrop[y0 - ay0:y1 - ay0, x0 - ax0:x1 - ax0]
    c = bcrop[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]
    return bool((a & c).any())


class _BoxCollector:
    """Stands in for the seam merger in :func:`~fastsam_geo.pipeline.iter_objects`: keeps each
    tile's candidate boxes (raster pixels) and whether they touch the tile's inner edges."""

    def __init__(self, grid: TileGrid, width: int, height: int):
        self.grid, self.width, self.height = grid, width, height
        self.parts: list[BoxSet] = []
        self.n = 0

    def add(self, tile: Tile, inst: Instances) -> list:
        if len(inst):
            b = inst.boxes.astype(np.float64)
            inner = (tile.x > 0, tile.y > 0, tile.x + tile.width < self.width, tile.y + tile.height < self.height)
            gap = np.stack([b[:, 0], b[:, 1], tile.width - b[:, 2], tile.height - b[:, 3]], 1)
            partial = ((gap <= EDGE_MARGIN) & np.array(inner)).any(1)
            shifted = b + np.array([tile.x, tile.y, tile.x, tile.y], np.float64)
            crops = {self.n + int(k): inst.crops[k] for k in np.flatnonzero(partial)}  # only views at seams
            self.parts.append(BoxSet(shifted, inst.scores.astype(np.float32),
                                     np.full(len(inst), self.grid.index(tile), np.int64), partial, crops))
            self.n += len(inst)
        return []

    def awaited(self, regions) -> set:
        return set()

    def flush(self) -> list:
        return []

    def boxes(self) -> BoxSet:
        if not self.parts:
            return BoxSet(np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
        return BoxSet(*(np.concatenate([getattr(p, f) for p in self.parts])
                        for f in ("boxes", "scores", "tile", "partial")),
                      crops={k: v for p in self.parts for k, v in p.crops.items()})


def proposals(path: str | os.PathLike, output: str | os.PathLike | None = None, *, segmenter: object = None,
              options: Options | None = None, layer: str | None = None,
              progress: bool | ProgressCallback | None = None, allow_empty: bool = True,
              **kwargs) -> gpd.GeoDataFrame:
    """Every candidate box in raster ``path``, de-duplicated across seams, as polygons in the
    raster's CRS with ``score``, ``rank`` (1: highest score) and ``tiles`` (how many tiles' views it
    stands for); written atomically to ``output`` (.gpkg, .parquet, .geojson, .fgb) when given.
    ``segmenter`` and ``options`` (or their fields as keywords) as for
    :func:`fastsam_geo.segment_raster`; ``dedup`` is not applied (every candidate counts).
    ``allow_empty=False``: no box raises :class:`~fastsam_geo.errors.EmptyResultError` and
    nothing is written."""
    opts = Options.of(options, **kwargs)
    if output is not None:
        check_output(output, inputs=[path], layer=layer)
    info = read_info(path)
    opts, _ = resolve_gsd(opts, info, segmenter)  # tiles at the model's GSD, as segment cuts them
    grid = plan_tiles(info.width, info.height, opts.tile_size, opts.overlap, info.transform)
    seg = load_segmenter(segmenter, opts)
    collector = _BoxCollector(grid, info.width, info.height)
    callback, close = as_callback(progress)
    try:
        with TileReader(path, opts.bands, stretch=opts.stretch, levels=model_levels(model_card(seg))) as reader:
            batch = int(getattr(seg, "batch_size", None) or opts.batch_size or 1)
            for _ in iter_objects(reader, grid, seg, batch_size=batch, min_area=opts.min_area, progress=callback,
                                  merger=collector, skip_failed=opts.skip_failed_tiles):  # type: ignore[arg-type]
                pass
    finally:
        close()
    boxes, scores, tiles = dedup_boxes(collector.boxes())
    if len(boxes):
        t = info.transform
        corners = [(boxes[:, 0], boxes[:, 1]), (boxes[:, 2], boxes[:, 1]), (boxes[:, 2], boxes[:, 3]),
                   (boxes[:, 0], boxes[:, 3])]
        xy = [t @ (c, r) for c, r in corners]  # affine works on arrays: any rotation, any axis order
        ring = np.stack([np.stack([np.asarray(x), np.asarray(y)], -1) for x, y in xy], 1)
        geoms = shapely.polygons(ring)
        gdf = gpd.GeoDataFrame({"score": scores.astype("float32"), "rank": np.arange(1, len(boxes) + 1),
                                "tiles": tiles.astype("int64")}, geometry=gpd.GeoSeries(geoms, crs=info.crs),
                               crs=info.crs)
    else:
        gdf = empty_frame(info.crs, COLUMNS)
        if output is not None and not allow_empty:
            raise EmptyResultError(f"{path}: no object proposals; nothing written to {output} (--allow-empty "
                                   "writes an empty layer)")
    if output is not None:
        write(gdf, output, layer=layer)
    return gdf
