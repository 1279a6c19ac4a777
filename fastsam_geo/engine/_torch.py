"""Lazy torch access, device choice and the process-wide settings the engine may touch.

fastsam-geo also runs inside other processes (QGIS, notebooks, servers), so nothing here
changes process-wide state for good by default: torch's thread count is set only for the
duration of a call (:func:`torch_threads`), and glibc's allocator is tuned only when the
process owner asks (:func:`release_freed_memory`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from ..errors import InputError, ModelError


def _torch():
    os.environ.setdefault("YOLO_OFFLINE", "true")  # ultralytics: never probe the network
    os.environ.setdefault("YOLO_VERBOSE", "false")  # nor print its settings banner on our users' stdout
    import torch

    return torch


_MALLOC_SET = False


def release_freed_memory(*, process_owner: bool = False) -> bool:
    """On glibc, serve allocations of 128 KiB and more with ``mmap`` so that memory freed by
    CPU inference goes back to the system. Returns whether the setting is in force.

    glibc raises its mmap threshold each time a large block is freed, after which the
    network's ever-changing activation buffers come from the heap, fragment it, and stay
    resident: measured with FastSAM-s on 1024² tiles, ~400 MB more peak RSS. A fixed
    threshold (what ``MALLOC_MMAP_THRESHOLD_=131072`` would do) keeps it flat.

    It changes every later allocation of the whole process, which in QGIS is QGIS itself,
    so it is opt-in: a process fastsam-geo owns (the CLI) passes ``process_owner=True``; a
    library host gets it only with ``FASTSAM_GEO_MALLOC=1``. ``FASTSAM_GEO_MALLOC=0`` or a
    user-set ``MALLOC_MMAP_THRESHOLD_`` always wins. A no-op off glibc.
    """
    global _MALLOC_SET
    wanted = os.environ.get("FASTSAM_GEO_MALLOC", "1" if process_owner else "0") == "1"
    if _MALLOC_SET or not wanted or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return _MALLOC_SET
    try:
        import ctypes

        _MALLOC_SET = ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024) == 1  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass
    return _MALLOC_SET


_THREADS_LOCK = threading.Lock()
_threads_users = 0
_threads_saved = 0


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[None]:
    """Torch's CPU thread count set to ``n`` inside the block (``None``: left as it is), and
    the count the process had put back when the last concurrent block exits.

    torch's thread count is process-wide: a library that sets it for good changes its host's
    (QGIS's) other work, and so do ultralytics' trainer and predictor (``select_device``
    resets it to ``cpu_count - 1``, at most 8). Blocks may overlap (the pipeline runs the
    network and decoding on different threads): the first one in saves and sets the count,
    the last one out restores it, so interleaved exits cannot leave a stale value.
    """
    global _threads_users, _threads_saved
    torch = _torch()
    with _THREADS_LOCK:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
            if n and n != _threads_saved:
                torch.set_num_threads(n)
        _threads_users += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_users -= 1
            if _threads_users == 0 and torch.get_num_threads() != _threads_saved:
                torch.set_num_threads(_threads_saved)


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


