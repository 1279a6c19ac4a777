"""Every setting of a segmentation run, in one frozen value, validated before any work starts.

The CLI, the QGIS plugin and notebooks all build an :class:`Options` (or pass its fields as
keywords to :func:`fastsam_geo.segment_raster`), so a bad number is the same one-line
:class:`~fastsam_geo.errors.InputError` everywhere, raised before a raster is read or a model
loaded.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, fields

from .errors import InputError
from .gsd import validate as validate_gsd
from .tiling import validate as validate_tiling

STRETCHES = ("auto", "percentile", "none")
PREFER = ("edge", "score")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Options:
    """How a raster is segmented. ``None`` for a network setting means the model's own (its
    checkpoint recommends conf, iou and input size; FastSAM's are 0.4 / 0.9 / 1024).

    Tiling and reading: ``tile_size`` and ``overlap`` (pixels), ``bands`` (1-based, read as
    R, G, B; one band is shown as grey; ``None``: the colour bands, else band 1), ``stretch``
    (``"auto"``: one stretch per raster unless uint8, its 2nd/98th percentiles to the model card's
    ``input_levels`` with one map for all bands, else each band to 0-255; ``"percentile"``: uint8 too;
    ``"none"``).

    The network: ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``), ``conf``
    (confidence threshold, 0-1), ``iou`` (box NMS IoU, 0-1], ``imgsz`` (network input size,
    px), ``max_det`` (most masks per tile), ``half`` (fp16; default on CUDA), ``batch_size``
    (tiles per forward pass; default by device), ``tta`` (also run flipped tiles),
    ``threads`` (torch CPU threads during the run), ``sharpen`` (unsharp-mask amount for
    tiles the network enlarges, 0-3; ``None``: :data:`~fastsam_geo.gsd.SHARPEN` where ``gsd``
    enlarges imagery 2.5x coarser than the model's, else 0: :func:`~fastsam_geo.gsd.coarse_settings`).

    Objects: ``min_area`` (drop masks of fewer pixels), ``simplify`` (outline tolerance,
    pixels), ``dedup`` (masks of one object found twice, or nested in another, keep only the
    best: right for buildings; off keeps nested objects, FastSAM's everything mode),
    ``prefer`` (of several tiles' whole views of one object keep the one farthest from its
    tile's edges, ``"edge"``, or the best scoring, ``"score"``), ``skip_failed_tiles`` (a tile
    whose segmentation fails is skipped and listed, instead of stopping the run),
    ``min_quality`` (drop objects whose mask quality, the ``quality`` column, is below this,
    0-1; objects without a quality, from segmenters that give no mask probabilities, are kept).

    Clean-up of the merged footprints (:mod:`fastsam_geo.cleanup`; ground units, any CRS):
    ``regularize`` (right angles; needs the ``[regularize]`` extra), ``simplify_m``
    (outline tolerance, metres), ``min_area_m2`` / ``max_area_m2`` (keep objects in this
    area range, m²), ``fill_holes_below_m2`` (fill holes smaller than this, m²).

    Resolution: ``gsd`` (``"auto"``: when the model's card records the ground sample distance
    it was trained at, tiles are sized so the network sees the raster at that GSD, reading
    ``tile_size`` and ``overlap`` as pixels at the model's GSD, see :mod:`fastsam_geo.gsd`;
    ``"native"``: tiles as given, whatever the raster's resolution; a number: the model GSD to
    assume, m/px). Segmenters without a card (custom callables) are unaffected by ``"auto"``.
    """

    tile_size: int = 1024
    overlap: int = 128
    bands: tuple[int, ...] | None = None
    stretch: str = "auto"
    device: str = "auto"
    conf: float | None = None
    iou: float | None = None
    imgsz: int | None = None
    max_det: int = 300
    half: bool | None = None
    batch_size: int | None = None
    tta: bool = False
    threads: int | None = None
    min_area: int = 16
    simplify: float = 0.0
    dedup: bool = True
    prefer: str = "edge"
    skip_failed_tiles: bool = False
    min_quality: float = 0.0
    regularize: bool = False
    simplify_m: float = 0.0
    min_area_m2: float = 0.0
    max_area_m2: float | None = None
    fill_holes_below_m2: float = 0.0
    gsd: str | float = "auto"
    sharpen: float | None = None

    def __post_init__(self) -> None:
        validate_tiling(self.tile_size, self.overlap)
        object.__setattr__(self, "gsd", validate_gsd(self.gsd))
        if self.bands is not None:
            bands = tuple(self.bands)
            if len(bands) not in (1, 3) or not all(_is_int(b) and b >= 1 for b in bands):
                raise InputError(f"bands must be one or three band numbers (1-based), got {list(bands)}")
            object.__setattr__(self, "bands", tuple(int(b) for b in bands))
        _choice("stretch", self.stretch, STRETCHES)
        _choice("prefer", self.prefer, PREFER)
        if not isinstance(self.device, str) or not _DEVICE.match(self.device.lower()):
            raise InputError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        _number("conf", self.conf, 0.0, 1.0, optional=True)
        _number("iou", self.iou, 0.0, 1.0, optional=True, open_low=True)
        _integer("imgsz", self.imgsz, 32, 16384, optional=True)
        _integer("max_det", self.max_det, 1, 100000)
        _integer("batch_size", self.batch_size, 1, 1024, optional=True)
        _integer("threads", self.threads, 1, 4096, optional=True)
        _integer("min_area", self.min_area, 0, 2**31)
        _number("simplify", self.simplify, 0.0, 1e6)
        _number("min_quality", self.min_quality, 0.0, 1.0)
        _number("sharpen", self.sharpen, 0.0, 3.0, optional=True)
        for name in ("simplify_m", "min_area_m2", "fill_holes_below_m2"):
            _number(name, getattr(self, name), 0.0, 1e12)
        _number("max_area_m2", self.max_area_m2, 0.0, 1e12, optional=True, open_low=True)
        if self.max_area_m2 is not None and self.max_area_m2 < self.min_area_m2:
            raise InputError(f"max_area_m2 ({self.max_area_m2:g}) is below min_area_m2 ({self.min_area_m2:g})")
        for name in ("tta", "dedup", "skip_failed_tiles", "regularize"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.half is not None and not isinstance(self.half, bool):
            raise InputError(f"half must be True, False or None, got {self.half!r}")

    @classmethod
    def of(cls, options: Options | None = None, **changes) -> Options:
        """``options`` (default: the defaults) with ``changes`` applied; an unknown name is an
        :class:`InputError` listing the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InputError(f"unknown option {unknown[0]!r}; options are: {', '.join(sorted(known))}")
        return dataclasses.replace(options or cls(), **changes)

    def cleanup(self) -> dict:
        """Keyword arguments for :func:`fastsam_geo.cleanup.clean`; empty when nothing is asked."""
        out = dict(regularize_=self.regularize, simplify_m=self.simplify_m, min_area_m2=self.min_area_m2,
                   max_area_m2=self.max_area_m2, fill_holes_below_m2=self.fill_holes_below_m2)
        return out if any(v for v in out.values()) else {}

    def engine(self) -> dict:
        """Keyword arguments for :class:`~fastsam_geo.engine.FastSAMSegmenter` (the model's own
        settings where ours are ``None``)."""
        out = dict(conf=self.conf, iou=self.iou, imgsz=self.imgsz, max_det=self.max_det, half=self.half,
                   batch_size=self.batch_size, tta=self.tta, threads=self.threads, sharpen=self.sharpen)
        out["upsample"] = "linear" if self.gsd == "native" else "cubic"  # auto enlarges coarse imagery
        return {k: v for k, v in out.items() if v is not None}

    def result_key(self) -> dict:
        """Everything that changes a tile's masks (for result caches): the network settings
        and the pixels it is fed. Not: device, batch size, threads (same masks), nor what is
        applied after the cache (dedup, merging, simplification)."""
        key = dict(tile_size=self.tile_size, overlap=self.overlap, bands=self.bands, stretch=self.stretch,
                   conf=self.conf, iou=self.iou, imgsz=self.imgsz, max_det=self.max_det, half=self.half,
                   tta=self.tta, min_area=self.min_area, upsample=self.engine()["upsample"])
        if self.sharpen:  # only when on: unsharpened runs keep the keys (caches, resumable jobs) they had
            key["sharpen"] = self.sharpen
        return key


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _number(name: str, value: object, lo: float, hi: float, *, optional: bool = False,
            open_low: bool = False) -> None:
    if value is None and optional:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > lo if open_low else value >= lo) and value <= hi
    if not ok:
        span = f"{'(' if open_low else '['}{lo:g}, {hi:g}]"
        raise InputError(f"{name} must be a number in {span}, got {value!r}")


def _integer(name: str, value: object, lo: int, hi: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not _is_int(value) or not lo <= value <= hi:
        raise InputError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}")


_QUANTITY = re.compile(r"^\s*(-?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(px|m2|m²|m)?\s*$")


def parse_quantity(text: object, name: str, units: tuple[str, ...], default: str | None = None) -> tuple[float, str]:
    """``"20px"`` -> ``(20.0, "px")``, ``"15m2"`` / ``"15 m²"`` -> ``(15.0, "m2")``, ``"0.5m"`` ->
    ``(0.5, "m")``; a bare number takes ``default`` (none: an :class:`InputError`), as does a
    plain int/float. Only ``units`` are accepted."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value, unit = float(text), None
    else:
        m = _QUANTITY.match(str(text))
        if not m:
            raise InputError(f"{name} must be a number with a unit ({' or '.join(units)}), e.g. 20{units[0]}; "
                             f"got {text!r}")
        value, unit = float(m.group(1)), m.group(2)
    unit = {"m²": "m2"}.get(unit, unit) or default
    if unit not in units:
        raise InputError(f"{name} needs a unit: {' or '.join(units)} (e.g. {value:g}{units[0]}); got {text!r}")
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{name} must be a number >= 0, got {text!r}")
    return value, unit
