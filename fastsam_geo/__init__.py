"""fastsam-geo: Fast Segment Anything for GIS and remote sensing.

``import fastsam_geo`` is light: torch, ultralytics and click load only when a model or the
CLI is used. The public names below are resolved lazily.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "segment_raster": "api",
    "SegmentedRaster": "session",
    "Options": "options",
    "PointPrompt": "prompts",
    "BoxPrompt": "prompts",
    "TextPrompt": "prompts",
    "evaluate": "api",
    "edge_map": "api",
    "object_proposals": "api",
    "evaluate_by_tile": "api",
    "evaluate_by_size": "api",
    "read_prompts": "io",
    "RunStats": "pipeline",
    "train": "training",
    "raster_info": "api",
    "load_segmenter": "models",
    "MaskSet": "types",
    "Instances": "types",
    "Progress": "types",
    "RasterInfo": "types",
    "Tile": "types",
    "Segmenter": "types",
    "FastSAMSegmenter": "engine",
    "plan_tiles": "tiling",
    "FastSAMGeoError": "errors",
    "EmptyResultWarning": "errors",
    "EmptyResultError": "errors",
}

__all__ = [  # noqa: RUF022 - grouped by role, not alphabetically
    "segment_raster", "SegmentedRaster", "Options", "PointPrompt", "BoxPrompt", "TextPrompt",
    "evaluate", "evaluate_by_tile", "evaluate_by_size", "edge_map", "object_proposals", "train", "raster_info",
    "load_segmenter",
    "plan_tiles", "read_prompts", "RunStats",
    "MaskSet", "Instances", "Progress", "RasterInfo", "Tile", "Segmenter", "FastSAMSegmenter",
    "FastSAMGeoError", "EmptyResultWarning", "EmptyResultError",
]

if TYPE_CHECKING:
    from .api import (
        edge_map,
        evaluate,
        evaluate_by_size,
        evaluate_by_tile,
        object_proposals,
        raster_info,
        segment_raster,
    )
    from .engine import FastSAMSegmenter
    from .errors import EmptyResultError, EmptyResultWarning, FastSAMGeoError
    from .io import read_prompts
    from .models import load_segmenter
    from .options import Options
    from .pipeline import RunStats
    from .prompts import BoxPrompt, PointPrompt, TextPrompt
    from .session import SegmentedRaster
    from .tiling import plan_tiles
    from .training import train
    from .types import Instances, MaskSet, Progress, RasterInfo, Segmenter, Tile


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastsam_geo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
