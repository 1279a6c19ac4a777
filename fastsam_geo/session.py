"""A raster and its segmentation, kept for many requests: segment once, prompt many.

:class:`SegmentedRaster` is what the CLI, the QGIS plugin and notebooks hold on to. Tile
results go to a :mod:`~fastsam_geo.cache` store as they are computed, so the everything-mode
run, a bbox, and every later prompt reuse them: a prompt on an already segmented area costs
no network time (the model is not even loaded), and a prompt elsewhere segments only the
tiles it touches, plus the neighbours needed to finish the objects it selects.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from . import io
from .cache import DiskStore, MemoryStore, default_cache_dir
from .cleanup import clean
from .coords import bbox_to_pixels, crs_name, geodesic_areas, parse_crs, reproject_footprints, transform_geometries
from .errors import CRSError, EmptyResultError, EmptyResultWarning, InputError, RasterError
from .masks import Regions, suppress_duplicates
from .merge import SeamMerger
from .models import (
    SegmentFn,
    bare_callable,
    check_segmenter,
    load_segmenter,
    model_card,
    model_name,
    resolve_gsd,
    segmenter_key,
)
from .options import Options
from .pipeline import RunStats, VectorOptions, iter_objects, segment_tile, staged
from .progress import as_callback
from .prompts import Prompt, PromptObject, box_ious, select_points, to_pixel_objects, union
from .raster import FULL_RANGE, Stretch, TileReader, model_levels, read_info
from .tiling import plan_tiles
from .types import Instances, MergedObject, Progress, ProgressCallback
from .vectorize import as_multipolygons, object_geometry, objects_to_rows

COLUMNS = {"score": "float32", "quality": "float32", "area_m2": "float64", "source": "object", "model": "object"}
"""A result's columns besides ``geometry``; ``source`` (the raster as given) and ``model`` (see
:func:`~fastsam_geo.models.model_name`) let layers of several runs be merged."""
CACHE_FORMAT = 3
"""Bumped when what a tile's cached instances mean changes (2: nodata as GDAL's dataset mask,
per-tile nodata pixels kept; 3: each mask's quality kept)."""
PROMPT_COLUMNS = {"prompt_id": "int64", "prompt_type": "object", "found": "bool", "score": "float32",
                  "quality": "float32", "area_m2": "float64", "source": "object", "model": "object"}
"""A prompt run's columns besides ``geometry``: :data:`COLUMNS` after the prompt's own."""


def single_call_cache(cache: str | os.PathLike | bool | None, prompting: bool):
    """The ``cache`` for a :class:`SegmentedRaster` that serves one call (``segment_raster``,
    one CLI run): as given, else nothing kept for a whole-raster run (memory must not grow
    with the raster) and the bounded memory store for prompts (text prompts reuse tiles)."""
    if cache is not None:
        return cache
    return None if prompting else False


