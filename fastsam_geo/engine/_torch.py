"""Lazy torch access and device choice, shared by the engine modules."""

from __future__ import annotations

import os

from ..errors import InputError, ModelError


def _torch():
    os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics: never probe the network
    import torch

    return torch


_MALLOC_SET = False


def release_freed_memory() -> None:
    """On glibc, serve allocations of 128 KiB and more with ``mmap`` so that memory freed by
    CPU inference goes back to the system.

    glibc raises its mmap threshold each time a large block is freed, after which the
    network's ever-changing activation buffers come from the heap, fragment it, and stay
    resident: measured with FastSAM-s on 1024² tiles, ~400 MB more peak RSS. A fixed
    threshold (what ``MALLOC_MMAP_THRESHOLD_=131072`` would do) keeps it flat. Skipped when
    the user set that variable, or with ``FASTSAM_GEO_MALLOC=0``; a no-op off glibc.
    """
    global _MALLOC_SET
    if _MALLOC_SET or os.environ.get("FASTSAM_GEO_MALLOC") == "0" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    _MALLOC_SET = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


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


