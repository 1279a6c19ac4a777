"""Fan-out over a Dask LocalCluster (2 worker processes, 1 thread each, loopback, no dashboard):
the same objects as the in-process run, also when a worker is killed mid-run, and with a job."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import geopandas as gpd
import pytest

from fastsam_geo import segment_raster
from fastsam_geo.pipeline import RunStats
from fastsam_geo.synthetic import make_scene, write_scene
from fastsam_geo.tiling import plan_tiles

distributed = pytest.importorskip("distributed")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from slow_segmenter import SPEC, logged, record_hashes  # noqa: E402

KW = dict(segmenter=SPEC, tile_size=64, overlap=16)
N_TILES = len(plan_tiles(320, 320, 64, 16))


@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory):
    d = tmp_path_factory.mktemp("dask")
    return Path(write_scene(make_scene(320, 320, seed=6, cell=40), d / "scene.tif"))


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dask-log") / "log"


@pytest.fixture(scope="module")
def client(log):
    """A 2-process cluster (shared by this module's tests; the worker-killing test runs last)
    whose workers import the test segmenter and log the tiles they segment to ``log`` (its
    environment is what the workers start with)."""
    saved = dict(os.environ)
    os.environ.update(PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), str(HERE)]), FSG_TEST_DELAY="0.03",
                      FSG_TEST_LOG=str(log))
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None) as lc, distributed.Client(lc, timeout=60) as c:
            c.wait_for_workers(2, timeout=60)
            yield c
    finally:
        os.environ.clear()
        os.environ.update(saved)


def wkb(gdf) -> list[bytes]:
    return list(gdf.geometry.to_wkb())


def test_two_workers_give_the_in_process_objects(scene_tif, client, log):
    ref = segment_raster(scene_tif, **KW)
    here = len(logged(log))  # the in-process run's tiles
    stats = RunStats()
    got = segment_raster(scene_tif, client=client, stats=stats, **KW)
    assert len(ref) > 30 and wkb(got) == wkb(ref)
    assert list(got.score) == list(ref.score)
    assert stats.tiles == N_TILES and 0 < stats.extra["bytes_back"] < N_TILES * 64 * 64 / 8
    seen = client.run(lambda: os.getpid())
    assert len(seen) == 2 and len(logged(log)) - here == N_TILES  # every tile once, on the workers


def test_a_job_on_the_cluster_submits_only_missing_tiles(scene_tif, client, log, tmp_path):
    job = tmp_path / "job"
    ref = segment_raster(scene_tif, **KW)

    def stop(p):
        return p.done < N_TILES // 2  # cancel half way: the job keeps what finished

    with pytest.raises(Exception, match="cancelled"):
        segment_raster(scene_tif, client=client, job_dir=job, progress=stop, **KW)
    from fastsam_geo.jobs import finished_tiles

    before = finished_tiles(job)
    assert 0 < before < N_TILES
    stored = record_hashes(job, scene_tif)
    computed = len(logged(log))
    stats = RunStats()
    got = segment_raster(scene_tif, client=client, job_dir=job, stats=stats, **KW)
    assert wkb(got) == wkb(ref)
    assert stats.tiles_cached == before
    # tasks running when the run was cancelled may log later; no tile with a record is segmented again
    assert not stored & set(logged(log)[computed:])


def test_cli_workers_runs_a_local_cluster_for_the_run(scene_tif, tmp_path):
    from click.testing import CliRunner

    from fastsam_geo.cli import main

    args = ["segment", str(scene_tif), "--model", "fastsam_geo.synthetic:PerturbedSegmenter", "--tile-size", "64",
            "--overlap", "16", "-q"]
    assert CliRunner().invoke(main, [*args, "-o", str(tmp_path / "ref.gpkg")]).exit_code == 0
    r = CliRunner().invoke(main, [*args[:-1], "-o", str(tmp_path / "w.gpkg"), "--workers", "2", "--job-dir",
                                  str(tmp_path / "job")])
    assert r.exit_code == 0, r.output
    assert "from 49 tiles (0 cached, 0 empty)" in r.output and "on 2 Dask workers" in r.output
    ref, got = (gpd.read_file(tmp_path / f) for f in ("ref.gpkg", "w.gpkg"))
    assert len(ref) > 30 and wkb(got) == wkb(ref)
    for bad, why in [(["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
                     (["--restart"], "job_dir"), (["--workers", "0"], "0")]:
        r = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "x.gpkg"), *bad])
        assert r.exit_code == 2 and r.output.startswith("Error:") and why in r.output, r.output


def test_a_killed_worker_still_completes_the_same_output(scene_tif, client):
    ref = segment_raster(scene_tif, **KW)
    pids = list(client.run(lambda: os.getpid()).values())
    killed = []

    def progress(p):
        if not killed and p.done >= N_TILES // 4:
            os.kill(pids[0], signal.SIGKILL)  # the nanny starts a new worker; lost tasks run again
            killed.append(p.done)

    got = segment_raster(scene_tif, client=client, progress=progress, **KW)
    assert killed and killed[0] < N_TILES
    assert wkb(got) == wkb(ref)


def test_a_failure_on_local_workers_is_one_line_on_stderr(scene_tif, tmp_path):
    """A worker's task failure (its model does not load there) is the CLI's one Error line, not
    also the workers' log records ("Compute Failed ... Traceback") on stderr. A real process: the
    workers' logs go to its stderr."""
    import subprocess

    env = {**os.environ, "YOLO_OFFLINE": "true", "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), str(HERE)])}
    exe = Path(sys.executable).with_name("fastsam-geo")
    r = subprocess.run([str(exe), "segment", str(scene_tif), "-o", str(tmp_path / "o.gpkg"), "--model",
                        "slow_segmenter:unloadable", "--tile-size", "64", "--overlap", "16", "--workers", "1", "-q"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("Error:") and "no such model" in r.stderr, r.stderr
    assert not (tmp_path / "o.gpkg").exists()