class SegmentedRaster:
    """A georeferenced raster plus its (cached) FastSAM segmentation.

    ``segmenter`` is what :func:`fastsam_geo.segment_raster` takes; ``options`` an
    :class:`~fastsam_geo.options.Options`, or its fields as keywords (``tile_size=512,
    conf=0.3``), validated here, before the raster is read or a model loaded. The model loads
    on first use, never when every needed tile is cached. ``cache``: ``None`` (in memory, for
    the life of this object, at most :data:`~fastsam_geo.cache.DEFAULT_MEMORY_BYTES` of masks,
    least recently used first out), ``False`` (keep nothing: one-shot runs), ``"auto"`` (the
    user cache folder, :func:`~fastsam_geo.cache.default_cache_dir`) or a folder. On-disk
    caches are keyed by raster content, model and every option that changes a tile's masks,
    so a changed file, model or option never returns stale masks.
    """

    def __init__(self, path: str | os.PathLike, *, segmenter: object = None, options: Options | None = None,
                 cache: str | os.PathLike | bool | None = None, text_embedder: object = None,
                 job_dir: str | os.PathLike | None = None, restart: bool = False, client: object = None,
                 **kwargs):
        self.options = Options.of(options, **kwargs)
        check_job_options(job_dir, restart, cache, client, segmenter)
        self.client = client  # a dask.distributed.Client: tiles are segmented on its workers
        self.path = os.fspath(path)
        self.info = read_info(self.path)
        _check_ground_units(self.info)  # areas in m²: a CRS that has none fails now, not after every tile
        # --gsd: the effective tile size and overlap replace the given ones (so the cache key,
        # the grid and prompts all use them); self.gsd says what was decided (None: nothing)
        self.options, self.gsd = resolve_gsd(self.options, self.info, segmenter)
        opts = self.options
        self.grid = plan_tiles(self.info.width, self.info.height, opts.tile_size, opts.overlap, self.info.transform)
        # non-uint8 imagery is stretched to the levels the model's card records (else 0-255)
        levels = None if bare_callable(segmenter) else model_levels(model_card(segmenter))
        self.reader = TileReader(self.path, opts.bands, stretch=opts.stretch, levels=levels)
        self.vector = VectorOptions(min_area=opts.min_area, simplify=opts.simplify)
        self._spec = segmenter
        check_segmenter(segmenter)  # missing weights: one clear error now, not after the first tile
        self._seg: SegmentFn | None = segmenter if callable(segmenter) and not isinstance(segmenter, str) \
            else None
        self._text_spec = text_embedder
        self._embedder = None
        self.store = self._open_store(cache) if job_dir is None else self._open_job(job_dir, restart)
        self.provenance = {"source": self.path, "model": model_name(segmenter)}
        self._all: list[MergedObject] | None = None  # every object, once all tiles were segmented
        self._all_emb: dict[str, np.ndarray] = {}  # their embeddings, per text embedder

    # -- public ----------------------------------------------------------------------------------

    @property
    def segmenter(self) -> SegmentFn:
        """The segmenter, loaded on first use (never when every needed tile is cached)."""
        if self._seg is None:
            self._seg = load_segmenter(self._spec, self.options)
        return self._seg

    def segment(self, *, bbox: tuple[float, float, float, float] | None = None, bbox_crs: object = None,
                progress: bool | ProgressCallback | None = None, output: str | os.PathLike | None = None,
                layer: str | None = None, stats: RunStats | None = None, dst_crs: object = None) -> gpd.GeoDataFrame:
        """Every object (in ``bbox`` if given), as MultiPolygons in the raster's CRS (``dst_crs``
        if given, for the frame and ``output``; a GeoJSON ``output`` defaults to WGS 84).

        ``progress``: ``True`` for a progress bar, or a callback (see :mod:`fastsam_geo.progress`).
        """
        if output is not None:
            io.check_output(output, inputs=[self.path], layer=layer)
        dst = self.check_dst_crs(dst_crs)
        geoms: list = []
        cols: dict[str, list] = {c: [] for c in COLUMNS}
        callback, close = as_callback(progress)
        try:
            with self.reader, contextlib.closing(self._batches(bbox, bbox_crs, callback, stats)) as batches:
                for g, values in batches:
                    geoms.extend(g)
                    for c in cols:
                        cols[c].append(values[c])
        finally:
            close()
        if geoms:
            crs = self.info.crs
            gdf = gpd.GeoDataFrame({c: np.concatenate(v).astype(COLUMNS[c]) for c, v in cols.items()},
                                   geometry=gpd.GeoSeries(np.asarray(geoms, dtype=object), crs=crs), crs=crs)
        else:
            gdf = io.empty_frame(self.info.crs, COLUMNS)
            warnings.warn(f"{self.path}: no objects found; the result is an empty layer",
                          EmptyResultWarning, stacklevel=2)
        gdf = _to_crs(gdf, dst)
        if output is not None:
            io.write(gdf, output, layer=layer, dst_crs=dst)
        return gdf

    def segment_to_file(self, output: str | os.PathLike, *, layer: str | None = None,
                        bbox: tuple[float, float, float, float] | None = None,
                        bbox_crs: object = None, progress: bool | ProgressCallback | None = None,
                        stats: RunStats | None = None, dst_crs: object = None, allow_empty: bool = True) -> int:
        """Like :meth:`segment`, but polygons stream to ``output`` as tiles finish (nothing held
        in memory beyond a batch); returns how many were written. For rasters whose result
        would not fit in memory, and what the CLI uses. ``allow_empty=False``: finding nothing
        raises :class:`~fastsam_geo.errors.EmptyResultError` and writes nothing (else an empty
        layer and an :class:`~fastsam_geo.errors.EmptyResultWarning`)."""
        io.check_output(output, inputs=[self.path], layer=layer)
        dst = self.check_dst_crs(dst_crs)
        callback, close = as_callback(progress)
        try:
            with self.reader, contextlib.closing(self._batches(bbox, bbox_crs, callback, stats)) as batches:
                try:
                    n = io.write_stream(batches, output, self.info.crs, COLUMNS, layer=layer, dst_crs=dst,
                                        allow_empty=allow_empty)
                except EmptyResultError as exc:
                    raise EmptyResultError(f"{self.path}: {exc}") from None
        finally:
            close()
        if n == 0:  # (allow_empty: an empty layer was written)
            warnings.warn(f"{self.path}: no objects found; the result is an empty layer",
                          EmptyResultWarning, stacklevel=2)
        return n

    def _batches(self, bbox, bbox_crs, progress, stats):
        """``(polygons, {score, quality, area_m2})`` batches of the objects (touching ``bbox``), as the
        post stage finishes them: vectorised, filtered and measured off the network's thread."""
        stats = stats if stats is not None else RunStats()
        tiles = regions = area = None
        if bbox is not None:
            tiles, area, pix = self._bbox(bbox, bbox_crs)
            regions = [pix]
        crs, transform, opts = self.info.crs, self.info.transform, self.vector
        min_quality = self.options.min_quality
        tidy = self.options.cleanup()

        def vectorise(objects):  # runs in the pipeline's post thread
            if min_quality > 0:  # objects without a quality (NaN: the segmenter gives none) stay
                objects = [o for o in objects if not o.quality < min_quality]
            geoms, objs = objects_to_rows(objects, transform, min_component=opts.min_component,
                                          min_hole=opts.min_hole, simplify=opts.simplify)
            if tidy and geoms:  # footprint clean-up of merged objects (fastsam_geo.cleanup)
                cleaned, keep = clean(np.asarray(geoms, dtype=object), crs, **tidy)
                geoms, objs = list(as_multipolygons(cleaned)), [objs[i] for i in keep]
            if area is not None and geoms:
                keep = shapely.intersects(np.asarray(geoms, dtype=object), area)
                geoms = [g for g, k in zip(geoms, keep) if k]
                objs = [o for o, k in zip(objs, keep) if k]
            stats.objects += len(geoms)
            arr = np.asarray(geoms, dtype=object)
            return geoms, {"score": np.asarray([o.score for o in objs], np.float32),
                           "quality": np.asarray([o.quality for o in objs], np.float32),
                           "area_m2": geodesic_areas(arr, crs),
                           **{k: np.full(len(geoms), v, dtype=object) for k, v in self.provenance.items()}}

        yield from self._iter(progress, stats, tiles, regions, vectorise)
        if stats.tiles and stats.tiles_skipped == stats.tiles:  # before any output file is renamed
            raise RasterError(f"{self.path}: every pixel {'in the bbox ' if area else ''}is nodata or "
                              "masked; nothing to segment")

    def prompt(self, prompts: Sequence[Prompt], *, progress: bool | ProgressCallback | None = None,
               output: str | os.PathLike | None = None, layer: str | None = None,
               stats: RunStats | None = None, dst_crs: object = None) -> gpd.GeoDataFrame:
        """The objects the prompts select: one row per prompt object, in prompt order.

        Columns: ``prompt_id`` (index of the defining prompt in ``prompts``), ``prompt_type``,
        ``found``, ``score``, ``quality``, ``area_m2``, ``source``, ``model``, ``geometry`` (a
        MultiPolygon in the raster's CRS, or ``dst_crs``). A prompt that selects nothing keeps its
        row with ``found`` False, no geometry (None; NULL in files) and NaN ``score``, ``quality``
        and ``area_m2`` (NULL in files); a warning names those prompts. See
        :mod:`fastsam_geo.prompts` for the rules. The options' filters and clean-up apply as in a
        whole run: objects under ``min_quality`` cannot be selected, and a selected footprint the
        clean-up drops (``min_area`` / ``max_area`` in m², ...) is not found.
        """
        if output is not None:
            io.check_output(output, inputs=[self.path], layer=layer)
        dst = self.check_dst_crs(dst_crs)
        stats = stats if stats is not None else RunStats()
        pobjs, background = to_pixel_objects(list(prompts), self.info.crs, self.info.transform,
                                             self.info.width, self.info.height)
        texts = [p for p in pobjs if p.kind == "text"]
        embed = self._text_embedder() if texts else None  # no CLIP: fail before any tile is segmented
        spatial = [p for p in pobjs if p.kind != "text"]
        rows: dict[int, list[tuple[MergedObject | None, float]]] = {}
        callback, close = as_callback(progress)
        try:
            if spatial:
                regions = [p.pixel_box() for p in spatial]
                objects = self._rated(self._objects(regions, callback, stats))
                for p, near in zip(spatial, _near(objects, regions)):
                    rows[p.prompt_id] = [self._select(p, [objects[k] for k in near], background)]
            if texts:
                from .text import rank_objects

                objects = self._rated(self._all_objects(callback, stats))
                obj_emb = self._object_embeddings(objects, embed)
                for p in texts:
                    rows[p.prompt_id] = rank_objects(objects, obj_emb, embed.embed_texts([p.text])[0], p.top_k)
            if callback is not None:  # the bar ends on the prompt objects found, not the run's merged objects
                found = sum(any(o is not None for o, _ in r) for r in rows.values())
                callback(Progress(stats.tiles, stats.tiles, found))
        finally:
            close()
        gdf = self._prompt_frame(pobjs, rows)
        missing = gdf.loc[~gdf.found, "prompt_id"].tolist()
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            warnings.warn(f"{len(missing)} of {len(gdf)} prompt(s) selected no object (prompt_id {shown}); their "
                          "rows have no geometry", EmptyResultWarning, stacklevel=2)
        gdf = _to_crs(gdf, dst)
        if output is not None:
            io.write(gdf, output, layer=layer, dst_crs=dst)
        return gdf

    def check_dst_crs(self, dst_crs: object) -> object:
        """``dst_crs`` as a :class:`pyproj.CRS` (None stays None) the raster's extent can be
        expressed in; :class:`~fastsam_geo.errors.CRSError` otherwise, before any tile is read."""
        if dst_crs is None:
            return None
        crs = parse_crs(dst_crs)
        x0, y0, x1, y1 = self.info.bounds
        ring = shapely.segmentize(shapely.box(x0, y0, x1, y1), max(x1 - x0, y1 - y0) / 16)
        try:
            transform_geometries(np.array([ring]), self.info.crs, crs)
        except Exception as exc:  # pyproj's ProjError too: no transformation between the two
            raise CRSError(f"cannot write the output in {crs_name(crs)}: the raster's extent "
                           f"({crs_name(self.info.crs)}) cannot be transformed to it ({exc})") from None
        return crs

    # -- internals -------------------------------------------------------------------------------

    def _open_store(self, cache):
        if cache is False:
            return MemoryStore(max_bytes=0)
        if cache is None:
            return MemoryStore()
        key = segmenter_key(self._spec, self.options)
        if key is None:
            warnings.warn("this segmenter has no cache_key: results are cached in memory only",
                          stacklevel=3)
            return MemoryStore()
        root = default_cache_dir() if str(cache) == "auto" else Path(cache)
        return DiskStore(root, self.path, self._run_key(key), grid=self.grid)

    def _run_key(self, model_key: str) -> dict:
        """What keys a tile's stored results: every option changing its masks, the model, the pixels."""
        return dict(self.options.result_key(), model=model_key, bands=list(self.reader.bands),
                    stretch=_stretch_key(self.reader.stretch), format=CACHE_FORMAT,
                    palette=self.reader.palette is not None)

    def _open_job(self, job_dir, restart: bool):
        from .jobs import JobStore

        key = segmenter_key(self._spec, self.options)
        if key is None:
            raise InputError("a resumable job needs a segmenter it can recognise on resume: weights, a "
                             "package.module:factory spec, or a callable with a cache_key attribute")
        o = self.options
        params = dict(dedup=o.dedup, prefer=o.prefer, simplify=o.simplify)  # (skip_failed_tiles: any, on resume)
        return JobStore(job_dir, self.path, self._run_key(key), params, grid=self.grid, restart=restart)

    def _lazy(self) -> _LazySegmenter:
        return _LazySegmenter(self)

    def _batch(self) -> int:
        if self.options.batch_size:
            return self.options.batch_size
        return getattr(self._seg, "batch_size", None) or 4 if self._seg is not None else 4

    def _iter(self, progress, stats, tiles, regions, finish=None):
        """:func:`~fastsam_geo.pipeline.iter_objects` with this session's reader, store and options."""
        opts = self.options
        merger = SeamMerger(self.grid, prefer=opts.prefer, nested=not opts.dedup)
        if self.client is not None:
            from .distributed import iter_objects_dask

            return iter_objects_dask(self.client, self.reader, self.grid, self._spec, opts, batch_size=self._batch(),
                                     progress=progress, stats=stats, tiles=tiles, regions=regions, store=self.store,
                                     finish=finish, merger=merger)
        return iter_objects(self.reader, self.grid, self._lazy(), batch_size=self._batch(), min_area=opts.min_area,
                            progress=progress, stats=stats, tiles=tiles, regions=regions, store=self.store,
                            finish=finish, merger=merger, dedup=opts.dedup, skip_failed=opts.skip_failed_tiles)

    def _bbox(self, bbox, bbox_crs):
        src_crs = self.info.crs if bbox_crs is None else parse_crs(bbox_crs)
        try:
            pix, area = bbox_to_pixels(bbox, src_crs, self.info.crs, self.info.transform, self.info.width,
                                       self.info.height)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if pix is None:
            b = ", ".join(f"{v:.6g}" for v in self.info.bounds)
            raise InputError(f"bbox {tuple(bbox)} ({crs_name(src_crs)}) lies outside the raster "
                             f"(bounds {b} in {crs_name(self.info.crs)})")
        return list(self.grid.intersecting(pix)), area, pix

    def _objects(self, regions, progress, stats) -> list[MergedObject]:
        """Whole merged objects touching the pixel ``regions`` (segmenting only what is missing)."""
        # every tile whose window holds the regions' pixels: a tile that missed an object its neighbour saw
        # in their overlap must not hide it (a whole run writes it); more join only to finish objects
        tiles = {self.grid.index(t): t for r in set(regions) for t in self.grid.intersecting(r)}
        regions = Regions(regions)
        out: list[MergedObject] = []
        batches = self._iter(progress, stats, [tiles[k] for k in sorted(tiles)], regions)
        with self.reader, contextlib.closing(batches):
            for objects in batches:
                out.extend(o for o in objects if regions.touches(o.box))
        return out

    def _all_objects(self, progress, stats) -> list[MergedObject]:
        """Every object of the raster, segmented once per session (a tile evicted from a bounded
        store later does not change them: same model, same pixels, same options)."""
        if self._all is None:
            self._all = self._objects([(0, 0, self.info.width, self.info.height)], progress, stats)
        return self._all

    def _rated(self, objects: list[MergedObject]) -> list[MergedObject]:
        """``objects`` without those under ``min_quality`` (NaN quality, none given, stays)."""
        q = self.options.min_quality
        return [o for o in objects if not o.quality < q] if q > 0 else objects

    @staticmethod
    def _select(p: PromptObject, near: list[MergedObject], background: np.ndarray):
        """The object prompt ``p`` picks among the objects ``near`` it."""
        if p.kind == "point":
            picked = [near[k] for k in select_points(near, p.points, background)]
            if not picked:
                return (None, float("nan"))
            obj = union(picked)
            return (obj, obj.score)
        ious = box_ious(near, p.box)
        if not len(ious) or ious.max() <= 0:
            return (None, float("nan"))
        k = int(np.argmax(ious))
        return (near[k], float(near[k].score))

    def _text_embedder(self):
        if self._embedder is None:
            from .text import load_embedder

            self._embedder = load_embedder(self._text_spec, device=self.options.device)
        return self._embedder

    def _object_embeddings(self, objects: list[MergedObject], embed) -> np.ndarray:
        """Embeddings of every object (memoised per embedder with the objects they belong to)."""
        from .text import object_embeddings

        if objects is self._all and embed.key in self._all_emb:
            return self._all_emb[embed.key]
        with self.reader:
            emb = object_embeddings(objects, embed, self.store, self.reader, self.grid, self._tile_instances,
                                    key=f"{embed.key}-dedup{int(self.options.dedup)}")
        if objects is self._all:
            self._all_emb[embed.key] = emb
        return emb

    def _tile_instances(self, ti: int) -> Instances:
        """One tile's instances as the merger saw them (object sources index them): from the
        store, else segmented again (evicted from a bounded memory store; the same model on the
        same pixels gives the same instances)."""
        inst = self.store.get(ti)
        if inst is None:
            inst = segment_tile(self.reader, self.grid.tiles[ti], self.segmenter, self.options.min_area)
            self.store.put(ti, inst)
        return suppress_duplicates(inst) if self.options.dedup else inst

    def _prompt_frame(self, pobjs: list[PromptObject], rows) -> gpd.GeoDataFrame:
        picked = {id(o): o for p in pobjs for o, _ in rows.get(p.prompt_id, ()) if o is not None}
        geoms = np.asarray([object_geometry(o, self.info.transform, min_component=self.vector.min_component,
                                            min_hole=self.vector.min_hole, simplify=self.vector.simplify)
                            for o in picked.values()], dtype=object)  # many clicks pick one object: once
        tidy = self.options.cleanup()
        if tidy and len(geoms):  # the clean-up of a whole run's footprints, all at once
            ok = np.flatnonzero(~(shapely.is_missing(geoms) | shapely.is_empty(geoms)))
            cleaned, keep = clean(geoms[ok], self.info.crs, **tidy)
            geoms = np.full(len(geoms), None, dtype=object)
            geoms[ok[keep]] = list(as_multipolygons(cleaned))
        traced = dict(zip(picked, geoms))
        recs = []
        for p in pobjs:
            for obj, score in rows.get(p.prompt_id, [(None, float("nan"))]):
                geom = None if obj is None else traced[id(obj)]
                found = geom is not None and not geom.is_empty
                recs.append((p.prompt_id, p.kind, found, score if found else float("nan"),
                             obj.quality if found else float("nan"), geom if found else None))
        if not recs:
            return io.empty_frame(self.info.crs, PROMPT_COLUMNS)
        geoms = as_multipolygons([g for *_, g in recs])  # nothing selected: None, NULL in files
        found = np.asarray([r[2] for r in recs], bool)
        return gpd.GeoDataFrame(
            {"prompt_id": np.asarray([r[0] for r in recs], np.int64), "prompt_type": [r[1] for r in recs],
             "found": found, "score": np.asarray([r[3] for r in recs], np.float32),
             "quality": np.asarray([r[4] for r in recs], np.float32),
             "area_m2": np.where(found, geodesic_areas(geoms, self.info.crs), np.nan),
             **{k: [v] * len(recs) for k, v in self.provenance.items()}},
            geometry=gpd.GeoSeries(geoms, crs=self.info.crs), crs=self.info.crs)


