"""Resumable jobs: a real ``fastsam-geo segment`` killed (SIGKILL) at random moments resumes to
the uninterrupted run's output, computing no finished tile again; changed options are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from click.testing import CliRunner

from fastsam_geo.cli import main
from fastsam_geo.jobs import finished_tiles
from fastsam_geo.synthetic import make_scene, write_scene
from fastsam_geo.tiling import plan_tiles

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from slow_segmenter import SPEC, logged, record_hashes  # noqa: E402

ARGS = ["--model", SPEC, "--tile-size", "64", "--overlap", "16", "-q"]
KILLS = 5
SEED = 20261130


@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory):
    d = tmp_path_factory.mktemp("jobs")
    scene = make_scene(320, 320, seed=4, cell=40)
    return Path(write_scene(scene, d / "scene.tif"))


def env(**extra) -> dict:
    return {**os.environ, "YOLO_OFFLINE": "true", "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
            **{k: str(v) for k, v in extra.items()}}


def cli(*args, **extra):
    return CliRunner().invoke(main, ["segment", *map(str, args)], env={k: str(v) for k, v in extra.items()},
                              catch_exceptions=False)


def geometries(path) -> list[bytes]:
    return list(gpd.read_file(path).geometry.to_wkb())


def test_sigkill_at_random_moments_resumes_to_the_same_output(scene_tif, tmp_path):
    ref = tmp_path / "ref.gpkg"
    assert cli(scene_tif, "-o", ref, *ARGS).exit_code == 0
    n_tiles = len(plan_tiles(320, 320, 64, 16))
    rng = np.random.default_rng(SEED)
    # one moment per stratum of the run: before the first record (model loading, first batch)
    # and at four random record counts spread over the first 90 % (the rest is too short a window to
    # hit reliably on a loaded machine), each plus a random fraction of a tile
    step = int(n_tiles * 0.9) // 5
    targets = [0] + [int(rng.integers(lo, lo + step)) for lo in np.arange(1, 5) * step]
    # the five runs go at once (their start-up, mostly imports, overlaps); each is killed at its moment
    runs = []
    for k in range(KILLS):
        job, out, log = tmp_path / f"job{k}", tmp_path / f"out{k}.gpkg", tmp_path / f"log{k}"
        proc = subprocess.Popen([sys.executable, "-m", "fastsam_geo.cli", "segment", str(scene_tif), "-o", str(out),
                                 "--job-dir", str(job), *ARGS], env=env(FSG_TEST_DELAY=0.04, FSG_TEST_LOG=log),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs.append((k, targets[k], job, out, proc, rng.uniform(0, 0.03)))
    deadline = time.monotonic() + 120
    waiting = list(runs)
    while waiting and time.monotonic() < deadline:
        for run in list(waiting):
            k, target, job, _, proc, jitter = run
            if proc.poll() is not None or (finished_tiles(job) if job.exists() else 0) >= target:
                time.sleep(jitter)
                assert proc.poll() is None, f"run {k} ended before its kill moment ({target} tiles)"
                proc.kill()
                waiting.remove(run)
        time.sleep(0.002)
    assert not waiting, "runs never reached their kill moments"
    killed_at = []
    for k, _target, job, out, proc, _ in runs:
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert not out.exists()
        before = finished_tiles(job) if job.exists() else 0
        killed_at.append(before)
        assert before < n_tiles
        stored = record_hashes(job, scene_tif) if job.exists() else set()

        after = tmp_path / f"after{k}"
        r = cli(scene_tif, "-o", out, "--job-dir", job, *ARGS, FSG_TEST_LOG=after)
        assert r.exit_code == 0, r.output
        recomputed = logged(after)
        assert not stored & set(recomputed), f"run {k}: finished tiles computed again after resume"
        assert len(recomputed) == len(set(recomputed)) == n_tiles - before, f"run {k} (killed at {before} tiles)"
        assert geometries(out) == geometries(ref), f"run {k} (killed at {before} tiles) differs"
    assert len(set(killed_at)) == KILLS, f"kill moments not distinct: {killed_at} tiles recorded"


def test_changed_option_or_raster_is_refused_unless_restart(scene_tif, tmp_path):
    job, out = tmp_path / "job", tmp_path / "o.gpkg"
    assert cli(scene_tif, "-o", out, "--job-dir", job, *ARGS).exit_code == 0
    r = CliRunner().invoke(main, ["segment", str(scene_tif), "-o", str(out), "--job-dir", str(job), *ARGS,
                                  "--min-area", "30"])
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and "min_area 16 (now 30)" in r.output and "--restart" in r.output
    other = Path(write_scene(make_scene(320, 320, seed=5, cell=40), tmp_path / "other.tif"))
    r = CliRunner().invoke(main, ["segment", str(other), "-o", str(out), "--job-dir", str(job), *ARGS])
    assert r.exit_code == 2 and "another raster" in r.output
    # device and batch size do not change the result: a job may resume on another machine
    assert cli(scene_tif, "-o", out, "--job-dir", job, *ARGS, "--batch-size", "2", "--device", "cpu").exit_code == 0
    log = tmp_path / "log"
    r = cli(scene_tif, "-o", out, "--job-dir", job, *ARGS, "--min-area", "30", "--restart", FSG_TEST_LOG=log)
    assert r.exit_code == 0, r.output
    assert len(logged(log)) == len(plan_tiles(320, 320, 64, 16))  # restarted: every tile computed
    for extra in ([], ["--restart"]):  # a folder of other files is never written into, nor cleared
        r = CliRunner().invoke(main, ["segment", str(scene_tif), "-o", str(out), "--job-dir", str(tmp_path), *ARGS,
                                      *extra])
        assert r.exit_code == 2 and "not a fastsam-geo job folder" in r.output
    assert (tmp_path / "log").exists() and (tmp_path / "o.gpkg").exists()


def test_without_a_cluster_nothing_imports_dask(scene_tif, tmp_path):
    code = f"""
