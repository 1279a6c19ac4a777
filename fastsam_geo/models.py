"""Which segmenter a run uses, and a key identifying it without loading it.

``None`` is the bundled building model; a string or path names weights for
:class:`~fastsam_geo.engine.FastSAMSegmenter` (torch and ultralytics load only then);
``"package.module:factory"`` calls ``factory()`` for a custom segmenter (also from the CLI);
any callable is used as it is.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from collections.abc import Callable, Sequence

import numpy as np

from .errors import InputError, ModelError
from .options import Options
from .types import Instances, MaskSet

SegmentFn = Callable[[list[np.ndarray]], Sequence[MaskSet | Instances]]
DEFAULT_MODEL = "buildings-nano.pt"
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def load_segmenter(model: object = None, options: Options | None = None, **kwargs) -> SegmentFn:
    """Resolve what ``segment_raster(segmenter=...)`` accepts into a callable segmenter.

    ``options`` (or :class:`~fastsam_geo.options.Options` fields as keywords: device, conf,
    iou, imgsz, ...) configure the FastSAM engine; they are validated before anything loads.
    """
    options = Options.of(options, **kwargs)
    if model is None:
        model = DEFAULT_MODEL  # the bundled default: works offline, right after install
    if _is_factory(model):
        return _import_factory(str(model))
    if isinstance(model, str | os.PathLike):
        from .engine import FastSAMSegmenter  # torch + ultralytics load here, not at import

        return FastSAMSegmenter(model, device=options.device, **options.engine())
    if callable(model):
        return model  # type: ignore[return-value]
    raise InputError(f"segmenter must be None, a weights path or a callable, got {type(model).__name__}")


def segmenter_key(model: object = None, options: Options | None = None) -> str | None:
    """A stable key for a segmenter *specification* (weights + every setting that changes its
    masks), for result caches.

    Weights are identified by their size and a hash of their first MiB, so the key is known
    without importing torch or loading the model. Callables give their ``cache_key``
    attribute, or None (their results cannot be cached across runs); the network settings of
    ``options`` do not apply to them.
    """
    options = options or Options()
    net = {k: v for k, v in options.result_key().items() if k in _NETWORK}
    if model is None:
        model = DEFAULT_MODEL
    if _is_factory(model):
        return f"factory:{model}"
    if isinstance(model, str | os.PathLike):
        path = check_weights(model)
        h = hashlib.sha1(str(path.stat().st_size).encode())
        with open(path, "rb") as f:
            h.update(f.read(1 << 20))
        return f"{path.stem}-{h.hexdigest()[:12]}-{_digest(net)}"
    key = getattr(model, "cache_key", None)
    return str(key) if key else None


_NETWORK = ("conf", "iou", "imgsz", "max_det", "half", "tta")


def check_weights(model: str | os.PathLike):
    """The weights file a name or path stands for, without loading it (no torch): raises
    :class:`~fastsam_geo.errors.WeightsNotFoundError` early, before any tile is read."""
    from .engine.weights import resolve_weights  # pure path logic; torch is not imported

    return resolve_weights(model)


def check_segmenter(model: object) -> None:
    """Fail now, not after the first tile, when ``model`` names weights that are not on disk.
    Nothing is loaded or imported (a factory's module is imported when the model loads)."""
    if model is None or _is_factory(model) or callable(model):
        return
    if isinstance(model, str | os.PathLike):
        check_weights(model)
        return
    raise InputError(f"segmenter must be None, a weights path or a callable, got {type(model).__name__}")


def _digest(obj: object) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _is_factory(model: object) -> bool:
    return isinstance(model, str) and bool(_FACTORY.match(model)) and not os.path.exists(model)


def _import_factory(spec: str) -> SegmentFn:
    module, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"cannot import segmenter factory {spec!r} ({exc})") from exc
    seg = factory()
    if not callable(seg):
        raise ModelError(f"{spec}() returned {type(seg).__name__}, not a callable segmenter")
    return seg
