"""fastsam-geo runs inside other processes (QGIS): process-wide settings are the owner's.

Loading CLIP quiets open_clip's own log records only (the host's logs, from any logger or
thread, pass; the root logger is never silenced), and glibc's allocator is tuned only when asked.
"""

import ctypes
import logging
import threading

import pytest

from fastsam_geo.engine import _torch
from fastsam_geo.engine.clip import quiet_open_clip

PKG = "/opt/site-packages/open_clip"


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def emit(self, record):
        self.seen.append(record.getMessage())


def log_from(path: str, message: str) -> None:
    """``logging.error(message)`` from code whose source file is ``path``, as open_clip calls it."""
    exec(compile(f"import logging\nlogging.error({message!r})", path, "exec"), {})


def test_only_open_clips_own_records_are_dropped_while_it_loads():
    root = logging.getLogger()
    level, seen = root.level, Collect()
    root.addHandler(seen)
    try:
        with quiet_open_clip(PKG):
            assert root.level == level
            log_from(f"{PKG}/factory.py", "open_clip: failed to download weights")
            log_from("/home/user/plugin.py", "host, root logger")
            other = threading.Thread(target=lambda: logging.getLogger("qgis.worker").error("another thread"))
            other.start()
            other.join()
            log_from(f"{PKG}_extra/module.py", "a package whose name only starts alike")
        log_from(f"{PKG}/factory.py", "open_clip after the load")
    finally:
        root.removeHandler(seen)
    assert seen.seen == ["host, root logger", "another thread", "a package whose name only starts alike",
                         "open_clip after the load"]


@pytest.mark.parametrize("env,owner,expected", [(None, False, False), ("1", False, True), (None, True, True),
                                                ("0", True, False)])
def test_the_allocator_is_tuned_only_when_asked(monkeypatch, env, owner, expected):
    calls = []

    class FakeLibc:
        def __init__(self, name):
            pass

        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", FakeLibc)
    monkeypatch.setattr(_torch, "_MALLOC_SET", False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    if env is None:
        monkeypatch.delenv("FASTSAM_GEO_MALLOC", raising=False)
    else:
        monkeypatch.setenv("FASTSAM_GEO_MALLOC", env)
    assert _torch.release_freed_memory(process_owner=owner) is expected
    assert calls == ([(-3, 128 * 1024)] if expected else [])
