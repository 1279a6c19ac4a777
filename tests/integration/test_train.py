"""`train` end to end on a tiny synthetic dataset: dataset, ultralytics training, model, card."""

import itertools
import json
import os
import re
import time

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner

from fastsam_geo import segment_raster
from fastsam_geo.cli import main
from fastsam_geo.dataset import build_dataset, ring_with_holes
from fastsam_geo.errors import InputError
from fastsam_geo.synthetic import make_scene, write_scene
from fastsam_geo.tiling import plan_tiles


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    scene = make_scene(512, 384, seed=2, cell=64)
    tif = write_scene(scene, d / "scene.tif")
    labels = gpd.GeoDataFrame(geometry=scene.truth_map(), crs=scene.crs).to_crs(4326)  # another CRS
    labels.to_file(d / "labels.geojson")
    return d, tif, d / "labels.geojson", scene


def test_ring_with_holes_keeps_the_courtyard():
    import cv2
    poly = shapely.box(10, 10, 90, 90).difference(shapely.box(40, 40, 60, 60))
    ring = ring_with_holes(poly)
    img = np.zeros((100, 100), np.uint8)
    cv2.fillPoly(img, [np.round(ring).astype(np.int32)], 1)
    assert img[50, 50] == 0 and img[20, 20] == 1
    assert abs(int(img.sum()) - poly.area) < 0.05 * poly.area


def test_dataset_is_spatially_split_and_reprojected(tiny, tmp_path):
    _, tif, labels, _ = tiny
    s = build_dataset([tif], labels, tmp_path / "ds", tile_size=128, overlap=32, val_fraction=0.25)
    assert s.train_tiles > 0 and s.val_tiles > 0 and s.train_polygons > 0
    with rasterio.open(tif) as ds:
        grid = plan_tiles(ds.width, ds.height, 128, 32, ds.transform)
        inv = ~ds.transform

    def windows(split):
        """The pixel windows of the tiles written to ``split``, from their ``_r{row}_c{col}`` names."""
        rc = [re.search(r"_r(\d+)_c(\d+)$", p.stem).groups() for p in (tmp_path / "ds/images" / split).iterdir()]
        return {(int(r), int(c)): grid.at(int(r), int(c)).box for r, c in rc}

    train, val = windows("train"), windows("val")
    assert len(train) == s.train_tiles and len(val) == s.val_tiles
    # validation is the band of the last round(5 * 0.25) = 1 tile columns, at the right
    assert grid.n_cols == 5 and {c for _, c in val} == {4}
    # the dataset's own record of its validation area, back in pixels, is that band
    [(_, (x0, y0, x1, y1))] = s.val_regions
    (px0, py0), (px1, py1) = inv @ (x0, y1), inv @ (x1, y0)
    band = shapely.box(*(round(v) for v in (px0, py0, px1, py1)))
    assert band.bounds == (grid.at(0, 4).x, 0, 512, 384)

    def shares_pixels(window):
        return shapely.box(*window).intersection(band).area > 0

    # the rule: a training tile sharing any pixel with the validation band is dropped (it
    # would leak validation pixels into training); tiles that share none are kept
    assert not any(shares_pixels(w) for w in train.values()), sorted(train)
    overlapping = {t.col for t in grid if shares_pixels(t.box)}
    assert overlapping == {3, 4} and {c for _, c in train} == {0, 1, 2}
    line = next((tmp_path / "ds/labels/train").glob("*.txt")).read_text().splitlines()[0].split()
    assert line[0] == "0" and all(0.0 <= float(v) <= 1.0 for v in line[1:])


def test_labels_that_miss_the_raster_or_are_empty(tiny, tmp_path):
    _, tif, _, _ = tiny
    far = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)], crs=4326)
    with pytest.raises(InputError, match="no label polygon overlaps"):
        build_dataset([tif], far, tmp_path / "ds")
    with pytest.raises(InputError, match="no features"):
        build_dataset([tif], far.iloc[:0], tmp_path / "ds")
    points = gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs=4326)
    with pytest.raises(InputError, match="no polygons"):
        build_dataset([tif], points, tmp_path / "ds")


