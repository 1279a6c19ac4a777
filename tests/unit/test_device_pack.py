"""scripts/device_train.py: runs packed for a GPU machine come back as the very same datasets."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

_SPEC = importlib.util.spec_from_file_location(
    "device_train", Path(__file__).resolve().parents[2] / "scripts" / "device_train.py")
dt = importlib.util.module_from_spec(_SPEC)
sys.modules["device_train"] = dt  # unpack's worker processes look its function up by module name
_SPEC.loader.exec_module(dt)


def _run(root: Path, name: str, tiles: dict[str, np.ndarray]) -> Path:
    import cv2

    run = root / name
    for split in ("train", "val"):
        (run / "dataset" / "images" / split).mkdir(parents=True)
        (run / "dataset" / "labels" / split).mkdir(parents=True)
    for tile, img in tiles.items():
        cv2.imwrite(str(run / "dataset" / "images" / "train" / f"{tile}.png"), img)
        (run / "dataset" / "labels" / "train" / f"{tile}.txt").write_text(f"0 0.1 0.1 0.5 0.1 0.5 {len(tile)/99:.6f}\n")
    (run / "dataset" / "data.yaml").write_text(f"path: {run}/dataset\ntrain: images/train\nval: images/train\n")
    (run / "dataset" / "summary.json").write_text("{}")
    (run / "report.json").write_text(json.dumps({"args": {"holdout": name}}))
    return run


def test_pack_stores_each_tile_once_and_unpacks_the_same_pixels(tmp_path):
    import cv2

    rng = np.random.default_rng(7)
    texture = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)    # noise: the worst case for a codec
    smooth = np.tile(np.arange(64, dtype=np.uint8)[:, None, None] * 3, (1, 64, 3))
    shared = {"000_a_r0_c0": texture, "000_a_r0_c1": smooth}
    runs = [_run(tmp_path / "src", "fold1", {**shared, "001_b_r0_c0": texture[::-1].copy()}),
            _run(tmp_path / "src", "fold2", shared)]
    stats = dt.pack(runs, tmp_path / "packed")
    assert stats["tiles"] == 5 and stats["distinct"] == 3      # a tile two runs share travels once
    made = dt.unpack(tmp_path / "packed", tmp_path / "work")
    assert [m.name for m in made] == ["fold1", "fold2"]
    for run in runs:
        back = tmp_path / "work" / run.name / "dataset"
        pngs = sorted((run / "dataset" / "images").rglob("*.png"))
        assert sorted(p.relative_to(back) for p in (back / "images").rglob("*.png")) == \
            [p.relative_to(run / "dataset") for p in pngs]
        for png in pngs:
            rel = png.relative_to(run / "dataset")
            assert np.array_equal(cv2.imread(str(back / rel)), cv2.imread(str(png)))
            label = rel.with_suffix(".txt").as_posix().replace("images/", "labels/", 1)
            assert (back / label).read_text() == (run / "dataset" / label).read_text()
        assert (tmp_path / "work" / run.name / "report.json").read_text() == (run / "report.json").read_text()
