"""Training and checkpoint helpers (ultralytics), offline."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ModelError, WeightsNotFoundError
from ._torch import _quiet_ultralytics, _torch, pick_device, torch_threads
from .weights import _has_folder, load_error, locate_weights, notice, require_restricted, restricted, trusted_by_env


def make_untrained_checkpoint(path: str | os.PathLike, *, arch: str = "s", nc: int = 1,
                              imgsz: int = 1024, seed: int = 0, calibrate: bool = True, **meta: Any) -> Path:
    """Write a YOLOv8-seg checkpoint with random weights, built from ultralytics' own yaml.

    ``arch`` is the YOLOv8 scale: FastSAM-s is ``"s"``, FastSAM-x is ``"x"`` (same layers,
    one class, 32 prototypes). Inference cost does not depend on weight values, so this
    measures real FastSAM compute offline, and tests the real loading path.

    ``calibrate``: set batch-norm statistics on noise so scores and masks vary between
    anchors like a trained model's (noisy masks). Without it activations vanish: every
    anchor gets the same high score (all pass any threshold, the stress case for NMS) and
    masks are smooth box-like blobs.
    """
    torch = _torch()
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(seed)
    model = SegmentationModel(f"yolov8{arch}-seg.yaml", nc=nc, verbose=False)
    # Calibrate batch-norm statistics on noise so activations neither vanish nor explode
    # through the untrained layers; then scores and masks vary between anchors as a trained
    # model's do (otherwise every anchor gets the same score and NMS order is arbitrary).
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if calibrate:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration passes
        model.train()
        with torch.no_grad():
            for _ in range(2):
                model(torch.rand(2, 3, 128, 128))
        for bn in bns:
            bn.momentum = 0.03
    with torch.no_grad():
        for seq in model.model[-1].cv3:
            seq[-1].bias.fill_(-2.0 if calibrate else 2.0)
    model.eval()
    model.names = {i: "object" for i in range(nc)}
    model.args = {"task": "segment", "imgsz": imgsz}
    ckpt = {"model": model.half(), "train_args": {"task": "segment", "imgsz": imgsz},
            "fastsam_geo": {"arch": f"yolov8{arch}-seg", "untrained": True, "imgsz": imgsz, **meta}}
    path = Path(path)
    torch.save(ckpt, path)
    return path


def train_yolo(data_yaml: str | os.PathLike, workdir: str | os.PathLike, *, base: str = "yolov8n-seg.yaml",
               epochs: int = 100, imgsz: int = 512, batch: int = 8, device: str = "auto",
               seed: int = 0, workers: int = 2, patience: int = 0, trust: bool | None = None,
               close_mosaic_share: float | None = None, **hyp: Any) -> Path:
    """Train a YOLOv8-seg model offline with ultralytics; return the best checkpoint's path.

    ``base``: an architecture yaml (``yolov8n-seg.yaml``: from scratch) or weights to fine-tune
    (``FastSAM-s.pt``, a previous model), resolved as inference resolves weights
    (:func:`resolve_base`); ``trust`` is :class:`~fastsam_geo.engine.FastSAMSegmenter`'s.
    Nothing touches the network: plots and the AMP check (which fetches a model) are off, and
    the rest of ultralytics' network calls are stubbed for the duration (:func:`_offline`).
    torch's thread count, which ultralytics' trainer resets, is given back to the process
    afterwards. ``hyp`` are ultralytics train arguments (augmentation, lr, ...).

    ``close_mosaic_share`` (0..1): the share of the run's epochs trained without mosaic, kept
    when ultralytics re-estimates the epoch count after each epoch of a time-budgeted run
    (``time=`` hours): a fixed ``close_mosaic`` count would be a different share of a run
    whose length is only known once it has started (:func:`_keep_close_mosaic_share`).
    """
    if close_mosaic_share is not None and not 0.0 < close_mosaic_share < 1.0:
        raise ModelError(f"close_mosaic_share must lie between 0 and 1, got {close_mosaic_share!r}")
    _torch()
    from ultralytics import YOLO

    base, safe = resolve_base(base, trust)
    dev = pick_device(device)
    args = dict(data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch,
                device="cpu" if dev == "cpu" else dev.replace("cuda:", "").replace("cuda", "0"),
                project=str(Path(workdir).resolve()), name="train", exist_ok=True, plots=False, amp=False,
                seed=seed, deterministic=False, workers=workers, verbose=False, patience=patience or epochs,
                single_cls=True)
    args.update(hyp)
    with _offline(), torch_threads(), _restricted_loading(safe):
        try:
            model = YOLO(base, task="segment")
        except Exception as exc:  # refused by restricted unpickling, corrupt file, bad yaml...
            raise load_error(base, exc, safe) from exc
        if close_mosaic_share is not None:
            args["close_mosaic"] = max(1, round(close_mosaic_share * epochs))  # arms the trainer's gate
            model.add_callback("on_fit_epoch_end", _keep_close_mosaic_share(close_mosaic_share))
        try:
            model.train(**args)
        except ModelError:
            raise
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(f"training failed: {first}") from exc
    best = Path(workdir) / "train" / "weights" / "best.pt"
    if not best.exists():
        best = Path(workdir) / "train" / "weights" / "last.pt"
    return best


def _keep_close_mosaic_share(share: float):
    """An ``on_fit_epoch_end`` callback setting the trainer's ``close_mosaic`` (a count of last
    epochs) to ``share`` of its current epoch count, which a time-budgeted run re-estimates after
    every epoch; the trainer compares ``epoch >= epochs - close_mosaic`` at each epoch's start."""

    def callback(trainer: Any) -> None:
        trainer.args.close_mosaic = max(1, round(share * trainer.epochs))

    return callback


