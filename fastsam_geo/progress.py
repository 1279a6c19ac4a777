"""Progress bars for long runs: what ``progress=True`` means in the API, the CLI and notebooks.

A progress callback receives :class:`~fastsam_geo.types.Progress` after each batch and may
return ``False`` to cancel (the QGIS task adapter uses that). ``progress=True`` draws a tqdm
bar (``tqdm.auto``: a widget in Jupyter, text on stderr in a terminal).
"""

from __future__ import annotations

import sys
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


def as_callback(progress: bool | ProgressCallback | None) -> tuple[ProgressCallback | None, Callable[[], None]]:
    """``(callback, close)`` for what the API's ``progress`` argument accepts: ``None`` or
    ``False`` (no progress), ``True`` (a tqdm bar), or a callback (used as it is)."""
    if progress is True:
        bar = TqdmProgress()
        return bar, bar.close
    if progress is None or progress is False:
        return None, lambda: None
    if not callable(progress):
        from .errors import InputError

        raise InputError(f"progress must be True, False or a callable, got {type(progress).__name__}")
    return progress, lambda: None
