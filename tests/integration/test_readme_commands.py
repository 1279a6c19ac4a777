"""Every command of the README's quick start and prompt sections runs as written on the shipped sample.

The blocks are read from README.md itself, so an edit there that breaks a command (a path, a flag,
coordinates outside the sample) fails here. Blocks whose first line is ``# needs ...`` need weights
that are never downloaded (official FastSAM, CLIP) and are skipped by name. Commands run from a
scratch folder that holds the repository's ``fastsam_geo`` (a symlink), so relative paths
resolve as in a checkout and outputs stay out of the repository; ``--cache auto`` goes to a
scratch XDG cache.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _blocks(section_from: str, section_to: str) -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    part = text[text.index(section_from):text.index(section_to)]
    return [(m[1], m[2]) for m in re.finditer(r"```(bash|python)\n(.*?)```", part, re.S)]


BLOCKS = [b for b in _blocks("## Quick start", "### The bundled model") if not b[1].startswith("# needs")]


def _commands(block: str) -> list[str]:
    joined = block.replace("\\\n", " ")
    return [ln.split("  #")[0].strip() for ln in joined.splitlines()
            if ln.strip() and not ln.lstrip().startswith(("#", "source "))]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    (d / "fastsam_geo").symlink_to(ROOT / "fastsam_geo")  # the package itself: `import fastsam_geo` from here works
    return d


def _env(workdir: Path) -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "XDG_CACHE_HOME": str(workdir / "cache"),
            "YOLO_OFFLINE": "true"}


def test_the_readme_has_runnable_blocks():
    kinds = [k for k, _ in BLOCKS]
    assert kinds.count("bash") >= 2 and kinds.count("python") >= 2, kinds
    assert any("--point" in b for _, b in BLOCKS) and any("PointPrompt" in b for _, b in BLOCKS)


@pytest.mark.parametrize("i", range(len(BLOCKS)), ids=[f"{k}{i}" for i, (k, _) in enumerate(BLOCKS)])
def test_readme_block_runs_as_written(workdir, i):
    kind, block = BLOCKS[i]
    env = _env(workdir)
    if kind == "python":
        code = block + "\nfor _n in ('gdf', 'picked', 'area'):\n    if _n in dir(): print(_n, len(globals()[_n]))\n"
        r = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        counts = dict(ln.split() for ln in r.stdout.splitlines() if re.fullmatch(r"\w+ \d+", ln))
        assert counts and all(int(v) > 0 for v in counts.values()), r.stdout  # each call found something
        if "picked" in counts:
            assert "prompt(s) selected no object" not in r.stderr, r.stderr  # the README's prompts hit buildings
        return
    for cmd in _commands(block):
        r = subprocess.run(shlex.split(cmd), cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{cmd}\n{r.stderr[-2000:]}"
        assert "Error" not in r.stderr, f"{cmd}\n{r.stderr[-2000:]}"
        if "--point" in cmd:  # the README's clicks are on buildings of the sample
            assert "selected no object" not in r.stderr, f"{cmd}\n{r.stderr[-2000:]}"
        out = re.search(r"-o (\S+)", cmd)
        if out:
            assert (workdir / out[1]).stat().st_size > 0, cmd