def test_train_one_epoch_end_to_end_then_the_model_segments(tiny):
    d, tif, labels, _ = tiny
    out = d / "model.pt"
    t0 = time.perf_counter()
    r = CliRunner().invoke(main, ["train", str(tif), "--labels", str(labels), "-o", str(out), "--epochs", "1",
                                  "--imgsz", "128", "--tile-size", "128", "--overlap", "32", "--batch", "4",
                                  "--val-fraction", "0.25", "--attribution", "synthetic test scene",
                                  "--coarsen", "1"])
    assert r.exit_code == 0, r.output
    assert time.perf_counter() - t0 < 180
    card = json.loads(out.with_suffix(".json").read_text())
    # --coarsen 1: every training tile also trained as coarser imagery, and the card says so
    assert card["coarsen"] == 1.0 and 2 * card["dataset"]["coarsened_tiles"] == card["dataset"]["train_tiles"] > 0
    assert card["epochs"] == 1 and card["imgsz"] == 128 and card["attribution"] == ["synthetic test scene"]
    # where its 8-bit training imagery lies: segment stretches non-uint8 imagery there
    from fastsam_geo.raster import measure_levels, model_levels

    assert model_levels(card) == measure_levels([tif]) and 0 < card["input_levels"]["values"][0] < 128
    assert {"tp", "fp", "fn", "f1"} <= set(card["validation"])
    # one segmentation scored at every threshold: raising it only removes predictions, and the
    # headline figures are the model's own threshold's
    v = card["validation"]
    by = [v["by_conf"][k] for k in sorted(v["by_conf"], key=float)]
    assert len(by) >= 10 and all(a["tp"] + a["fp"] >= b["tp"] + b["fp"] for a, b in itertools.pairwise(by))
    assert all(a["tp"] + a["fn"] == by[0]["tp"] + by[0]["fn"] for a in by)  # the reference does not change
    assert v["conf"] == card["conf"] and v["f1"] == v["by_conf"][f"{card['conf']:g}"]["f1"]
    # the threshold: the validation's best when it has enough buildings, written into the weights
    if v["tp"] + v["fn"] >= 20:
        assert card["conf"] == v["best_conf"]
    assert card["conf_source"] == "default" or card["conf_source"].startswith("validation")
    assert card["dataset"]["val_tiles"] > 0 and card["labels"]["polygons"] > 0
    assert out.stat().st_size < 10e6
    assert not list(d.glob(".model*"))  # work folder cleaned up
    from fastsam_geo.engine import FastSAMSegmenter
    seg = FastSAMSegmenter(out, conf=0.0, max_det=5)
    assert seg.imgsz == 128 and seg.meta["tile_size"] == 128 and seg.meta["conf"] == card["conf"]
    gdf = segment_raster(tif, segmenter=seg, tile_size=128, overlap=32)
    assert len(gdf) > 0 and gdf.crs.to_epsg() == 32633