def _check_ground_units(info) -> None:
    """:class:`~fastsam_geo.errors.CRSError` unless one pixel of the raster has an area in m²."""
    if info.crs is None:
        return
    t = info.transform
    pixel = shapely.Polygon([t @ (0, 0), t @ (1, 0), t @ (1, 1), t @ (0, 1)])
    geodesic_areas(np.asarray([pixel], dtype=object), info.crs)


def check_job_options(job_dir, restart: bool, cache, client, segmenter) -> None:
    """``job_dir`` / ``restart`` / ``client`` checked together, before any work."""
    if restart and job_dir is None:
        raise InputError("restart discards a job: give its job_dir (--job-dir) too")
    if job_dir is not None and cache not in (None, False):
        raise InputError("give a cache or a job_dir, not both (a job folder is a cache that survives kills)")
    if client is not None and not (segmenter is None or isinstance(segmenter, str | os.PathLike)):
        raise InputError("with a Dask client give the segmenter as weights or a package.module:factory spec, "
                         "which each worker loads once, not as a Python object")


class _LazySegmenter:
    """The session's segmenter as three stages, loaded on first use (never for cached tiles).

    A staged segmenter (``prepare``/``infer``/``decode``, like FastSAMSegmenter) is delegated
    to; a plain callable runs whole in ``infer``.
    """

    def __init__(self, session: SegmentedRaster):
        self.session = session

    def prepare(self, images):
        seg = self.session.segmenter
        return seg.prepare(images) if staged(seg) else images

    def infer(self, batch):
        seg = self.session.segmenter
        if staged(seg):
            return seg.infer(batch)
        results = list(seg(batch))
        if len(results) != len(batch):
            from .errors import SegmenterError

            raise SegmenterError(f"segmenter returned {len(results)} results for {len(batch)} images")
        return results

    def decode(self, raw):
        seg = self.session.segmenter
        return seg.decode(raw) if staged(seg) else raw

    def __call__(self, images):
        return self.decode(self.infer(self.prepare(images)))


