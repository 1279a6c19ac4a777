"""Seeded synthetic scenes: GeoTIFFs with known buildings at known map coordinates.

Used by the tests, the benchmarks and the README's demos. A :class:`Scene` is pure
geometry (footprints in raster pixels plus a CRS and transform); :func:`write_scene` renders
it block by block (never the whole raster in memory), so 16384² test rasters are cheap.

Buildings are painted in unique colours on a grey background, which makes
:class:`ColourSegmenter` possible: a fake segmenter that returns each tile's *true*
instance masks from the pixels alone, with no knowledge of where the tile lies. Running it
through the real pipeline therefore tests reading, stretching, tiling, merging and
georeferencing end to end, and any error there shows up as a wrong footprint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import rasterio
import shapely
import shapely.affinity
from affine import Affine
from pyproj import CRS
from rasterio import features
from rasterio.windows import Window
from shapely.geometry import Polygon, box

from .coords import parse_crs
from .types import Instances


@dataclass(frozen=True)
class Scene:
    """A synthetic raster's truth: ``footprints`` are Polygons in raster pixel coordinates.

    ``nodata`` are pixel boxes ``(x0, y0, x1, y1)`` written as nodata.
    """

    width: int
    height: int
    crs: CRS
    transform: Affine
    footprints: tuple[Polygon, ...]
    nodata: tuple[tuple[int, int, int, int], ...] = ()

    def truth_pixels(self) -> list[Polygon]:
        """Footprints minus nodata areas (what a correct pipeline can recover), pixels."""
        holes = shapely.union_all([box(*b) for b in self.nodata]) if self.nodata else None
        return [f.difference(holes) if holes is not None else f for f in self.footprints]

    def truth_map(self) -> list[Polygon]:
        """:meth:`truth_pixels` in map coordinates of :attr:`crs`."""
        t = self.transform
        return [shapely.affinity.affine_transform(p, (t.a, t.b, t.d, t.e, t.c, t.f))
                for p in self.truth_pixels()]


def colour_of(i: int) -> tuple[int, int, int]:
    """The unique, non-grey, nonzero RGB colour of building ``i`` (1-based, < 254²)."""
    r, g = 1 + i % 254, 1 + (i // 254) % 254
    return r, g, 255 if r == g else 128


def _shape(rng: np.random.Generator, x0: float, y0: float, w: float, h: float) -> Polygon:
    kind = rng.choice(["rect", "rect", "L", "courtyard"]) if min(w, h) >= 24 else "rect"
    outer = box(x0, y0, x0 + w, y0 + h)
    if kind == "L":
        cw, ch = round(w * rng.uniform(0.35, 0.6)), round(h * rng.uniform(0.35, 0.6))
        return outer.difference(box(x0 + w - cw, y0, x0 + w, y0 + ch))
    if kind == "courtyard":  # integer vertices: the raster holds exactly this polygon
        return outer.difference(box(x0 + round(w * 0.3), y0 + round(h * 0.3),
                                    x0 + round(w * 0.7), y0 + round(h * 0.7)))
    return outer


def make_scene(width: int, height: int, *, seed: int = 0, cell: int = 146, crs: object = "EPSG:32633",
               origin: tuple[float, float] = (500000.0, 4500000.0), res: float = 0.3,
               big: tuple[int, int, int, int] | None = None,
               nodata: tuple[tuple[int, int, int, int], ...] = (), min_size: int = 10) -> Scene:
    """A seeded scene of ``width x height`` pixels, north-up at ``res`` CRS units per pixel.

    One building per ``cell x cell`` grid cell (random size, position and shape: rectangles,
    L-shapes and courtyards, at least 3 px apart), so density is about (1024 / cell)² per
    1024² tile. ``big`` is an optional ``(x0, y0, x1, y1)`` pixel box holding one large
    L-shaped building (make it larger than a tile to test merging across many tiles);
    cells it touches stay empty. ``nodata`` boxes are written as nodata.
    """
    rng = np.random.default_rng(seed)
    crs = parse_crs(crs)
    transform = Affine(res, 0, origin[0], 0, -res, origin[1])
    feet: list[Polygon] = []
    keepout = box(*big).buffer(4) if big else None
    if big:
        bx0, by0, bx1, by1 = big
        notch = box(bx0 + (bx1 - bx0) * 6 // 10, by0, bx1, by0 + (by1 - by0) * 35 // 100)
        feet.append(box(*big).difference(notch))
    for cy in range(0, height - min_size - 6, cell):
        for cx in range(0, width - min_size - 6, cell):
            cw, ch = min(cell, width - cx), min(cell, height - cy)
            w = rng.uniform(min_size, max(min_size + 1, cw - 6))
            h = rng.uniform(min_size, max(min_size + 1, ch - 6))
            x0 = cx + 3 + rng.uniform(0, max(0, cw - 6 - w))
            y0 = cy + 3 + rng.uniform(0, max(0, ch - 6 - h))
            x0, y0, w, h = round(x0), round(y0), round(w), round(h)
            if keepout is not None and keepout.intersects(box(x0, y0, x0 + w, y0 + h)):
                continue
            feet.append(_shape(rng, x0, y0, w, h))
    return Scene(width, height, crs, transform, tuple(feet), tuple(nodata))


def write_scene(scene: Scene, path: str | os.PathLike, *, dtype: str = "uint8", count: int = 3,
                nodata: float | None = 0, block: int = 512, seed: int = 0,
                compress: str = "deflate", alpha: bool = False) -> str:
    """Render ``scene`` to a tiled GeoTIFF, one row of blocks at a time.

    Background is grey texture (values 20-120), building ``i`` is :func:`colour_of` ``(i+1)``.
    ``dtype="uint16"`` scales values by 64 (so a stretch is needed); ``count=1`` writes the
    red channel only. Nodata boxes get ``nodata`` (or alpha 0 with ``alpha=True``).
    """
    path = os.fspath(path)
    rng = np.random.default_rng(seed)
    colours = np.array([(0, 0, 0)] + [colour_of(i + 1) for i in range(len(scene.footprints))],
                       dtype=np.uint16)
    bands = count + (1 if alpha else 0)
    profile = dict(driver="GTiff", width=scene.width, height=scene.height, count=bands, dtype=dtype,
                   crs=scene.crs.to_wkt(), transform=scene.transform, tiled=True, blockxsize=block,
                   blockysize=block, compress=compress, nodata=None if alpha else nodata)
    if bands >= 3:
        profile["photometric"] = "RGB"
    idx = shapely.STRtree(list(scene.footprints))
    with rasterio.open(path, "w", **profile) as dst:
        if alpha:
            dst.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                               rasterio.enums.ColorInterp.blue, rasterio.enums.ColorInterp.alpha][:bands]
        for y in range(0, scene.height, block):
            h = min(block, scene.height - y)
            strip = box(0, y, scene.width, y + h)
            hits = idx.query(strip)
            win_t = Affine.translation(0, y)
            ids = features.rasterize(((scene.footprints[i], int(i) + 1) for i in hits),
                                     out_shape=(h, scene.width), transform=win_t, fill=0,
                                     dtype="uint32") if len(hits) else \
                np.zeros((h, scene.width), np.uint32)
            grey = rng.integers(20, 121, size=(h, scene.width), dtype=np.uint16)
            rgb = colours[ids]  # (h, W, 3)
            bg = ids == 0
            rgb[bg] = grey[bg][:, None]
            data = rgb.transpose(2, 0, 1)[:count]
            if dtype == "uint16":
                data = data * 64
            data = data.astype(dtype)
            valid = np.ones((h, scene.width), dtype=bool)
            for (x0, y0, x1, y1) in scene.nodata:
                valid[max(0, y0 - y):max(0, y1 - y), x0:x1] = False
            if alpha:
                data = np.concatenate([data, (valid * np.iinfo(dtype).max).astype(dtype)[None]])
            elif nodata is not None:
                data[:, ~valid] = nodata
            dst.write(data, window=Window(0, y, scene.width, h))
    return path


class ColourSegmenter:
    """A fake segmenter returning the true instance masks of a synthetic scene's tile.

    Every distinct colour that is not background becomes one mask (all its pixels in the
    tile, even if split into parts), score 0.9. Background is grey (``r == g == b``) with
    ``background="grey"``, or the most frequent colour with ``background="mode"`` (for
    stretched uint16 or single-band renders, where grey is no longer grey). Black (masked
    pixels) is never an object. ``calls`` counts images seen.
    """

    batch_size = 4

    def __init__(self, background: str = "grey", min_pixels: int = 1):
        self.background = background
        self.min_pixels = min_pixels
        self.calls = 0

    def __call__(self, images: list[np.ndarray]) -> list[Instances]:
        self.calls += len(images)
        return [self._one(img) for img in images]

    def _one(self, img: np.ndarray) -> Instances:
        h, w = img.shape[:2]
        code = (img[..., 0].astype(np.uint32) << 16) | (img[..., 1].astype(np.uint32) << 8) | img[..., 2]
        if self.background == "grey":
            code[(img[..., 0] == img[..., 1]) & (img[..., 1] == img[..., 2])] = 0
        vals, lab, counts = np.unique(code.ravel(), return_inverse=True, return_counts=True)
        lab = lab.reshape(h, w)
        drop = vals == 0
        if self.background == "mode" and len(vals):
            drop[np.argmax(np.where(vals == 0, -1, counts))] = True
        keep = np.flatnonzero(~drop & (counts >= self.min_pixels))
        if len(keep) == 0:
            return Instances.empty((h, w))
        # bounding boxes of every label in one pass over the tile, then one crop per label
        rows = np.zeros((len(vals), h), bool)
        cols = np.zeros((len(vals), w), bool)
        rows[lab, np.arange(h)[:, None]] = True
        cols[lab, np.arange(w)[None, :]] = True
        rows, cols = rows[keep], cols[keep]
        y0, y1 = rows.argmax(1), h - rows[:, ::-1].argmax(1)
        x0, x1 = cols.argmax(1), w - cols[:, ::-1].argmax(1)
        boxes = np.stack([x0, y0, x1, y1], 1).astype(np.int32)
        crops = tuple(lab[b[1]:b[3], b[0]:b[2]] == k for k, b in zip(keep, boxes))
        return Instances(boxes, np.full(len(keep), 0.9, np.float32), crops, (h, w))


def perturb_instances(inst: Instances, rng: np.random.Generator, *, miss: float = 0.15, split: float = 0.1,
                      jitter: int = 1) -> tuple[Instances, list[tuple[str, list[int]]]]:
    """One tile's view of the truth as a real network gives it: each instance missed with
    probability ``miss``; one lying wholly inside the tile (clear of its border) split in two
    halves with probability ``split``; every mask left grown or shrunk by ``jitter`` px at random.

    Returns the perturbed instances and, per input instance, ``(what, output indexes)`` with
    ``what`` one of ``"missed"``, ``"split"``, ``"kept"`` (a mask shrunk to nothing counts as
    missed). Deterministic for a given ``rng`` state.
    """
    import cv2

    h, w = inst.shape
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    boxes, crops, scores, log = [], [], [], []
    for (x0, y0, x1, y1), crop, score in zip(inst.boxes.tolist(), inst.crops, inst.scores.tolist()):
        if rng.random() < miss:
            log.append(("missed", []))
            continue
        pieces = [crop]
        what = "kept"
        inside = x0 > 0 and y0 > 0 and x1 < w and y1 < h
        if inside and rng.random() < split and max(x1 - x0, y1 - y0) >= 8:
            a, b = crop.copy(), crop.copy()
            if x1 - x0 >= y1 - y0:
                cut = (x1 - x0) // 2
                a[:, cut:], b[:, :cut] = False, False
            else:
                cut = (y1 - y0) // 2
                a[cut:], b[:cut] = False, False
            pieces, what = [a, b], "split"
        out = []
        for piece in pieces:
            canvas = np.zeros((h, w), np.uint8)
            canvas[y0:y1, x0:x1] = piece
            if jitter:  # a mask cut by the tile border stays on it, as a network's does
                op = cv2.dilate if rng.random() < 0.5 else cv2.erode
                canvas = op(canvas, kernel, iterations=jitter, borderType=cv2.BORDER_REPLICATE)
            tb = _tight_box(canvas)
            if tb is None:
                continue
            px0, py0, px1, py1 = tb
            piece = canvas[py0:py1, px0:px1].astype(bool)
            out.append(len(crops))
            boxes.append((px0, py0, px1, py1))
            crops.append(np.ascontiguousarray(piece))
            scores.append(score)
        log.append((what if out else "missed", out))
    if not crops:
        return Instances.empty(inst.shape, inst.invalid), log
    return Instances(np.asarray(boxes, np.int32), np.asarray(scores, np.float32), tuple(crops), inst.shape,
                     inst.invalid), log


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


class PerturbedSegmenter:
    """A segmenter whose tiles disagree as a real network's do: ``base``'s masks (by default the
    true ones, :class:`ColourSegmenter`) put through :func:`perturb_instances`, seeded by the
    tile's pixels, so each tile's view is different but the same tile always gives the same.
    ``log`` maps a tile's pixel hash to its perturbation log.
    """

    batch_size = 4

    def __init__(self, base: object = None, *, miss: float = 0.15, split: float = 0.1, jitter: int = 1,
                 seed: int = 0):
        self.base = base if base is not None else ColourSegmenter()
        self.miss, self.split, self.jitter, self.seed = miss, split, jitter, seed
        self.log: dict[str, list] = {}

    def __call__(self, images: list[np.ndarray]) -> list[Instances]:
        import hashlib

        out = []
        for img, res in zip(images, self.base(images)):
            key = hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()
            rng = np.random.default_rng([self.seed, int(key[:12], 16)])
            inst, log = perturb_instances(res, rng, miss=self.miss, split=self.split, jitter=self.jitter)
            self.log[key] = log
            out.append(inst)
        return out
