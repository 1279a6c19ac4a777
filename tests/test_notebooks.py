"""The notebooks in notebooks/ run top to bottom, offline, in a fresh kernel, and are committed
without outputs.

Each notebook runs with nbclient in this interpreter's kernel, in a temporary working folder
(everything it writes lands there, never in the repository), with ``FASTSAM_GEO_SHARED``
passed through, and must finish within the 3 minutes the README promises. The notebooks'
own ``assert`` cells (buildings found, F1 equal to the CLI's, the cached round faster) fail
the run like any exception. The large-raster notebook also runs without the shared data
folder, where its shared-data cells must skip cleanly.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SHARED

NOTEBOOKS = ROOT / "notebooks"
BUDGET_S = 180  # per notebook, on a 2-core machine
CELL_TIMEOUT_S = 170
# figures each notebook must show (a picture, not a table); the large-raster one shows
# two more with the shared data
MIN_FIGURES = {"01_quickstart": 2, "02_prompts": 4, "03_large_rasters_and_accuracy": 3}
SHARED_MOSAIC = SHARED / "data/oam_osm/aoi1_zanzibar_tanzania/mosaic_z20_a.tif"


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernelspec for *this* interpreter (a ``python3`` kernel installed elsewhere on the
    machine could be another Python without fastsam_geo)."""
    for module in ("nbformat", "nbclient", "ipykernel"):
        pytest.importorskip(module, reason=f"{module} is needed to run the notebooks (the notebooks extra)")
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "fastsam-geo-tests"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fastsam-geo tests", "language": "python"}))
    before = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(root), before) if p)
    yield "fastsam-geo-tests"
    if before is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = before


def run_notebook(path: Path, cwd: Path, kernel: str, shared: Path) -> tuple[object, float]:
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, FASTSAM_GEO_SHARED=str(shared), YOLO_OFFLINE="true")
    env.pop("MPLBACKEND", None)  # the inline backend, as in Jupyter: figures are drawn and sent
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel,
                                     resources={"metadata": {"path": str(cwd)}})
    t0 = time.perf_counter()
    try:
        client.execute(env=env)
    finally:  # keep what ran, for a look after a failure
        nbformat.write(nb, cwd / f"executed_{path.name}")
    return nb, time.perf_counter() - t0


def outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == kind]


def figures(nb) -> int:
    return sum("image/png" in o.get("data", {}) for kind in ("display_data", "execute_result")
               for o in outputs(nb, kind))


def stdout(nb) -> str:
    return "".join(o.text for o in outputs(nb, "stream") if o.name == "stdout")


def check_clean_run(nb, name: str, seconds: float, extra_figures: int = 0) -> None:
    assert seconds < BUDGET_S, f"{name} took {seconds:.0f} s (budget {BUDGET_S} s)"
    stderr = "".join(o.text for o in outputs(nb, "stream") if o.name == "stderr")
    assert "Traceback" not in stderr and "Warning" not in stderr, f"{name} printed to stderr:\n{stderr[-2000:]}"
    assert figures(nb) >= MIN_FIGURES[name] + extra_figures, f"{name} showed {figures(nb)} figures"


def test_every_notebook_is_tested():
    assert sorted(p.stem for p in notebooks()) == sorted(MIN_FIGURES)


@pytest.mark.parametrize("name", ["01_quickstart", "02_prompts"])
def test_notebook_runs_offline_top_to_bottom(name, tmp_path, kernel_name):
    nb, seconds = run_notebook(NOTEBOOKS / f"{name}.ipynb", tmp_path, kernel_name, SHARED)
    check_clean_run(nb, name, seconds)
    assert (tmp_path / "outputs").is_dir()  # written in the working folder, not the repository
    if name == "01_quickstart":
        assert (tmp_path / "outputs" / "quickstart.png").stat().st_size > 10_000
        assert (tmp_path / "outputs" / "sample_buildings.gpkg").exists()


def test_large_rasters_notebook_with_shared_data(tmp_path, kernel_name):
    if not SHARED_MOSAIC.exists():
        pytest.skip(f"shared data not available: {SHARED_MOSAIC}")
    name = "03_large_rasters_and_accuracy"
    nb, seconds = run_notebook(NOTEBOOKS / f"{name}.ipynb", tmp_path, kernel_name, SHARED)
    check_clean_run(nb, name, seconds, extra_figures=2)
    assert f"using {SHARED_MOSAIC}" in stdout(nb)
    assert (tmp_path / "outputs" / "zanzibar_buildings.gpkg").exists()


def test_large_rasters_notebook_skips_shared_cells_without_the_folder(tmp_path, kernel_name):
    name = "03_large_rasters_and_accuracy"
    missing = tmp_path / "no-shared-here"
    nb, seconds = run_notebook(NOTEBOOKS / f"{name}.ipynb", tmp_path, kernel_name, missing)
    check_clean_run(nb, name, seconds)
    assert "skipping section 3" in stdout(nb)
    assert not (tmp_path / "outputs" / "zanzibar_buildings.gpkg").exists()


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_notebook_is_committed_stripped(path):
    """Outputs and execution counts stay out of git: the picture is made where it is run.
    (Plain JSON, so this runs even where Jupyter is not installed.)"""
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4 and nb["cells"], f"{path.name}: not a notebook"
    code = [(i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    dirty = [i for i, c in code if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; run nbstripout {path}"
    assert set(nb["metadata"]) <= {"kernelspec", "language_info"}, f"{path.name}: metadata {sorted(nb['metadata'])}"
    assert all(not c.get("metadata") for c in nb["cells"]), f"{path.name}: cell metadata (collapsed, scrolled, ...)"


def test_readme_figure_is_small_and_committed():
    png = ROOT / "docs" / "quickstart.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size < 300_000
