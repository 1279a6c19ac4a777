"""Lazy torch access and device choice, shared by the engine modules."""

from __future__ import annotations

import os

from ..errors import InputError, ModelError


def _torch():
    os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics: never probe the network
    import torch

    return torch


class _quiet_ultralytics:
    """Silence ultralytics' INFO logging (model summaries) inside the block."""

    def __enter__(self):
        import logging

        from ultralytics.utils import LOGGER

        self._logger, self._level = LOGGER, LOGGER.level
        LOGGER.setLevel(logging.WARNING)

    def __exit__(self, *exc):
        self._logger.setLevel(self._level)


def pick_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` if available, else ``"mps"``, else ``"cpu"``; others validated."""
    torch = _torch()
    device = str(device).lower()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available here; "
                         "use --device cpu or auto")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


