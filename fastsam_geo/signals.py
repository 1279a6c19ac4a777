"""SIGTERM handled like Ctrl-C for the duration of a run, by whoever owns the process.

``kill``, ``timeout`` and container stops send SIGTERM, whose default action ends the process
at once: no ``finally`` runs, so a half-written temporary file stays behind. Inside
:func:`terminate_as_interrupt`, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``)
in the main thread instead, so Ctrl-C's clean-up path runs: temporary files removed, the
previous output kept. The command exits with :data:`EXIT_CODE` (143 = 128 + SIGTERM, what a
shell reports for a process SIGTERM ended, so callers still see why it stopped).

Nothing here runs on ``import fastsam_geo``: inside QGIS, a notebook or a server the library is
a guest and must not take the host's signals. The CLI enters it around a run; outside the main
thread (a QgsTask) it does nothing, since Python runs signal handlers only there.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

EXIT_CODE = 128 + 15
"""Exit status of a run ended by SIGTERM (Ctrl-C's stays 130)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived during a run. A ``KeyboardInterrupt``, so every clean-up written for
    Ctrl-C (``except KeyboardInterrupt``, ``except BaseException``, ``finally``) handles it."""


@contextlib.contextmanager
def terminate_as_interrupt(enabled: bool = True) -> Iterator[bool]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread; the previous
    handler is restored on exit. Yields whether it is active: not when ``enabled`` is False,
    outside the main thread, or where SIGTERM cannot be handled.

    Only the first SIGTERM raises: a second one while the clean-up runs is ignored, so it
    cannot cut the removal of temporary files short (SIGKILL still ends the process; the next
    run removes what it left, see :func:`fastsam_geo.io.remove_leftovers`).
    """
    previous = _install(_handler()) if enabled else None
    try:
        yield previous is not None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _handler():
    fired = []

    def on_sigterm(signum, frame):
        if not fired:
            fired.append(signum)
            raise Terminated(f"terminated by signal {signum}")

    return on_sigterm


def _install(handler):
    """Install ``handler`` for SIGTERM; return the previous one, or None where it cannot be."""
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main interpreter's main thread (a sub-interpreter)
        return None
    return signal.SIG_DFL if previous is None else previous  # None: set outside Python
