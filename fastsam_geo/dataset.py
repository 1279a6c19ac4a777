"""Training data: GeoTIFFs + footprint polygons -> an ultralytics YOLO-seg dataset.

Tiles are cut with the same planner and reader as inference (same tile size, band choice
and stretch), so the model trains on exactly what it will later see. Footprints are
reprojected to each raster's CRS, clipped to each tile and written as normalised polygons;
courtyards are kept by bridging each hole to its outer ring (YOLO-seg labels are single
rings). The train/val split is spatial, never random pixels: whole rasters when there are
several, else contiguous bands of tiles, and train tiles overlapping a val tile are dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import Polygon, box

from .coords import crs_name, transform_geometries
from .errors import InputError
from .gsd import ground_gsd, plan
from .masks import intersect
from .raster import Levels, TileReader, read_info
from .tiling import plan_tiles
from .types import Tile

COARSEN_FACTORS = (1.5, 4.0)
"""How much coarser (x the tile's GSD) a ``coarsen`` copy is: uniform in this range, i.e. 0.22 to
0.6 m for the bundled model's 0.147 m, the aerial-to-satellite span users bring."""


@dataclass
class DatasetSummary:
    """What :func:`build_dataset` wrote: counts per split and where the data came from."""

    root: str
    yaml: str
    train_tiles: int = 0
    val_tiles: int = 0
    train_polygons: int = 0
    val_polygons: int = 0
    empty_tiles: int = 0
    coarsened_tiles: int = 0
    """Extra training copies written blurred to a coarser GSD (``coarsen``), counted in ``train_tiles``."""
    images: list[str] = field(default_factory=list)
    val_images: list[str] = field(default_factory=list)
    val_regions: list[tuple[str, tuple[float, float, float, float]]] = field(default_factory=list)
    """(raster, (xmin, ymin, xmax, ymax) in its CRS) of each validation area."""
    raster_gsd: list[float | None] = field(default_factory=list)
    """Ground metres per pixel of each raster (``None`` without a CRS), in ``images`` order."""
    tile_sizes: list[int] = field(default_factory=list)
    """Native tile size (pixels) cut from each raster: ``tile_size``, or scaled to ``gsd``."""


def ring_with_holes(poly: Polygon) -> np.ndarray:
    """One closed ring ``(N, 2)`` tracing ``poly``'s exterior and, through zero-width bridges,
    each hole in reverse, so that an even-odd or non-zero fill of the ring leaves the holes open.
    """
    ext = np.asarray(poly.exterior.coords)[:-1]
    ring = ext
    for hole in poly.interiors:
        h = np.asarray(hole.coords)[:-1]
        d = ((ring[:, None, :] - h[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(np.argmin(d), d.shape)
        h = np.roll(h, -j, axis=0)
        ring = np.concatenate([ring[:i + 1], h, h[:1], ring[i:]])
    return ring


def tile_labels(polys: Sequence[Polygon], tile: Tile, *, min_area_px: float = 4.0) -> list[np.ndarray]:
    """Polygons (raster pixel coordinates) clipped to ``tile`` -> normalised rings for YOLO-seg."""
    tb = box(tile.x, tile.y, tile.x + tile.width, tile.y + tile.height)
    out = []
    for p in polys:
        clipped = p.intersection(tb)
        parts = clipped.geoms if hasattr(clipped, "geoms") else [clipped]
        for part in parts:
            if not isinstance(part, Polygon) or part.area < min_area_px:
                continue
            ring = ring_with_holes(shapely.affinity.translate(part, -tile.x, -tile.y))
            ring = ring / np.array([tile.width, tile.height], dtype=float)
            out.append(np.clip(ring, 0.0, 1.0))
    return out


def load_labels(labels: gpd.GeoDataFrame | str | os.PathLike, *, layer: str | None = None,
                layer_option: str = "--labels-layer / labels_layer=") -> gpd.GeoDataFrame:
    """Footprints as polygons with invalid geometries repaired (``make_valid``); ``layer``: the
    layer of a file with several."""
    from .io import read_vector

    gdf = labels if isinstance(labels, gpd.GeoDataFrame) else read_vector(labels, layer=layer,
                                                                          layer_option=layer_option)
    if len(gdf) == 0:
        raise InputError("the labels contain no features")
    if gdf.crs is None:
        raise InputError("the labels have no CRS")
    geoms = shapely.make_valid(gdf.geometry.values)
    polys = []
    for g in geoms:
        parts = [g] if isinstance(g, Polygon) else \
            [p for p in getattr(g, "geoms", []) if isinstance(p, Polygon)]
        polys.extend(p for p in parts if not p.is_empty and p.area > 0)
    if not polys:
        raise InputError("the labels contain no polygons (building footprints must be polygons)")
    return gpd.GeoDataFrame(geometry=polys, crs=gdf.crs)


def build_dataset(images: Sequence[str | os.PathLike], labels: gpd.GeoDataFrame | str | os.PathLike,
                  out: str | os.PathLike, *, tile_size: int = 1024, overlap: int = 128,
                  bands: Sequence[int] | None = None, val_fraction: float = 0.15,
                  keep_empty: float = 0.2, seed: int = 0, val_images: Sequence[str] | None = None,
                  image_format: str = "png", gsd: float | None = None, coarsen: float = 0.0,
                  coarsen_factors: tuple[float, float] = COARSEN_FACTORS,
                  levels: Levels | None = None) -> DatasetSummary:
    """Write a YOLO-seg dataset (``images/``, ``labels/``, ``data.yaml``) under ``out``.

    ``gsd`` (ground m/px): read ``tile_size``/``overlap`` as pixels at that GSD and cut each
    raster's tiles at ``tile_size * gsd / raster_gsd`` native pixels (as ``--gsd auto`` does at
    inference, :func:`fastsam_geo.gsd.plan`), so a network that resizes tiles to
    ``imgsz == tile_size`` sees every raster at ``gsd``. ``None``: native tiles.

    ``val_images``: rasters to use whole as validation (default: chosen spatially). Tiles
    without buildings are kept with probability ``keep_empty`` (background examples).

    ``coarsen`` (0..1): the probability that a training tile also gets a copy as coarser
    imagery would reach the network under ``--gsd auto``: shrunk by a factor drawn uniformly
    from ``coarsen_factors`` (area average, like a sensor with bigger pixels) and enlarged back
    bicubically (what inference does to coarse tiles), same labels. Validation tiles are never
    coarsened. The draws use their own seeded stream, so ``coarsen=0`` writes exactly the
    dataset it always did.

    ``levels``: where non-uint8 imagery is stretched to (:class:`~fastsam_geo.raster.Levels`,
    default 2nd/98th percentile to 0/255); fine-tuning passes the base model's, so the network
    sees the user's imagery as it sees it at inference.

    Raises :class:`InputError` when no label touches any raster, or for a ``coarsen`` that is
    not a probability.
    """
    import cv2

    lo_f, hi_f = check_coarsen(coarsen, coarsen_factors)
    rng = np.random.default_rng(seed)
    rng_coarse = np.random.default_rng([seed, 1])
    out = Path(out)
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    gdf = load_labels(labels)
    summary = DatasetSummary(root=str(out), yaml=str(out / "data.yaml"),
                             images=[os.fspath(p) for p in images])
    plans = []
    for path in images:
        info = read_info(path)
        polys_map = transform_geometries(gdf.geometry.values, gdf.crs, info.crs) \
            if gdf.crs != info.crs else gdf.geometry.values
        inv = ~info.transform
        px = [shapely.affinity.affine_transform(p, (inv.a, inv.b, inv.d, inv.e, inv.c, inv.f))
              for p in polys_map]
        frame = box(0, 0, info.width, info.height)
        px = [p for p in px if p.intersects(frame)]
        raster_gsd = ground_gsd(info.transform, info.crs, info.width, info.height)
        size, ov = tile_size, overlap
        if gsd is not None and raster_gsd is not None:
            p = plan(tile_size, overlap, raster_gsd, gsd)
            size, ov = p.tile_size, p.overlap
        summary.raster_gsd.append(raster_gsd)
        summary.tile_sizes.append(size)
        grid = plan_tiles(info.width, info.height, size, ov, info.transform)
        plans.append((os.fspath(path), info, grid, px))
    if not any(p[3] for p in plans):
        raise InputError(f"no label polygon overlaps any of the {len(plans)} raster(s) "
                         f"(labels in {crs_name(gdf.crs)}, bounds "
                         f"({', '.join(f'{v:.6f}' for v in gdf.total_bounds)}))")

    val_set = _choose_val(plans, val_fraction, val_images)
    summary.val_images = sorted({p for p, _ in val_set if isinstance(_, str)})
    for k, (path, info, grid, px) in enumerate(plans):
        tree = shapely.STRtree(px) if px else None
        stem = f"{k:03d}_{Path(path).stem}"  # rasters in different folders may share a name
        val_boxes = [t.box for t in grid if (path, (t.row, t.col)) in val_set or (path, "*") in val_set]
        if val_boxes:
            x0, y0 = min(b[0] for b in val_boxes), min(b[1] for b in val_boxes)
            x1, y1 = max(b[2] for b in val_boxes), max(b[3] for b in val_boxes)
            xs, ys = zip(*(info.transform @ c for c in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))))
            summary.val_regions.append((path, (min(xs), min(ys), max(xs), max(ys))))
        with TileReader(path, bands, levels=levels) as reader:
            for t in grid:
                is_val = (path, (t.row, t.col)) in val_set or (path, "*") in val_set
                if not is_val and any(intersect(t.box, vb) for vb in val_boxes):
                    continue  # would leak val pixels into training
                hits = [px[i] for i in tree.query(box(*t.box))] if tree is not None else []
                rings = tile_labels(hits, t)
                if not rings:
                    if rng.random() >= keep_empty:
                        continue
                    summary.empty_tiles += 1
                image, valid = reader.read(t)
                if not valid.any():
                    continue
                split = "val" if is_val else "train"
                name = f"{stem}_r{t.row}_c{t.col}"
                cv2.imwrite(str(out / "images" / split / f"{name}.{image_format}"), image[..., ::-1])
                text = "".join("0 " + " ".join(f"{v:.6f}" for v in r.ravel()) + "\n" for r in rings)
                (out / "labels" / split / f"{name}.txt").write_text(text)
                if split == "val":
                    summary.val_tiles += 1
                    summary.val_polygons += len(rings)
                else:
                    summary.train_tiles += 1
                    summary.train_polygons += len(rings)
                    if coarsen and rng_coarse.random() < coarsen:
                        f = float(rng_coarse.uniform(lo_f, hi_f))
                        cv2.imwrite(str(out / "images" / "train" / f"{name}_x{f:.2f}.{image_format}"),
                                    coarsened(image, f)[..., ::-1])
                        (out / "labels" / "train" / f"{name}_x{f:.2f}.txt").write_text(text)
                        summary.train_tiles += 1
                        summary.train_polygons += len(rings)
                        summary.coarsened_tiles += 1
    if summary.train_tiles == 0:
        raise InputError("no training tiles with labels: the labels do not overlap the training rasters")
    (out / "data.yaml").write_text(
        f"path: {out.resolve()}\ntrain: images/train\nval: images/{'val' if summary.val_tiles else 'train'}\n"
        "names:\n  0: building\n")
    (out / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    return summary


def check_coarsen(coarsen: float, factors: tuple[float, float] = COARSEN_FACTORS) -> tuple[float, float]:
    """The ``(low, high)`` coarsening factors, after checking ``coarsen`` is a probability and
    ``1 < low <= high``; raises :class:`InputError` otherwise."""
    if not (isinstance(coarsen, int | float) and 0.0 <= coarsen <= 1.0):
        raise InputError(f"coarsen must be a probability in [0, 1], got {coarsen!r}")
    lo, hi = factors
    if not 1.0 < lo <= hi:
        raise InputError(f"coarsen factors must satisfy 1 < low <= high, got {factors}")
    return float(lo), float(hi)


def coarsened(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` ``(H, W, C) uint8`` as imagery ``factor`` times coarser looks once ``--gsd auto``
    has enlarged it back: area-averaged down to ``round(H / factor) x round(W / factor)`` pixels,
    then bicubic up to ``(H, W)`` (same shape and dtype; detail finer than ``factor`` pixels is
    gone)."""
    import cv2

    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _choose_val(plans, fraction, val_images) -> set:
    """Spatial validation split: the named rasters whole, else the last band of tile columns of
    each raster at least three tiles wide: ``fraction`` of its columns, at least one and at most
    all but two (narrower rasters stay in training)."""
    if val_images is not None:
        names = {os.fspath(v) for v in val_images}
        return {(p, "*") for p, *_ in plans if p in names}
    if fraction <= 0:
        return set()
    chosen = set()
    for path, _, grid, _ in plans:
        n_val = min(max(1, round(grid.n_cols * fraction)), grid.n_cols - 2)
        if n_val < 1:
            continue
        for t in grid:
            if t.col >= grid.n_cols - n_val:
                chosen.add((path, (t.row, t.col)))
    return chosen
