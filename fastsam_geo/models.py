"""Which segmenter a run uses, and a key identifying it without loading it.

``None`` is the bundled building model; a string or path names weights for
:class:`~fastsam_geo.engine.FastSAMSegmenter` (torch and ultralytics load only then);
``"package.module:factory"`` calls ``factory()`` for a custom segmenter (also from the CLI);
any callable is used as it is.

Both kinds of name can run code, so neither is ever guessed: weights are pickles (the bundled
and official ones load only from their fixed places and after their SHA-256 matches a pin; a
file the user names loads with a notice, see :mod:`fastsam_geo.engine.weights`), and a factory
spec imports its module and calls the factory, by design, as a plugin would. A factory that
fails, exits (``sys:exit``) or returns no segmenter is one :class:`ModelError` naming the spec.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .errors import GsdWarning, InputError, ModelError
from .gsd import GsdPlan, ModelGsd, coarse_settings, far_off, ground_gsd, model_gsd, plan, trained_native_gsd
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


def model_name(model: object = None) -> str:
    """A short name of a segmenter specification for the ``model`` column of outputs (known
    without loading anything): ``buildings-nano``, a weights file's name (``FastSAM-s.pt``,
    ``roofs.pt``), a factory spec, or a callable's ``name`` attribute (else its class or
    function name)."""
    if model is None:
        return Path(DEFAULT_MODEL).stem
    if _is_factory(model):
        return str(model)
    if isinstance(model, str | os.PathLike):
        name = Path(model).name
        return Path(name).stem if name == DEFAULT_MODEL else name
    name = getattr(model, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(model, "__name__", None) or type(model).__name__


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


_NETWORK = ("conf", "iou", "imgsz", "max_det", "half", "tta", "upsample", "sharpen")


def check_weights(model: str | os.PathLike):
    """The weights file a name or path stands for, without loading it (no torch), before any
    tile is read: :class:`~fastsam_geo.errors.WeightsNotFoundError` when it is not on disk,
    :class:`~fastsam_geo.errors.UntrustedWeightsError` when a bundled or official name's file
    is not the published one (SHA-256 checked here, once per process and file)."""
    from .engine.weights import resolve_weights  # pure path logic; torch is not imported

    return resolve_weights(model)


def check_segmenter(model: object) -> None:
    """Fail now, not after the first tile, when ``model`` names weights that are not on disk or
    not the published file. Nothing is unpickled or imported: a factory's module is imported
    (and runs) only when the model loads."""
    if model is None:
        model = DEFAULT_MODEL  # the bundled file is verified (SHA-256) early too
    if _is_factory(model) or callable(model):
        return
    if isinstance(model, str | os.PathLike):
        check_weights(model)
        return
    raise InputError(f"segmenter must be None, a weights path or a callable, got {type(model).__name__}")


def model_card(model: object) -> dict | None:
    """The card (``WEIGHTS.json`` beside the weights) of a segmenter specification, without
    loading it: for ``None`` (the bundled model), a weights name or path, or a loaded segmenter
    with a ``path`` to its weights; ``None`` for factories and other callables, or no card."""
    if model is None:
        model = DEFAULT_MODEL
    if _is_factory(model):
        return None
    path = getattr(model, "path", None) if callable(model) else check_weights(model)
    if path is None:
        return None
    card = Path(path).with_suffix(".json")
    try:
        data = json.loads(card.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _digest(obj: object) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _is_factory(model: object) -> bool:
    return isinstance(model, str) and bool(_FACTORY.match(model)) and not os.path.exists(model)


def _import_factory(spec: str) -> SegmentFn:
    """Import ``module`` and call ``factory()`` for ``"module:factory"``: this runs their code,
    which is the point (a plugin); every way it can fail, including ``sys.exit`` (``SystemExit``,
    which would end a CLI run with status 0 and nothing written), is one ModelError line."""
    module, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"cannot import segmenter factory {spec!r} ({_first_line(exc)}); "
                         "give an importable package.module:function") from exc
    except (Exception, SystemExit) as exc:
        raise ModelError(f"segmenter factory {spec!r}: importing {module} failed ({_what(exc)})") from exc
    try:
        seg = factory()
    except (Exception, SystemExit) as exc:
        raise ModelError(f"segmenter factory {spec!r} failed instead of returning a segmenter "
                         f"({_what(exc)}); pass a function that returns one") from exc
    if not callable(seg):
        raise ModelError(f"segmenter factory {spec!r} returned {type(seg).__name__}, not a callable segmenter; "
                         "it must return segmenter(images) -> list[MaskSet]")
    return seg


def _what(exc: BaseException) -> str:
    """An exception as a short phrase: ``SystemExit`` gets its name (its text is a bare code)."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})" if exc.code not in (None, "") else "it called sys.exit()"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def bare_callable(segmenter: object) -> bool:
    """A callable without weights (a fake or custom segmenter): no card to read."""
    return callable(segmenter) and not isinstance(segmenter, str) and getattr(segmenter, "path", None) is None


def resolve_gsd(options: Options, info, segmenter: object) -> tuple[Options, GsdPlan | None]:
    """``options`` with the tile size and overlap ``options.gsd`` calls for on this raster, and
    the plan (``None`` when nothing changes: ``"native"``, no CRS, or ``"auto"`` with a model
    whose card records no GSD). Warns (:class:`GsdWarning`) when the raster is far outside the
    model's training range."""
    if options.gsd == "native":
        return options, None
    full = model_card(segmenter) if not bare_callable(segmenter) else None
    card = model_gsd(full)
    if options.gsd != "auto":
        card = ModelGsd(options.gsd, options.gsd, options.gsd) if card is None else \
            ModelGsd(options.gsd, card.lo, card.hi)
    if card is None:
        return options, None
    raster = ground_gsd(info.transform, info.crs, info.width, info.height)
    if raster is None:
        return options, None
    msg = far_off(raster, card)
    if msg:
        warnings.warn(msg, GsdWarning, stacklevel=3)
    p = plan(options.tile_size, options.overlap, raster, card.gsd)
    changes = {}
    if segmenter is None or (isinstance(segmenter, str | os.PathLike) and not _is_factory(segmenter)):
        # weights this run loads into the engine (a loaded or custom segmenter keeps its settings)
        coarse = coarse_settings(p, trained_native_gsd(full))
        changes = {k: v for k, v in coarse.items() if getattr(options, k) is None}  # the user's own win
    return Options.of(options, tile_size=p.tile_size, overlap=p.overlap, **changes), p
