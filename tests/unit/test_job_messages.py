"""A lost Dask worker and an interrupted job are clean one-line answers that say how to resume."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fastsam_geo.errors import TileError
from fastsam_geo.tiling import plan_tiles


class KilledWorker(Exception):  # named as distributed's: the check is by name (no dask import)
    pass


class _Future:
    def __init__(self, exc):
        self.exc = exc

    def result(self):
        raise self.exc


def test_a_task_whose_workers_died_is_a_tile_error_naming_its_tiles():
    from fastsam_geo.distributed import _result

    grid = plan_tiles(1000, 1000, 256, 32)
    batch = [grid.at(1, 0), grid.at(1, 1)]
    with pytest.raises(TileError, match=r"tiles \(1, 0\) to \(1, 1\).*resumes"):
        _result(_Future(KilledWorker("task lost 3 times")), batch)
    with pytest.raises(ZeroDivisionError):  # anything else is not disguised
        _result(_Future(ZeroDivisionError()), batch)


def test_an_interrupted_job_says_rerunning_resumes(tmp_path, monkeypatch):
    from fastsam_geo import session
    from fastsam_geo.cli import main
    from fastsam_geo.synthetic import make_scene, write_scene

    tif = write_scene(make_scene(200, 200, seed=1), tmp_path / "s.tif")

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(session.SegmentedRaster, "segment_to_file", interrupted)
    args = ["segment", str(tif), "-o", str(tmp_path / "o.gpkg"), "--model", "fastsam_geo.synthetic:ColourSegmenter"]
    r = CliRunner().invoke(main, [*args, "--job-dir", str(tmp_path / "job")])
    assert r.exit_code == 130 and "rerun the same command to resume" in r.output, r.output
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 130 and "resume" not in r.output, r.output