def test_training_is_offline_and_leaves_the_process_as_it_was(tiny, tmp_path, monkeypatch):
    """`train` is offline: every connection attempt is recorded and refused, and none may happen.

    ultralytics looks for a plotting font (``check_font``, a HEAD request to its assets) while
    checking the dataset, even with ``plots=False``; ``train`` must not let it. Its trainer also
    resets torch's process-wide thread count, which ``train`` must give back."""
    import socket

    import torch
    from ultralytics.utils import checks, events

    from fastsam_geo.training import train

    # check_font caches its answer per process: forget one an earlier test left behind
    getattr(checks.check_font, "__wrapped__", checks.check_font).cache_clear()
    check_font = checks.check_font
    # as in a host (QGIS) that imported ultralytics before YOLO_OFFLINE was set: it believes it
    # is online (update check, auto-install) and sends usage analytics (pytest alone turns them off)
    monkeypatch.setattr(checks, "ONLINE", True)
    monkeypatch.setattr(events.events, "enabled", True)
    attempts = []

    def refuse(what):
        def no_network(*args, **kwargs):
            attempts.append((what, args))
            raise OSError(f"network access during training: {what}{args}")
        return no_network

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse(f"socket.{name}"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    _, tif, labels, _ = tiny
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # the host's own choice, unlike ultralytics' cpu_count - 1
    try:
        # workers=0: the data loader runs in this process, where the guards are
        res = train([tif], labels, tmp_path / "m.pt", epochs=1, imgsz=128, tile_size=128, overlap=32, batch=4,
                    val_fraction=0.25, device="cpu", hyp={"workers": 0})
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    assert res.model.exists()
    assert attempts == []
    assert checks.check_font is check_font  # ultralytics is given back as it was
    assert after == threads + 1


def test_dataset_tiles_are_cut_at_the_requested_gsd(tiny, tmp_path):
    """``gsd``: tile_size pixels *at that GSD* per tile, so a 0.3 m raster gives half-size tiles
    for a 0.15 m model (enlarged to imgsz by the trainer); ``None`` keeps native tiles."""
    import cv2
    _, tif, labels, _ = tiny
    s = build_dataset([tif], labels, tmp_path / "g", tile_size=128, overlap=16, val_fraction=0, gsd=0.15)
    assert s.raster_gsd[0] == pytest.approx(0.3, rel=1e-3) and s.tile_sizes == [64]
    shapes = {cv2.imread(str(p)).shape[:2] for p in (tmp_path / "g/images/train").iterdir()}
    assert shapes == {(64, 64)}
    n = build_dataset([tif], labels, tmp_path / "n", tile_size=128, overlap=16, val_fraction=0)
    assert n.tile_sizes == [128]


def test_fine_tuning_the_bundled_model_keeps_its_scale_and_time_budget(tiny, tmp_path):
    """`train --base buildings-nano`: starts from the bundled weights, cuts tiles at the base's
    card GSD (0.147 m: 128 px there are 63 px of this 0.3 m raster), stops at the time budget,
    and writes a card that `segment --gsd auto` reads (the base's GSD, inference size and
    attribution carried over)."""
    from fastsam_geo.engine import FastSAMSegmenter
    from fastsam_geo.gsd import model_gsd, plan
    from fastsam_geo.models import model_card
    from fastsam_geo.training import train

    _, tif, labels, _ = tiny
    base = model_card("buildings-nano")
    res = train([tif], labels, tmp_path / "ft.pt", base="buildings-nano", epochs=50, minutes=0.02, imgsz=128,
                overlap=16, batch=4, val_fraction=0.25, device="cpu", workdir=tmp_path / "work",
                hyp={"workers": 0})
    card = res.info
    rows = (tmp_path / "work/yolo/train/results.csv").read_text().strip().splitlines()[1:]
    assert 1 <= len(rows) < 50  # the 1.2-second budget, not the 50 epochs
    assert card["epochs"] == len(rows)  # what it trained, not what was planned
    assert card["data"][0]["native_tile"] == round(128 * base["gsd"] / 0.3) == 63
    assert card["gsd"] == pytest.approx(base["gsd"], rel=0.02)
    assert card["imgsz"] == card["tile_size"] == base["imgsz"] and card["conf"] == base["conf"]
    assert card["base_model"]["name"] == "buildings-nano"
    assert any("OpenStreetMap" in a for a in card["attribution"])
    assert {"tp", "fp", "fn", "f1"} <= set(card["validation"])
    g = model_gsd(model_card(str(res.model)))
    assert g.gsd == card["gsd"] and plan(card["tile_size"], 0, 0.3, g.gsd).tile_size == round(1024 * g.gsd / 0.3)
    seg = FastSAMSegmenter(res.model, trust=True)
    assert seg.imgsz == base["imgsz"]
    # it started from the bundled weights: after a few steps its weights and batch-norm
    # statistics are still theirs (measured: 0.005 and 0.08 relative change; a network trained
    # from scratch for the same budget: 0.22 and 0.96)
    import torch

    from fastsam_geo.engine.weights import resolve_weights

    def tensors(path):
        sd = torch.load(path, map_location="cpu", weights_only=False)["model"].state_dict()
        return {k: v.float() for k, v in sd.items() if v.dtype.is_floating_point}

    def change(a, b, suffix):
        keys = [k for k in a if k.endswith(suffix) and k in b and a[k].shape == b[k].shape]
        assert len(keys) > 50
        return float(sum(((a[k] - b[k]) ** 2).sum() for k in keys) ** 0.5 / sum((a[k] ** 2).sum() for k in keys) ** 0.5)

    before, after = tensors(resolve_weights("buildings-nano")), tensors(res.model)
    assert change(before, after, "weight") < 0.05 and change(before, after, "running_var") < 0.5


@pytest.mark.parametrize("base, minutes, hyp, expect", [
    ("yolov8n-seg.yaml", 5, {}, {"close_mosaic_share": 0.125}),  # from scratch: the bundled recipe's share
    ("buildings-nano", 5, {}, {"close_mosaic_share": 0.5}),  # fine-tuning: half its epochs on tiles as they are
    ("buildings-nano", 5, {"close_mosaic": 3}, {"close_mosaic": 3}),  # the user's count wins
    ("yolov8n-seg.yaml", 5, {"close_mosaic_share": 0.3}, {"close_mosaic_share": 0.3}),
    ("buildings-nano", None, {}, {}),  # an epoch count: ultralytics' own default
])
def test_a_time_budgeted_run_keeps_its_mosaic_free_share(tiny, tmp_path, monkeypatch, base, minutes, hyp, expect):
    """`train --minutes` learns its epoch count only as it runs; a fixed close_mosaic=10 would
    turn mosaic off for 10 of a 5-minute fine-tune's ~15 epochs. It asks train_yolo to keep a
    share instead (what train_yolo does with it: test_training_recipe)."""
    from fastsam_geo import engine, training

    seen = {}

    class Stop(Exception):
        pass

    def fake_train_yolo(data_yaml, workdir, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(engine, "train_yolo", fake_train_yolo)
    _, tif, labels, _ = tiny
    with pytest.raises(Stop):
        training.train([tif], labels, tmp_path / "m.pt", base=base, epochs=7, minutes=minutes, imgsz=128, overlap=16,
                       batch=4, val_fraction=0.25, device="cpu", hyp=hyp, workdir=tmp_path / "w")
    got = {k: seen[k] for k in ("close_mosaic", "close_mosaic_share") if k in seen}
    assert got == expect
    assert training._close_mosaic_record(dict(seen)) == (
        {"share": expect["close_mosaic_share"]} if "close_mosaic_share" in expect
        else {"epochs": expect.get("close_mosaic", 10)})


def test_the_readme_fine_tuning_commands_run_as_a_mapper_types_them(tmp_path):
    """The README's three fine-tuning commands (train --base buildings-nano, segment --model,
    evaluate), as real subprocesses, on a synthetic town: its file names swapped for the
    scene's, ``--minutes 10`` for a few seconds."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Fine-tune the bundled model on your town"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S)[1]
    commands = [ln for ln in block.replace("\\\n", " ").splitlines() if ln.strip() and not ln.startswith("#")]
    assert [c.split()[1] for c in commands] == ["train", "segment", "evaluate"]
    scene = make_scene(512, 384, seed=5, cell=64)
    write_scene(scene, tmp_path / "mytown_part1.tif")
    write_scene(scene, tmp_path / "mytown_part2.tif")
    gpd.GeoDataFrame(geometry=scene.truth_map(), crs=scene.crs).to_file(tmp_path / "mytown_buildings.gpkg")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "YOLO_OFFLINE": "true", "PATH": path}
    for cmd in commands:
        cmd = cmd.replace("--minutes 10", "--minutes 0.02 --imgsz 128 --batch 4")
        r = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (cmd, r.stderr[-2000:])
        assert "Traceback" not in r.stderr
    card = json.loads((tmp_path / "mytown.json").read_text())
    assert card["base_model"]["name"] == "buildings-nano" and card["minutes_budget"] == 0.02
    assert "F1" in r.stdout  # evaluate's line


def test_validation_scores_every_threshold_from_one_segmentation(tiny):
    """``validate_model``: objects scored 0.05-0.50 by colour (the same in every tile); at each
    threshold exactly the objects scored at or above it are found, all from one segmentation."""
    import dataclasses

    from fastsam_geo.synthetic import ColourSegmenter, colour_of
    from fastsam_geo.training import CONF_GRID, validate_model

    _, tif, _, scene = tiny
    grade = {colour_of(i + 1): 0.05 + 0.05 * (i % 10) for i in range(len(scene.footprints))}

    class Scored(ColourSegmenter):
        calls_made = 0

        def __call__(self, images):
            Scored.calls_made += 1
            out = []
            for img, inst in zip(images, super().__call__(images)):
                scores = [grade[tuple(int(v) for v in img[b[1]:b[3], b[0]:b[2]][c][0])]
                          for b, c in zip(inst.boxes, inst.crops)]
                out.append(dataclasses.replace(inst, scores=np.asarray(scores, np.float32)))
            return out

    with rasterio.open(tif) as ds:
        region = (str(tif), tuple(ds.bounds))
    truth = gpd.GeoDataFrame(geometry=scene.truth_map(), crs=scene.crs)
    v = validate_model(Scored(), [region], truth)
    inside = [i for i, g in enumerate(truth.geometry) if g.centroid.within(shapely.box(*region[1]))]
    for c in CONF_GRID:
        expect = sum(1 for i in inside if 0.05 + 0.05 * (i % 10) >= c - 1e-6)
        got = v["by_conf"][f"{c:g}"]
        assert got["tp"] == expect and got["fp"] == 0 and got["fn"] == len(inside) - expect, c
    assert v["best_conf"] == 0.05 and v["f1"] == 1.0
    # a flat curve (every object scored 0.3: F1 1.0 up to 0.3, then 0): ties go to the threshold
    # nearest the model's own (so a fine-tune whose validation says nothing keeps it), else the highest
    grade.update({k: 0.3 for k in grade})
    assert validate_model(Scored(), [region], truth, near=0.25)["best_conf"] == 0.25
    assert validate_model(Scored(), [region], truth, near=0.12)["best_conf"] == 0.1
    assert validate_model(Scored(), [region], truth)["best_conf"] == 0.3


def test_validation_segments_with_the_settings_segment_uses(tiny, monkeypatch):
    """The threshold a model takes is chosen on its validation area; it must see the pixels
    `segment --model` will feed it (--gsd auto enlarges coarse tiles bicubically, not bilinearly)."""
    from fastsam_geo import engine, training
    from fastsam_geo.options import Options

    seen = {}

    class Stop(Exception):
        pass

    def recorder(weights, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(engine, "FastSAMSegmenter", recorder)
    _, tif, labels, _ = tiny
    with pytest.raises(Stop):
        training.validate_model("some.pt", [(tif, (0, 0, 1, 1))], gpd.read_file(labels), confs=[0.1, 0.3])
    expect = Options().engine()
    assert expect["upsample"] == "cubic"
    assert {k: seen.get(k) for k in expect if k != "conf"} == {k: v for k, v in expect.items() if k != "conf"}
    assert seen["conf"] == 0.1  # the lowest asked: higher ones are filtered from one segmentation


def test_a_fine_tune_worse_than_its_base_on_the_validation_area_says_so(tiny, tmp_path, monkeypatch):
    """Fine-tuning on labels offset from the imagery (measured: Nairobi, 2-5 m) can leave a model
    worse than its base; the run compares both on its validation area, records the base's score
    and warns in one line."""
    from fastsam_geo import training
    from fastsam_geo.errors import FineTuneWarning

    real = training.validate_model

    def rigged(model, regions, labels, confs=training.CONF_GRID, near=None):
        out = real(model, regions, labels, confs=confs, near=near)
        if isinstance(model, str | os.PathLike):  # the fine-tuned model (a path): pretend it lost
            out["by_conf"] = {k: dict(v, f1=0.0) for k, v in out["by_conf"].items()}
        else:  # the base (a loaded segmenter)
            out["f1"] = 0.9
        return out

    monkeypatch.setattr(training, "validate_model", rigged)
    _, tif, labels, _ = tiny
    with pytest.warns(FineTuneWarning, match=r"scores F1 0\.00 .* the base 0\.90: check that the labels line up"):
        res = training.train([tif], labels, tmp_path / "ft.pt", base="buildings-nano", epochs=1, imgsz=128,
                             overlap=16, batch=4, val_fraction=0.25, device="cpu", hyp={"workers": 0})
    assert res.info["validation_base"]["f1"] == 0.9 and res.info["validation"]["f1"] == 0.0


def test_coarsened_copies_are_extra_training_tiles_and_leave_the_rest_as_it_was(tiny, tmp_path):
    """``coarsen``: every drawn training tile gets one blurred copy with the same labels,
    validation tiles never do, and the tiles a ``coarsen=0`` dataset holds are written
    byte for byte as before (the draws use their own stream, so the shipped recipe's
    dataset does not move when the option is added)."""
    _, tif, labels, _ = tiny
    with rasterio.open(tif) as ds:  # buildings in the left half only: empty tiles draw keep_empty
        gdf = gpd.read_file(labels).to_crs(ds.crs)
        labels = gdf[gdf.centroid.x < (ds.bounds.left + ds.bounds.right) / 2]
    kw = dict(tile_size=128, overlap=32, val_fraction=0.25, keep_empty=0.5, seed=3)
    plain = build_dataset([tif], labels, tmp_path / "plain", **kw)
    coarse = build_dataset([tif], labels, tmp_path / "coarse", coarsen=1.0, **kw)

    def files(root, split, kind="images"):
        return {p.name: p.read_bytes() for p in (root / kind / split).iterdir()}

    copy = re.compile(r"_x(\d\.\d\d)\.(png|txt)$")
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            before, after = files(tmp_path / "plain", split, kind), files(tmp_path / "coarse", split, kind)
            assert {k: v for k, v in after.items() if not copy.search(k)} == before, (split, kind)
    assert not any(copy.search(k) for k in files(tmp_path / "coarse", "val"))
    train_imgs = files(tmp_path / "coarse", "train")
    copies = {k: float(copy.search(k).group(1)) for k in train_imgs if copy.search(k)}
    assert len(copies) == plain.train_tiles == coarse.coarsened_tiles > 0 and plain.empty_tiles > 0
    assert coarse.train_tiles == 2 * plain.train_tiles and coarse.val_tiles == plain.val_tiles
    assert all(1.5 <= f <= 4.0 for f in copies.values()) and len(set(copies.values())) > 1
    for name in copies:
        original = copy.sub(".png", name)
        assert original in train_imgs
        labels_dir = tmp_path / "coarse/labels/train"
        assert (labels_dir / copy.sub(".txt", name)).read_text() == \
            (labels_dir / original.replace(".png", ".txt")).read_text()
    half = build_dataset([tif], labels, tmp_path / "half", coarsen=0.5, **kw)
    assert 0 < half.coarsened_tiles < plain.train_tiles
    with pytest.raises(InputError, match="probability"):
        build_dataset([tif], labels, tmp_path / "bad", coarsen=1.5, **kw)
    r = CliRunner().invoke(main, ["train", str(tif), "--labels", str(tiny[2]), "-o", str(tmp_path / "m.pt"),
                                  "--coarsen", "-0.1"])
    assert r.exit_code != 0 and r.output.strip().splitlines() == ["Error: coarsen must be a probability in [0, 1], "
                                                                  "got -0.1"], r.output
    assert not (tmp_path / "m.pt").exists() and not list(tmp_path.glob(".m-train-*"))
    with pytest.raises(InputError, match="factors"):
        build_dataset([tif], labels, tmp_path / "bad", coarsen=0.5, coarsen_factors=(0.5, 2.0), **kw)


def test_a_coarsened_tile_keeps_what_coarser_pixels_hold_and_loses_finer_detail():
    """``coarsened(img, f)`` is imagery ``f`` times coarser, enlarged back: a pattern on a grid
    of f-pixel cells survives, a one-pixel checkerboard (detail no coarser sensor resolves)
    averages to flat grey; shape and dtype are the tile's."""
    from fastsam_geo.dataset import coarsened

    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    blocky = np.repeat(np.repeat(cells, 4, axis=0), 4, axis=1)  # 64 x 64, 4-px cells
    out = coarsened(blocky, 4.0)
    assert out.shape == blocky.shape and out.dtype == np.uint8
    # cell centres are what the coarse pixel recorded (edges ring from the bicubic enlargement)
    centres = out[1::4, 1::4].astype(int) + out[2::4, 2::4].astype(int)
    assert np.abs(centres / 2 - cells.astype(int)).mean() < 25
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, 2)
    flat = coarsened(checker, 2.0)
    assert np.abs(flat.astype(int) - 127.5).max() <= 2
    assert np.array_equal(coarsened(checker, 1.0000001)[8:-8, 8:-8] > 127, checker[8:-8, 8:-8] > 127)


def test_a_fine_tune_without_a_validation_area_says_it_was_not_checked(tiny, tmp_path):
    """The comparison with the base is a fine-tune's safety net; where no validation tiles can be
    cut, the run must say the check did not happen rather than pass silently."""
    from fastsam_geo import training
    from fastsam_geo.errors import FineTuneWarning

    _, tif, labels, _ = tiny
    with pytest.warns(FineTuneWarning, match="no validation area .* not compared with its base"):
        res = training.train([tif], labels, tmp_path / "ft.pt", base="buildings-nano", epochs=1, imgsz=128,
                             overlap=16, batch=4, val_fraction=0.0, device="cpu", hyp={"workers": 0})
    assert "no raster three or more tiles wide" in res.info["validation"]["note"]
