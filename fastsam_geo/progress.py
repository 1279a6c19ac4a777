"""Progress bars for long runs: what ``progress=True`` means in the API, the CLI and notebooks.

A progress callback receives :class:`~fastsam_geo.types.Progress` after each batch and may
return ``False`` to cancel (the QGIS task adapter uses that). ``progress=True`` draws a tqdm
bar (``tqdm.auto``: a widget in Jupyter, text on stderr in a terminal).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from .types import Progress, ProgressCallback


class TqdmProgress:
    """A progress callback drawing a tqdm bar of tiles, with the objects found so far.

    The bar appears with the first report, so a run that fails before any tile is done (a
    missing model, a prompt outside the raster) prints its one error line and no empty bar.
    """

    def __init__(self, total: int | None = None, *, desc: str = "segmenting", disable: bool = False):
        self.total, self.desc, self.disable = total, desc, disable
        self.bar = None

    def __call__(self, p: Progress) -> bool:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=p.total, unit="tile", desc=self.desc, disable=self.disable, file=sys.stderr,
                            dynamic_ncols=True)
        self.bar.total = p.total
        self.bar.update(p.done - self.bar.n)
        self.bar.set_postfix(objects=p.objects, refresh=False)
        return True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class LogProgress:
    """Progress for a non-terminal (a log file, CI, ``2> log``): a tqdm bar there writes one line per
    update, so instead a plain line at most every ``every`` seconds or 25 % of the tiles, and at the end."""

    def __init__(self, *, desc: str = "segmenting", every: float = 30.0, stream=None):
        self.desc, self.every, self.stream = desc, every, stream
        self._last_t = self._last_frac = None
        self._last: Progress | None = None
        self._written: Progress | None = None

    def __call__(self, p: Progress) -> bool:
        self._last = p
        now, frac = time.monotonic(), p.done / p.total if p.total else 0.0
        if self._last_t is None or now - self._last_t >= self.every or frac - self._last_frac >= 0.25:
            self._write(p)
            self._last_t, self._last_frac = now, frac
        return True

    def _write(self, p: Progress) -> None:
        self._written = p
        print(f"{self.desc}: {p.done}/{p.total} tiles, {p.objects} objects", file=self.stream or sys.stderr,
              flush=True)

    def close(self) -> None:
        """The last state, unless it was just written (the object count changes after the last tile)."""
        if self._last is not None and self._last != self._written:
            self._write(self._last)


def interactive() -> bool:
    """Whether a live bar can be drawn: stderr is a terminal, or a Jupyter kernel runs (a widget)."""
    return "ipykernel" in sys.modules or bool(getattr(sys.stderr, "isatty", lambda: False)())


def write(message: str) -> None:
    """A line on stderr that does not tear a live progress bar (tqdm clears and redraws it)."""
    if "tqdm" in sys.modules:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def as_callback(progress: bool | ProgressCallback | None) -> tuple[ProgressCallback | None, Callable[[], None]]:
    """``(callback, close)`` for what the API's ``progress`` argument accepts: ``None`` or
    ``False`` (no progress), ``True`` (a tqdm bar), or a callback (used as it is)."""
    if progress is True:
        bar = TqdmProgress() if interactive() else LogProgress()
        return bar, bar.close
    if progress is None or progress is False:
        return None, lambda: None
    if not callable(progress):
        from .errors import InputError

        raise InputError(f"progress must be True, False or a callable, got {type(progress).__name__}")
    return progress, lambda: None