def resolve_base(base: str | os.PathLike, trust: bool | None = None) -> tuple[str, bool]:
    """What ultralytics is given for ``base``, and whether it must load it restricted.

    Weights resolve as at inference (:func:`~fastsam_geo.engine.weights.locate_weights`): the
    bundled and official names to their verified files, anything else is the user's file (a
    notice; restricted unless trusted). An architecture yaml by bare name is ultralytics'
    packaged one, never a file of that name in the current folder (ultralytics looks there
    first, and evaluates a yaml's ``activation``); a yaml path is the user's (a notice; built
    without evaluating anything unless trusted).
    """
    raw = os.fspath(base)
    if raw.endswith((".yaml", ".yml")):
        if not _has_folder(raw):
            return _packaged_yaml(raw), False
        path = Path(raw).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"architecture yaml {raw}: no such file")
        safe = not (trusted_by_env() if trust is None else trust)
        notice(path, safe, what="yaml")
        return str(path.resolve()), safe
    weights = locate_weights(raw)
    safe = restricted(weights, trust)
    if not weights.verified:
        notice(weights.path, safe)
    return str(weights.path.resolve()), safe


def _packaged_yaml(name: str) -> str:
    """``yolov8n-seg.yaml`` -> that name in ultralytics' packaged model folder (where its
    scale-less ``yolov8-seg.yaml`` lies; ultralytics reads the scale from the name)."""
    from ultralytics.utils import ROOT

    models = ROOT / "cfg" / "models"
    for candidate in (name, re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", name)):
        found = sorted(models.rglob(candidate))
        if found:
            return str(found[0].parent / name)
    raise ModelError(f"{name}: not one of ultralytics' model yamls (e.g. yolov8n-seg.yaml); "
                     f"pass a path (./{name}) to build your own architecture")


@contextlib.contextmanager
def _restricted_loading(on: bool) -> Iterator[None]:
    """ultralytics' own restricted mode (``ULTRALYTICS_SAFE_LOAD``) for the whole training call
    when the base is the user's untrusted file: its checkpoint is unpickled ``weights_only``
    with ultralytics' allow-list, and every model the trainer builds from the yaml inside it is
    built without ``eval``. ultralytics reads the flag at each load, so it is set for the call
    and restored after."""
    if not on:
        yield
        return
    from ultralytics.nn import tasks

    require_restricted("the base model")
    saved = tasks.SAFE_LOAD
    tasks.SAFE_LOAD = True
    try:
        yield
    finally:
        tasks.SAFE_LOAD = saved


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Stub ultralytics' network calls on the training path, restoring them afterwards.

    ``YOLO_OFFLINE`` only skips ultralytics' connectivity probe, and only when set before its
    first import (a host such as QGIS may have imported it already). The trainer still looks
    for a plotting font while checking the dataset (``check_font``: a HEAD request to GitHub
    even with ``plots=False``), asks PyPI for updates and pip-installs missing requirements
    when it believes it is online, and registers analytics, Platform and third-party logger
    callbacks (ClearML, Comet, MLflow, ...) that upload. Each is replaced where it is looked
    up; anything else that would download fails with a clear :class:`ModelError`.
    """
    from ultralytics.data import utils as data_utils
    from ultralytics.utils import callbacks, checks, downloads, plotting

    def no_font(*args: Any, **kwargs: Any) -> None:
        return None  # plots are off; the font only ever labels plots

    def no_download(url: object = "", *args: Any, **kwargs: Any) -> None:
        raise ModelError(f"training tried to download {url}; fastsam-geo never downloads: put the file on disk")

    stubs = [(data_utils, "check_font", no_font), (checks, "check_font", no_font), (plotting, "check_font", no_font),
             (checks, "ONLINE", False),
             (checks, "check_pip_update_available", lambda: False),
             (callbacks, "add_integration_callbacks", lambda instance: None),
             (downloads, "safe_download", no_download), (data_utils, "safe_download", no_download)]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in stubs]
    try:
        for obj, name, value in stubs:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, **meta: Any) -> Path:
    """Slim a training checkpoint for shipping: fp16 model only, plus ``fastsam_geo`` metadata
    (recommended ``imgsz``, ``conf``, ``iou``, ``tile_size``... read by :class:`FastSAMSegmenter`).
    """
    torch = _torch()
    from ultralytics.nn.tasks import load_checkpoint

    with _quiet_ultralytics():
        model, ckpt = load_checkpoint(str(src), device="cpu", fuse=False)
    out = {"model": model.half(), "train_args": {k: v for k, v in (ckpt.get("train_args") or {}).items()
                                                 if k in ("task", "imgsz", "epochs", "single_cls")},
           "fastsam_geo": meta, "date": ckpt.get("date"), "version": ckpt.get("version")}
    dst = Path(dst)
    torch.save(out, dst)
    return dst
