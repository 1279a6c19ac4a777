"""Progress: a live bar on a terminal, a few log lines elsewhere, warnings above the bar, and a
prompt run that ends on the prompt objects it found."""

from __future__ import annotations

import io
import re
import sys

import numpy as np
import pytest

from fastsam_geo import progress as prog
from fastsam_geo.types import Progress


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_a_non_terminal_gets_a_few_lines_not_every_update(monkeypatch):
    err = _Stream(tty=False)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    cb, close = prog.as_callback(True)
    assert isinstance(cb, prog.LogProgress)
    for done in range(1, 201):
        cb(Progress(done, 200, done // 2))
    close()
    lines = err.getvalue().splitlines()
    assert 3 <= len(lines) <= 6, lines  # ~every 25 %, plus the end; not 200 bar redraws
    assert lines[-1] == "segmenting: 200/200 tiles, 100 objects"
    assert "\r" not in err.getvalue()


def test_a_terminal_gets_a_live_bar(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=True))
    cb, close = prog.as_callback(True)
    assert isinstance(cb, prog.TqdmProgress)
    close()


def test_a_warning_is_written_above_the_bar_not_through_it(monkeypatch):
    err = _Stream(tty=True)
    monkeypatch.setattr(sys, "stderr", err)
    bar = prog.TqdmProgress()
    bar(Progress(3, 10, 5))
    prog.write("Warning: tile 4 was skipped")
    bar(Progress(4, 10, 6))
    bar.close()
    pieces = re.split(r"[\r\n]", err.getvalue())
    assert "Warning: tile 4 was skipped" in [p.strip() for p in pieces], pieces  # a line of its own


@pytest.fixture
def scene(tmp_path):
    from fastsam_geo.synthetic import make_scene, write_scene

    sc = make_scene(400, 300, seed=7, cell=80)
    return sc, write_scene(sc, tmp_path / "s.tif")


def test_a_prompt_run_ends_on_the_prompt_objects_found(scene):
    from fastsam_geo.prompts import PointPrompt
    from fastsam_geo.session import SegmentedRaster
    from fastsam_geo.synthetic import ColourSegmenter

    sc, tif = scene
    truth = sc.truth_map()
    a, b = truth[0].representative_point(), truth[1].representative_point()
    empty = np.array(sc.transform @ (2, 2))  # a corner pixel with no building
    reports = []
    sr = SegmentedRaster(tif, segmenter=ColourSegmenter(), tile_size=256, overlap=32)
    with pytest.warns(Warning, match="1 of 3 prompt"):
        gdf = sr.prompt([PointPrompt(a.x, a.y), PointPrompt(b.x, b.y), PointPrompt(*empty)],
                        progress=reports.append)
    assert int(gdf.found.sum()) == 2
    assert reports and reports[-1].objects == 2, reports[-1:]