def _to_crs(gdf: gpd.GeoDataFrame, crs) -> gpd.GeoDataFrame:
    """``gdf`` reprojected to ``crs`` (None: as it is); ``area_m2`` stays (it is geodesic)."""
    if crs is None or gdf.crs == crs:
        return gdf
    return gdf.set_geometry(reproject_footprints(gdf.geometry.values, gdf.crs, crs), crs=crs)


def _near(objects: list[MergedObject], regions: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
    """For each region (raster-pixel box), the indexes of the objects whose box touches it
    (1 px of slack): one spatial-index query for all regions."""
    if not objects:
        return [np.zeros(0, int) for _ in regions]
    ob = np.asarray([o.box for o in objects], float)
    rb = np.asarray(regions, float)
    tree = shapely.STRtree(shapely.box(ob[:, 0], ob[:, 1], ob[:, 2], ob[:, 3]))
    qi, oi = tree.query(shapely.box(rb[:, 0], rb[:, 1], rb[:, 2], rb[:, 3]), predicate="intersects")
    order = np.argsort(qi, kind="stable")
    return np.split(oi[order], np.searchsorted(qi[order], np.arange(1, len(regions))))


def _stretch_key(stretch: Stretch) -> list:
    """A stretch in a cache key: ``[lo, hi]``, plus its levels where they are not 0-255 (so the
    keys of caches written before levels existed stay valid)."""
    key = [stretch.lo, stretch.hi]
    return key if stretch.lo is None or stretch.levels == FULL_RANGE.values else [*key, list(stretch.levels)]
