"""Rules of the bundled model's training recipe (scripts/train_buildings.py): the step-count
schedule that makes every leave-one-area-out fold as long as the shipped model's run, and the
nested threshold choice that never lets a held-out area's labels pick its own threshold."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

_SPEC = importlib.util.spec_from_file_location(
    "train_buildings", Path(__file__).resolve().parents[2] / "scripts" / "train_buildings.py")
tb = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(tb)

CONFS = ["0.05", "0.1", "0.2", "0.3"]


def test_steps_reproduce_the_shipped_run_and_stretch_smaller_folds():
    # the shipped model: 217 tiles, batch 8 -> 28 batches an epoch, 40 epochs, last 5 without mosaic
    assert tb.schedule(217, 8, 40, 5, steps=1120) == {"epochs": 40, "close_mosaic": 5, "steps": 1120}
    # the Zanzibar fold trains on 92 tiles: 12 batches an epoch -> 94 epochs, mosaic off for the last 12
    assert tb.schedule(92, 8, 40, 5, steps=1120) == {"epochs": 94, "close_mosaic": 12, "steps": 1128}
    # without --steps the epoch count is taken as given
    assert tb.schedule(92, 8, 40, 5) == {"epochs": 40, "close_mosaic": 5, "steps": 480}
    assert tb.schedule(92, 8, 40, 0, steps=1120)["close_mosaic"] == 0


@given(st.integers(1, 5000), st.integers(1, 64), st.integers(1, 300), st.integers(1, 20000))
def test_steps_are_never_fewer_than_asked_nor_an_epoch_more(tiles, batch, epochs, steps):
    s = tb.schedule(tiles, batch, epochs, min(5, epochs), steps=steps)
    per_epoch = math.ceil(tiles / batch)
    assert steps <= s["steps"] < steps + per_epoch
    assert 1 <= s["close_mosaic"] <= s["epochs"]


def _loao(sweeps: dict[str, list[float]]) -> dict:
    return {a: {"sweep_f1": dict(zip(CONFS, f1s, strict=True))} for a, f1s in sweeps.items()}


def test_nested_threshold_comes_from_the_other_folds():
    loao = _loao({"a": [0.1, 0.5, 0.3, 0.2],    # a alone would pick 0.1
                  "b": [0.2, 0.3, 0.6, 0.1],    # b and c agree on 0.2
                  "c": [0.1, 0.2, 0.5, 0.4]})
    n = tb.nested_conf(loao)
    assert n["per_area"]["a"] == {"conf": 0.2, "f1": 0.3}   # chosen by b and c, scored on a
    assert n["per_area"]["b"]["conf"] == 0.2                 # a + c: 0.1 -> 0.35, 0.2 -> 0.4
    assert n["mean_f1"] == round((0.3 + 0.6 + 0.5) / 3, 4)
    assert n["worst_f1"] == 0.3
    assert n["conf_all_folds"] == 0.2
    assert tb.nested_conf(_loao({"a": [0.1, 0.5, 0.3, 0.2]})) == {}


@given(st.dictionaries(st.sampled_from("abcde"), st.lists(st.floats(0, 1), min_size=4, max_size=4),
                       min_size=2, max_size=5),
       st.lists(st.floats(0, 1), min_size=4, max_size=4))
def test_an_areas_own_labels_never_choose_its_threshold(sweeps, other):
    area = sorted(sweeps)[0]
    before = tb.nested_conf(_loao(sweeps))["per_area"][area]["conf"]
    after = tb.nested_conf(_loao({**sweeps, area: other}))["per_area"][area]["conf"]
    assert before == after


def test_an_area_trained_on_is_never_also_scored_as_unseen(tmp_path):
    nepal = tmp_path / "extdata" / "hot_aoi3_kathmandu"
    areas = ["aoi2_kampala_uganda", "aoi4_catanduanes_philippines"]
    assert tb.trained_and_held_out([*areas, nepal], "aoi1_zanzibar_tanzania", []) == []
    # the same folder by another path (relative, trailing parts) is the same area
    assert tb.trained_and_held_out([*areas, nepal], None, [nepal / ".." / nepal.name]) == ["hot_aoi3_kathmandu"]
    assert tb.trained_and_held_out(areas, "aoi2_kampala_uganda", []) == ["aoi2_kampala_uganda"]
    assert tb.trained_and_held_out([nepal / "x" / ".."], None, [nepal]) == ["hot_aoi3_kathmandu"]


# --- a time-budgeted run (--minutes, as on the GPU) keeps the recipe's share of mosaic-free epochs ---

@given(st.floats(0.01, 0.99), st.lists(st.integers(2, 2000), min_size=1, max_size=30))
def test_mosaic_free_epochs_follow_a_re_estimated_run_length(share, estimates):
    from types import SimpleNamespace

    from fastsam_geo.engine.train import _keep_close_mosaic_share

    callback = _keep_close_mosaic_share(share)
    trainer = SimpleNamespace(args=SimpleNamespace(close_mosaic=5), epochs=0)
    for epochs in estimates:  # ultralytics re-estimates trainer.epochs after every epoch
        trainer.epochs = epochs
        callback(trainer)
        assert trainer.args.close_mosaic == max(1, round(share * epochs))
        assert 1 <= trainer.args.close_mosaic <= epochs


def test_a_share_outside_0_1_is_refused_before_anything_loads(tmp_path):
    import pytest

    from fastsam_geo.engine import train_yolo
    from fastsam_geo.errors import ModelError

    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ModelError, match="close_mosaic_share"):
            train_yolo(tmp_path / "missing.yaml", tmp_path, close_mosaic_share=bad)


def test_the_training_stage_needs_no_geospatial_stack():
    """The GPU machine that trains (--train-only) has torch and ultralytics but no rasterio,
    GDAL, shapely, pyproj or geopandas: the script and the training stage's imports must load
    without them (a top-level import of any of them would break every GPU run)."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "train_buildings.py"
    code = f"""
import sys, importlib.abc, importlib.util
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {{'rasterio', 'geopandas', 'shapely', 'pyproj', 'pyogrio', 'polars'}}:
            raise ImportError('no ' + name + ' on the GPU machine')
sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location('tb', {str(script)!r})
tb = importlib.util.module_from_spec(spec); spec.loader.exec_module(tb)
from fastsam_geo.engine import export_checkpoint, train_yolo
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
