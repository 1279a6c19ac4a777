"""API calls in ``QgsTask`` s: progress, cancel, and one session per raster.

:class:`Sessions` keeps one :class:`fastsam_geo.SegmentedRaster` per :class:`~.adapter.Job`
(source raster, model, options), so the tiles a prompt segmented stay cached and later prompts
answer from the cache. A session is not thread-safe: tasks using one are serialised by its lock
(a task waiting for it can still be cancelled). :class:`SegmentTask` runs one call in QGIS's task
manager and converts the result to features off the main thread; ``finished`` runs on the main thread.
fastsam-geo's warnings (a raster far from the model's GSD, nothing found) are recorded in the thread
that raised them and handed to the main thread with the result.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable

from qgis.core import QgsFields, QgsTask

from fastsam_geo import SegmentedRaster, errors
from fastsam_geo.errors import Cancelled, FastSAMGeoError

from . import adapter
from .adapter import Job


def in_python_thread(fn: Callable[[], object], warned: list | None = None):
    """``fn()`` run in a fresh Python thread, waited for; its result, or its exception raised here.
    With ``warned``, the fastsam-geo warnings ``fn`` raises are appended to it (:func:`recorded`).

    QGIS runs tasks and Processing algorithms on pooled Qt threads, where every call into Python gets
    a short-lived thread state. pyproj keeps one PROJ context per OS thread but frees it with the
    Python thread state, so the next call on the same pooled thread uses a freed context: a
    segmentation fault in ``proj_create`` on the second task (seen in tests/qgis). A thread Python
    creates keeps its state for its whole life, and its OS thread is never reused.
    """
    box: dict = {}

    def target():
        try:
            with recorded(warned) if warned is not None else contextlib.nullcontext():
                box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="fastsam-geo-task", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box.pop("error")
    return box["value"]


FASTSAM_WARNINGS = tuple(v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Warning))
_recording: dict[int, list] = {}  # thread id -> where its warnings go
_recording_lock = threading.Lock()
_saved: list = []  # the warnings state before the first recorder (a catch_warnings) while any records


@contextlib.contextmanager
def recorded(into: list):
    """fastsam-geo's warnings raised in this thread during the block are appended to ``into``
    (``warnings.WarningMessage`` s, every time, not once per place) instead of shown; other
    warnings, and other threads' ones, are shown as before. ``catch_warnings`` alone is process-wide:
    tasks running at once would record each other's, and the first to end would restore the state
    under the other, whose recorder then swallows every warning for good."""
    me = threading.get_ident()
    with _recording_lock:
        if not _recording:
            saved = warnings.catch_warnings()
            saved.__enter__()
            _saved.append(saved)
            for category in FASTSAM_WARNINGS:
                warnings.filterwarnings("always", category=category)
            warnings.showwarning = functools.partial(_route, warnings.showwarning)
        _recording[me] = into
    try:
        yield into
    finally:
        with _recording_lock:
            del _recording[me]
            if not _recording:
                _saved.pop().__exit__(None, None, None)


def _route(show, message, category, filename, lineno, file=None, line=None) -> None:
    into = _recording.get(threading.get_ident())
    if into is not None and issubclass(category, FASTSAM_WARNINGS):
        into.append(warnings.WarningMessage(message, category, filename, lineno, file, line))
    else:
        show(message, category, filename, lineno, file, line)


class Sessions:
    """At most ``size`` segmented rasters, least recently used first out, each with its own lock."""

    def __init__(self, size: int = 3):
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[Job, tuple[SegmentedRaster | None, threading.Lock]] = OrderedDict()

    def get(self, job: Job) -> SegmentedRaster | None:
        """The session for ``job`` if one was made (for inspection; do not use it without :meth:`use`)."""
        with self._lock:
            return self._items[job][0] if job in self._items else None

    @contextlib.contextmanager
    def use(self, job: Job, cancelled: Callable[[], bool] = lambda: False):
        """The session for ``job``, held exclusively for the block (made on first use, in the caller's thread)."""
        with self._lock:
            if job not in self._items:
                self._items[job] = (None, threading.Lock())
            self._items.move_to_end(job)
            lock = self._items[job][1]
            while len(self._items) > self.size:
                self._items.popitem(last=False)  # a running task keeps its own reference
        while not lock.acquire(timeout=0.05):
            if cancelled():
                raise Cancelled("cancelled while waiting for another task on this raster")
        try:
            with self._lock:
                sr = self._items.get(job, (None, lock))[0]
            if sr is None:
                sr = SegmentedRaster(job.source, segmenter=job.segmenter, options=job.options, text_embedder=job.clip)
                with self._lock:
                    if job in self._items:
                        self._items[job] = (sr, lock)
            yield sr
        finally:
            lock.release()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class SegmentTask(QgsTask):
    """One API call on a session: ``call(session, progress) -> GeoDataFrame``.

    After it ends (main thread), ``on_done(task)`` gets the task: ``features`` (the result rows as
    features of ``fields``), ``found``/``rows`` (prompt rows that selected something / all rows),
    ``warnings`` (the fastsam-geo warnings the call raised, also when it failed), ``error`` (a one-line
    message) or ``isCanceled()``.
    """

    def __init__(self, description: str, sessions: Sessions, job: Job, call: Callable, fields: QgsFields,
                 on_done: Callable[[SegmentTask], None], *, extra: dict | None = None, prompts: list | None = None):
        super().__init__(description, QgsTask.CanCancel)
        self.sessions, self.job, self.call, self.fields = sessions, job, call, fields
        self.on_done, self.extra, self.prompts = on_done, extra or {}, prompts
        self.features: list = []
        self.rows = self.found = 0
        self.error: str | None = None
        self.warnings: list[warnings.WarningMessage] = []
        self.seconds = 0.0

    def _progress(self, p) -> bool:
        if p.total:
            self.setProgress(100.0 * p.done / p.total)
        return not self.isCanceled()

    def run(self) -> bool:  # worker thread: no GUI, no QgsProject
        t0 = time.perf_counter()
        try:
            in_python_thread(self._work, self.warnings)
            return not self.isCanceled()
        except Cancelled:
            return False
        except ImportError as exc:
            from . import torch_hint

            self.error = f"{exc}. " + (torch_hint() or "")
        except FastSAMGeoError as exc:
            self.error = str(exc)
        except Exception as exc:  # a bug or a library failure: one line for the user, not a dead task
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.seconds = time.perf_counter() - t0
        return False

    def _work(self) -> None:
        with self.sessions.use(self.job, self.isCanceled) as sr:
            gdf = self.call(sr, self._progress)
        self.rows = len(gdf)
        self.found = int(gdf["found"].sum()) if "found" in gdf.columns else len(gdf)
        self.features = adapter.features(gdf, self.fields, self.extra, found_only=True, prompts=self.prompts)

    def finished(self, result: bool) -> None:  # main thread
        self.on_done(self)