import sys
from click.testing import CliRunner
from fastsam_geo.cli import main
import fastsam_geo
r = CliRunner().invoke(main, ["segment", {str(scene_tif)!r}, "-o", {str(tmp_path / 'o.gpkg')!r}, "--job-dir",
                              {str(tmp_path / 'job')!r}, *{ARGS!r}])
assert r.exit_code == 0, r.output
fastsam_geo.segment_raster({str(scene_tif)!r}, segmenter={SPEC!r}, tile_size=64, overlap=16)
print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'dask', 'distributed'}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_a_damaged_record_is_segmented_again_and_a_cut_temporary_removed(scene_tif, tmp_path):
    from fastsam_geo import segment_raster
    from fastsam_geo.errors import CacheWarning

    job = tmp_path / "job"
    kw = dict(segmenter=SPEC, tile_size=64, overlap=16)
    ref = segment_raster(scene_tif, job_dir=job, **kw)
    records = sorted(job.glob("*/*/t*.npz"))
    records[3].write_bytes(records[3].read_bytes()[:100])  # a disk that flipped, or a foreign file
    (records[0].parent / ".t5.abcdef.npz").write_bytes(b"cut short by a kill")
    log = tmp_path / "log"
    os.environ["FSG_TEST_LOG"] = str(log)
    try:
        with pytest.warns(CacheWarning, match="damaged or foreign"):
            got = segment_raster(scene_tif, job_dir=job, **kw)
    finally:
        del os.environ["FSG_TEST_LOG"]
    assert len(logged(log)) == 1  # only the damaged tile
    assert list(got.geometry.to_wkb()) == list(ref.geometry.to_wkb())
    assert not list(job.glob("*/*/.t*"))


def test_a_run_that_fails_before_its_first_tile_leaves_no_job_to_refuse(scene_tif, tmp_path):
    """A mistyped factory or a bbox off the raster fails in one line; the corrected command then
    runs (the job's record is written with its first tile, not before)."""
    job, out = tmp_path / "job", tmp_path / "o.gpkg"
    r = cli(scene_tif, "-o", out, "--job-dir", job, *ARGS[:-1], "-q", "--model", "slow_segmenter:factroy")
    assert r.exit_code == 2 and "factroy" in r.output and not out.exists(), r.output
    r = cli(scene_tif, "-o", out, "--job-dir", job, *ARGS, "--bbox", "0,0,1,1")
    assert r.exit_code == 2 and "outside the raster" in r.output, r.output
    r = cli(scene_tif, "-o", out, "--job-dir", job, *ARGS)
    assert r.exit_code == 0 and out.exists(), r.output
    assert (job / "job.json").exists() and finished_tiles(job)


def test_a_job_stopped_by_a_bad_tile_goes_on_with_skip_failed_tiles(scene_tif, tmp_path):
    """The failure says --skip-failed-tiles goes on without the tile: on a job, that must resume
    it (failed tiles are never recorded), not refuse it as another job."""
    job, out, log = tmp_path / "job", tmp_path / "o.gpkg", tmp_path / "log"
    flaky = ["--model", "slow_segmenter:flaky", *ARGS[2:]]
    r = cli(scene_tif, "-o", out, "--job-dir", job, *flaky, "--batch-size", "1", FSG_TEST_FAIL=1, FSG_TEST_LOG=log)
    assert r.exit_code != 0 and "--skip-failed-tiles" in r.output and not out.exists(), r.output
    done = len(logged(log))
    r = cli(scene_tif, "-o", out, "--job-dir", job, *flaky, "--batch-size", "1", "--skip-failed-tiles",
            FSG_TEST_FAIL=1, FSG_TEST_LOG=log)
    assert r.exit_code == 0 and out.exists(), r.output
    assert len(logged(log)) - done < len(plan_tiles(320, 320, 64, 16))  # recorded tiles were not redone


def test_job_folder_errors_are_one_line_naming_the_job_folder(scene_tif, tmp_path, monkeypatch):
    """A --job-dir that is a file, or a --restart that cannot remove the job's files: one line
    naming --job-dir and the folder, exit 2 (before: "cache folder", or "unexpected OSError")."""
    import fastsam_geo.jobs as jobs

    afile = tmp_path / "afile"
    afile.write_text("x")
    r = cli(scene_tif, "-o", tmp_path / "o.gpkg", "--job-dir", afile / "job", *ARGS)
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "job folder" in r.output and "--job-dir" in r.output
    job = tmp_path / "job"
    assert cli(scene_tif, "-o", tmp_path / "o.gpkg", "--job-dir", job, *ARGS).exit_code == 0

    def denied(root):
        raise PermissionError(13, "Permission denied", str(root / "job.json"))

    monkeypatch.setattr(jobs, "discard_job", denied)
    r = cli(scene_tif, "-o", tmp_path / "o.gpkg", "--job-dir", job, *ARGS, "--restart")
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "--restart cannot remove the job's files (Permission denied" in r.output
