"""Edge maps: Sobel edges of the per-pixel mask probability, on the input raster's exact grid.

FastSAM's paper gets edges from the same single pass as the masks: the mask probability map has
its steepest slopes at object outlines. Here each tile's probability (``(H, W)`` float32 in
[0, 1] at native resolution: the FastSAM engine's highest ``sigmoid(logit)`` of any mask, see
:meth:`~fastsam_geo.engine.FastSAMSegmenter.probability`; a segmenter without probabilities gives
the union of its binary masks) is blended across tile overlaps with linear feathering weights
(:func:`feather_weights`: a tile's weight falls to ~0 at its inner edges, where its view of a cut
object is worst), so no tile grid shows; the Sobel magnitude of the blend is written as uint8
(255: a step from probability 0 to 1 across one pixel).

Memory is bounded by the tiles overlapping one row of tile cores (about three rows of tiles'
probabilities), never the raster: each core is blended, filtered and written as one window of a
tiled GeoTIFF, which GDAL then turns into a Cloud-Optimised GeoTIFF with overviews. The result
appears atomically (:mod:`fastsam_geo.atomic`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.windows import Window

from .atomic import commit, discard, remove_leftovers, reserve
from .errors import FastSAMGeoError, OutputError
from .io import check_not_input
from .masks import to_instances
from .models import load_segmenter, model_card, resolve_gsd
from .options import Options
from .progress import as_callback
from .raster import TileReader, gdal_env, model_levels, read_info
from .tiling import TileGrid, plan_tiles
from .types import Progress, ProgressCallback, Tile

__all__ = ["blend", "edge_strength", "feather_weights", "tile_probabilities", "write_edges"]

EXTENSIONS = (".tif", ".tiff")


def feather_weights(tile: Tile, width: int, height: int, ramp: int) -> np.ndarray:
    """Blending weights of ``tile`` in a ``width x height`` raster: ``(tile.height, tile.width)``
    float32 in (0, 1], the product of one ramp per axis rising linearly over ``ramp`` px from each
    *inner* tile edge (``(d + 0.5) / ramp`` at ``d`` px from it) and 1 at raster edges."""

    def axis(start: int, size: int, total: int) -> np.ndarray:
        w = np.ones(size, np.float32)
        if ramp > 0:
            d = np.arange(size, dtype=np.float32) + 0.5
            if start > 0:
                w = np.minimum(w, d / ramp)
            if start + size < total:
                w = np.minimum(w, d[::-1] / ramp)
        return w

    return np.outer(axis(tile.y, tile.height, height), axis(tile.x, tile.width, width))


def blend(window: tuple[int, int, int, int], views: Sequence[tuple[Tile, np.ndarray, np.ndarray]]) -> np.ndarray:
    """The weighted mean of tile probabilities over a raster-pixel ``window`` ``(x0, y0, x1, y1)``.

    ``views``: ``(tile, probability, weights)``, both arrays of the tile's shape. Returns
    ``(y1 - y0, x1 - x0)`` float32 (0 where no view covers a pixel).
    """
    x0, y0, x1, y1 = window
    num = np.zeros((y1 - y0, x1 - x0), np.float32)
    den = np.zeros_like(num)
    for tile, prob, weight in views:
        ix0, iy0 = max(x0, tile.x), max(y0, tile.y)
        ix1, iy1 = min(x1, tile.x + tile.width), min(y1, tile.y + tile.height)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        src = np.s_[iy0 - tile.y:iy1 - tile.y, ix0 - tile.x:ix1 - tile.x]
        dst = np.s_[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
        num[dst] += weight[src] * prob[src]
        den[dst] += weight[src]
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def edge_strength(prob: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of a probability map ``(H, W)`` float32 in [0, 1], as uint8:
    ``255 * min(1, |grad| / 4)`` (a 3x3 Sobel of a one-pixel step from 0 to 1 is 4). Borders
    replicate (an object is not given an edge where the array ends)."""
    import cv2

    gx = cv2.Sobel(prob, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.Sobel(prob, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
    mag = np.sqrt(gx * gx + gy * gy) / 4.0
    return np.round(np.clip(mag, 0.0, 1.0) * 255.0).astype(np.uint8)


def tile_probabilities(segmenter: object, images: list[np.ndarray]) -> list[np.ndarray]:
    """Per-pixel mask probability of each ``(H, W, 3) uint8`` image, ``(H, W)`` float32 in [0, 1]:
    ``segmenter.probability(images)`` when it has one (the FastSAM engine), else the union of the
    masks it returns (0 or 1: edges then come from binary masks)."""
    fn = getattr(segmenter, "probability", None)
    if callable(fn):
        out = [np.clip(np.asarray(p, np.float32), 0.0, 1.0) for p in fn(images)]
    else:
        out = []
        for img, res in zip(images, segmenter(images)):
            inst = to_instances(res, img.shape[:2], min_area=0)
            p = np.zeros(img.shape[:2], np.float32)
            for (x0, y0, x1, y1), crop in zip(inst.boxes.tolist(), inst.crops):
                p[y0:y1, x0:x1][crop] = 1.0
            out.append(p)
    if len(out) != len(images) or any(p.shape != im.shape[:2] for p, im in zip(out, images)):
        raise FastSAMGeoError("segmenter returned probabilities that do not match its tiles")
    return out


def check_edges_output(output: str | os.PathLike, inputs: Sequence = ()) -> Path:
    """An edge map's path: a .tif/.tiff in an existing, writable folder, not an input."""
    out = Path(output)
    if out.suffix.lower() not in EXTENSIONS:
        raise OutputError(f"{out}: an edge map is a GeoTIFF; name it .tif or .tiff")
    folder = out.resolve().parent
    if not folder.is_dir():
        raise OutputError(f"{out}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{out}: output folder {folder} is not writable")
    if out.is_dir():
        raise OutputError(f"{out}: is a folder, not a file name")
    check_not_input(out, inputs)
    return out


def write_edges(path: str | os.PathLike, output: str | os.PathLike, *, segmenter: object = None,
                options: Options | None = None, progress: bool | ProgressCallback | None = None,
                **kwargs) -> Path:
    """Write the edge map of raster ``path`` to ``output`` (a COG, uint8, one band, on ``path``'s
    exact grid: CRS, transform, size). ``segmenter`` and ``options`` (or their fields as keywords)
    as for :func:`fastsam_geo.segment_raster`. Returns the output path."""
    opts = Options.of(options, **kwargs)
    out = check_edges_output(output, [path])
    info = read_info(path)
    opts, _ = resolve_gsd(opts, info, segmenter)  # tiles at the model's GSD, as segment cuts them
    grid = plan_tiles(info.width, info.height, opts.tile_size, opts.overlap, info.transform)
    seg = load_segmenter(segmenter, opts)
    reader = TileReader(path, opts.bands, stretch=opts.stretch, levels=model_levels(model_card(seg)))
    callback, close = as_callback(progress)
    remove_leftovers(Path(out).parent)  # what a killed run left (as segment and proposals do)
    tmp, cog = reserve(out), reserve(out)
    try:
        profile = dict(driver="GTiff", width=info.width, height=info.height, count=1, dtype="uint8",
                       crs=rasterio.crs.CRS.from_wkt(info.crs.to_wkt()), transform=info.transform, tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", BIGTIFF="IF_SAFER")
        with gdal_env(), reader, rasterio.open(tmp, "w", **profile) as dst:
            _write_cores(dst, reader, grid, seg, opts, callback)
            factors = [f for f in (2, 4, 8, 16, 32, 64, 128) if max(info.width, info.height) / f >= 256]
            if factors:
                dst.build_overviews(factors, Resampling.average)
        with gdal_env():
            rasterio.shutil.copy(tmp, cog, driver="COG", compress="DEFLATE", blocksize=512,
                                 overviews="FORCE_USE_EXISTING", bigtiff="IF_SAFER")
        commit(cog, out)
    finally:
        close()
        discard(tmp)
        discard(cog)
    return out


def _write_cores(dst, reader: TileReader, grid: TileGrid, segmenter: object, opts: Options,
                 progress: ProgressCallback | None) -> None:
    """Blend, filter and write each tile core in raster order, holding only the tile rows the
    current row of cores needs."""
    from .errors import Cancelled

    width, height = reader.info.width, reader.info.height
    rows: dict[int, list[tuple[Tile, np.ndarray, np.ndarray]]] = {}
    batch = max(1, int(getattr(segmenter, "batch_size", None) or opts.batch_size or 1))
    done = [0]

    def compute_row(r: int) -> list[tuple[Tile, np.ndarray, np.ndarray]]:
        tiles = [grid.at(r, c) for c in range(grid.n_cols)]
        views = []
        for i in range(0, len(tiles), batch):
            part = tiles[i:i + batch]
            read = [reader.read(t) for t in part]
            todo = [k for k, (_, valid) in enumerate(read) if valid.any()]
            probs = dict(zip(todo, tile_probabilities(segmenter, [read[k][0] for k in todo]))) if todo else {}
            for k, t in enumerate(part):
                p = probs.get(k, np.zeros((t.height, t.width), np.float32))
                p[~read[k][1]] = 0.0
                views.append((t, p, feather_weights(t, width, height, opts.overlap)))
            done[0] += len(part)
            if progress is not None and progress(Progress(done[0], len(grid))) is False:
                raise Cancelled("cancelled")
        return views

    for r in range(grid.n_rows):
        for c in range(grid.n_cols):
            x0, y0, x1, y1 = grid.at(r, c).core
            pad = (max(0, x0 - 1), max(0, y0 - 1), min(width, x1 + 1), min(height, y1 + 1))
            need = sorted({t.row for t in grid.intersecting(pad)})
            for rr in need:
                if rr not in rows:
                    rows[rr] = compute_row(rr)
            views = [v for rr in need for v in rows[rr]]
            edges = edge_strength(blend(pad, views))
            core = edges[y0 - pad[1]:y1 - pad[1], x0 - pad[0]:x1 - pad[0]]
            dst.write(core, 1, window=Window(x0, y0, x1 - x0, y1 - y0))
        if r + 1 < grid.n_rows:  # tile rows the next row of cores no longer touches
            ny0 = max(0, grid.at(r + 1, 0).core[1] - 1)
            for rr in [rr for rr in rows if grid.at(rr, 0).y + grid.at(rr, 0).height <= ny0]:
                del rows[rr]
