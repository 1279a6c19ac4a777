"""Model files are code: which checkpoint a name means, what is verified, what may unpickle.

Each malicious checkpoint here is a real, loadable model whose pickle also opens (creates) a
marker file: when the marker exists, the pickle ran. Every test runs in its own folder with
HOME and XDG_CACHE_HOME pointing into it, so the real user cache is never touched.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest
import torch
from click.testing import CliRunner

from fastsam_geo import load_segmenter, segment_raster
from fastsam_geo.cli import main
from fastsam_geo.engine import FastSAMSegmenter, make_untrained_checkpoint, train_yolo, weights
from fastsam_geo.engine.train import resolve_base
from fastsam_geo.errors import ModelError, UntrustedCheckpointWarning, UntrustedWeightsError, WeightsNotFoundError
from fastsam_geo.models import check_segmenter
from fastsam_geo.synthetic import make_scene, write_scene


class Opens:
    """Unpickles as ``open(path, "w")``: a pickle that runs code, and leaves a trace when it does."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class Shell:
    """Unpickles as ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory) -> Path:
    """A real YOLOv8n-seg checkpoint (random weights, 128 px)."""
    return make_untrained_checkpoint(tmp_path_factory.mktemp("trust") / "small.pt", arch="n", imgsz=128)


@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory) -> Path:
    return write_scene(make_scene(256, 256, seed=3, cell=64), tmp_path_factory.mktemp("trust") / "scene.tif")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Own current folder, home and cache; no weights folder or trust set by the caller."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTSAM_GEO_WEIGHTS", raising=False)
    monkeypatch.delenv("FASTSAM_GEO_TRUST_WEIGHTS", raising=False)


def malicious(path: Path, marker: Path, like: Path) -> Path:
    """A copy of checkpoint ``like`` that also creates ``marker`` when fully unpickled."""
    ckpt = torch.load(like, weights_only=False)
    ckpt["payload"] = Opens(marker)
    torch.save(ckpt, path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pin(monkeypatch, **digests: str) -> None:
    """Pin other digests for the official names (files in tests cannot be the real 23/138 MB ones)."""
    table = {name.replace("_", "-") + ".pt": frozenset({d}) if d else frozenset() for name, d in digests.items()}
    monkeypatch.setattr(weights, "OFFICIAL_SHA256", MappingProxyType(table))


def user_cache(tmp_path: Path) -> Path:
    d = tmp_path / "cache" / "fastsam-geo" / "weights"
    d.mkdir(parents=True, exist_ok=True)
    return d


# -- a default run never picks up what lies in the current folder ---------------------------------

def plant(tmp_path: Path, small_ckpt: Path) -> Path:
    """``buildings-nano.pt`` and ``FastSAM-s.pt`` in the current folder that create ``marker``."""
    marker = tmp_path / "PLANTED_PICKLE_RAN"
    for name in ("buildings-nano.pt", "FastSAM-s.pt"):
        malicious(tmp_path / name, marker, small_ckpt)
    return marker


def test_planted_checkpoints_in_the_current_folder_never_run_by_default(tmp_path, small_ckpt, scene_tif):
    marker = plant(tmp_path, small_ckpt)
    assert weights.resolve_weights("buildings-nano.pt") == weights.BUNDLED_PATH
    assert weights.resolve_weights("buildings-nano") == weights.BUNDLED_PATH
    assert load_segmenter(None, device="cpu").path == weights.BUNDLED_PATH
    gdf = segment_raster(scene_tif, tile_size=256, overlap=32, imgsz=256, device="cpu")
    assert gdf.crs is not None
    with pytest.raises(WeightsNotFoundError, match=r"FastSAM-s.pt not found .* never used by name: pass \./FastSAM"):
        segment_raster(scene_tif, segmenter="FastSAM-s.pt", device="cpu")
    assert not marker.exists()


def test_planted_checkpoints_never_run_in_a_cli_subprocess(tmp_path, small_ckpt, scene_tif):
    marker = plant(tmp_path, small_ckpt)
    exe = Path(sys.executable).with_name("fastsam-geo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTSAM_GEO_")}
    env.update(YOLO_OFFLINE="true", HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = subprocess.run([str(exe), "segment", str(scene_tif), "-o", "out.gpkg", "--tile-size", "256", "--overlap", "32",
                        "--imgsz", "256", "--device", "cpu", "-q"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.gpkg").exists() and "pickle" not in r.stderr  # the bundled model: no notice
    r = subprocess.run([str(exe), "segment", str(scene_tif), "-o", "x.gpkg", "--model", "FastSAM-s.pt", "-q"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "never used by name" in r.stderr, r.stderr
    assert not marker.exists()


# -- official names: the weights folders only, in order, and pinned digests ---------------------------

def test_weights_folders_are_searched_in_order_and_the_current_folder_never(tmp_path, monkeypatch):
    env_dir, cache_dir = tmp_path / "env", user_cache(tmp_path)
    env_dir.mkdir()
    for i, d in enumerate((env_dir, cache_dir, tmp_path)):
        (d / "FastSAM-s.pt").write_bytes(b"weights %d" % i)
    pin(monkeypatch, FastSAM_s=sha256(env_dir / "FastSAM-s.pt"))
    monkeypatch.setenv("FASTSAM_GEO_WEIGHTS", str(env_dir))
    assert weights.locate_weights("FastSAM-s.pt") == weights.Weights(env_dir / "FastSAM-s.pt", "official",
                                                                     sha256(env_dir / "FastSAM-s.pt"))
    pin(monkeypatch, FastSAM_s=sha256(cache_dir / "FastSAM-s.pt"))
    (env_dir / "FastSAM-s.pt").unlink()
    assert weights.resolve_weights("FastSAM-s.pt") == cache_dir / "FastSAM-s.pt"
    monkeypatch.delenv("FASTSAM_GEO_WEIGHTS")
    assert weights.resolve_weights("FastSAM-s.pt") == cache_dir / "FastSAM-s.pt"
    pin(monkeypatch, FastSAM_s=sha256(tmp_path / "FastSAM-s.pt"))  # even a file that would verify
    (cache_dir / "FastSAM-s.pt").unlink()
    with pytest.raises(WeightsNotFoundError, match=r"not found .* put it in " + str(cache_dir)):
        weights.resolve_weights("FastSAM-s.pt")
    assert weights.weights_dirs() == [cache_dir]


def test_an_official_name_whose_digest_differs_is_refused_before_unpickling(tmp_path, monkeypatch, small_ckpt,
                                                                           scene_tif):
    marker = tmp_path / "RAN"
    monkeypatch.setenv("FASTSAM_GEO_WEIGHTS", str(tmp_path / "w"))
    (tmp_path / "w").mkdir()
    fake = malicious(tmp_path / "w" / "FastSAM-x.pt", marker, small_ckpt)
    [pinned] = weights.OFFICIAL_SHA256["FastSAM-x.pt"]
    message = rf"{fake}: SHA-256 {sha256(fake)} is not the published FastSAM-x.pt \({pinned}\); refused"
    with pytest.raises(UntrustedWeightsError, match=message):
        check_segmenter("FastSAM-x.pt")  # before any tile is read
    with pytest.raises(ModelError, match=message):
        FastSAMSegmenter("FastSAM-x.pt", device="cpu")
    r = CliRunner().invoke(main, ["segment", str(scene_tif), "-o", str(tmp_path / "o.gpkg"), "-m", "FastSAM-x.pt"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and sha256(fake) in r.stderr and pinned in r.stderr
    assert not marker.exists() and not (tmp_path / "o.gpkg").exists()


def test_an_official_name_without_a_pinned_digest_is_refused(tmp_path, monkeypatch):
    (user_cache(tmp_path) / "FastSAM-s.pt").write_bytes(b"anything")
    pin(monkeypatch, FastSAM_s="")
    with pytest.raises(UntrustedWeightsError, match=r"no SHA-256 is pinned for FastSAM-s.pt .* pass its path instead"):
        weights.resolve_weights("FastSAM-s.pt")


def test_the_bundled_pin_matches_the_shipped_model():
    """Retraining buildings-nano without updating BUNDLED_SHA256 must fail here, not for users."""
    assert hashlib.sha256(weights.BUNDLED_PATH.read_bytes()).hexdigest() == weights.BUNDLED_SHA256


def test_a_bundled_model_that_is_not_the_pinned_file_is_refused(tmp_path, monkeypatch):
    altered = tmp_path / "buildings-nano.pt"
    data = bytearray(weights.BUNDLED_PATH.read_bytes())
    data[-1] ^= 1
    altered.write_bytes(bytes(data))
    monkeypatch.setattr(weights, "BUNDLED_PATH", altered)
    with pytest.raises(UntrustedWeightsError, match=r"not the bundled model's pinned .* reinstall fastsam-geo"):
        check_segmenter(None)


def test_digests_are_computed_once_per_unchanged_file(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * (3 << 20))
    calls = []
    real = hashlib.sha256

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(weights.hashlib, "sha256", counting)
    first = weights.sha256_of(f)
    assert weights.sha256_of(f) == first == real(f.read_bytes()).hexdigest() and len(calls) == 1
    f.write_bytes(b"y" * (3 << 20))  # same size, new contents
    assert weights.sha256_of(f) == real(f.read_bytes()).hexdigest() and len(calls) == 2


# -- a file the user names: a notice, and restricted unpickling unless trusted --------------------------

def test_an_explicit_path_loads_after_a_one_line_notice(tmp_path, small_ckpt, scene_tif):
    with pytest.warns(UntrustedCheckpointWarning) as seen:
        seg = FastSAMSegmenter(small_ckpt, device="cpu")
    assert seg.imgsz == 128
    [w] = [w for w in seen if w.category is UntrustedCheckpointWarning]
    text = str(w.message)
    assert text.startswith(f"{small_ckpt}: ") and "\n" not in text
    assert "pickles that can run code" in text and "restricted" in text and "only files you trust" in text
    (tmp_path / "mine.pt").write_bytes(small_ckpt.read_bytes())  # a bare name in the current folder is named too
    assert weights.locate_weights("mine.pt") == weights.Weights(Path("mine.pt"), "explicit")
    r = CliRunner().invoke(main, ["segment", str(scene_tif), "-o", str(tmp_path / "o.gpkg"), "-m", "mine.pt",
                                  "--device", "cpu", "--tile-size", "256", "--overlap", "32", "-q"])
    assert r.exit_code == 0, r.output
    assert [line for line in r.stderr.splitlines() if "pickle" in line] == [
        "Warning: mine.pt: model checkpoints are Python pickles that can run code, so it is unpickled restricted "
        "to ultralytics' model classes; load only files you trust"]


@pytest.mark.parametrize("payload", ["open", "os.system"])
def test_restricted_unpickling_refuses_a_malicious_checkpoint(tmp_path, monkeypatch, small_ckpt, payload):
    marker = tmp_path / "RAN"
    evil = tmp_path / "evil.pt"
    ckpt = torch.load(small_ckpt, weights_only=False)
    ckpt["payload"] = Opens(marker) if payload == "open" else Shell(f"touch {marker}")
    torch.save(ckpt, evil)
    needs = "io.open" if payload == "open" else "posix.system"
    with pytest.warns(UntrustedCheckpointWarning), pytest.raises(
            UntrustedWeightsError, match=rf"refused to unpickle: it needs {needs}, .* FASTSAM_GEO_TRUST_WEIGHTS=1"):
        FastSAMSegmenter(evil, device="cpu")
    assert not marker.exists()
    # the payload is real: trusted, the file unpickles fully and its code runs
    monkeypatch.setenv("FASTSAM_GEO_TRUST_WEIGHTS", "1")
    with pytest.warns(UntrustedCheckpointWarning, match="trusted .* unpickled fully"):
        FastSAMSegmenter(evil, device="cpu")
    assert marker.exists()


def test_a_corrupt_file_is_not_mistaken_for_a_refusal(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.warns(UntrustedCheckpointWarning), pytest.raises(ModelError, match="cannot load model weights") as e:
        FastSAMSegmenter(bad, device="cpu")
    assert not isinstance(e.value, UntrustedWeightsError)


# -- train --base: the same rules ------------------------------------------------------------------

def test_train_base_resolves_like_inference(tmp_path, monkeypatch, small_ckpt):
    from ultralytics.utils import ROOT

    marker = tmp_path / "RAN"
    (tmp_path / "yolov8n-seg.yaml").write_text(f"nc: 1\nactivation: open({str(marker)!r}, 'w')\n")
    arch, safe = resolve_base("yolov8n-seg.yaml")  # ultralytics' own, not the planted one
    assert Path(arch).is_relative_to(ROOT) and Path(arch).name == "yolov8n-seg.yaml" and not safe
    assert resolve_base("buildings-nano.pt") == (str(weights.BUNDLED_PATH), False)
    (user_cache(tmp_path) / "FastSAM-s.pt").write_bytes(small_ckpt.read_bytes())
    pin(monkeypatch, FastSAM_s=sha256(small_ckpt))
    assert resolve_base("FastSAM-s.pt") == (str(user_cache(tmp_path) / "FastSAM-s.pt"), False)
    with pytest.warns(UntrustedCheckpointWarning):
        assert resolve_base(str(small_ckpt)) == (str(small_ckpt), True)
    with pytest.warns(UntrustedCheckpointWarning, match="model yamls can run code"):
        assert resolve_base("./yolov8n-seg.yaml") == (str(tmp_path / "yolov8n-seg.yaml"), True)
    with pytest.raises(ModelError, match="not one of ultralytics' model yamls"):
        resolve_base("nosuch-seg.yaml")
    from ultralytics import YOLO
    YOLO(arch, task="segment")  # builds the packaged architecture
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["checkpoint", "yaml"])
def test_train_refuses_a_malicious_base_before_training(tmp_path, small_ckpt, kind):
    marker = tmp_path / "RAN"
    if kind == "checkpoint":
        base, error = malicious(tmp_path / "base.pt", marker, small_ckpt), "refused to unpickle: it needs io.open"
    else:
        base, error = tmp_path / "arch.yaml", "unsupported activation"
        base.write_text((Path(resolve_base("yolov8n-seg.yaml")[0]).parent / "yolov8-seg.yaml").read_text()
                        + f"\nactivation: open({str(marker)!r}, 'w')\n")
    with pytest.warns(UntrustedCheckpointWarning), pytest.raises(ModelError, match=error):
        train_yolo(tmp_path / "data.yaml", tmp_path / "work", base=str(base), epochs=1, device="cpu")
    assert not marker.exists()
    from ultralytics.nn import tasks
    assert tasks.SAFE_LOAD is False  # ultralytics' process-wide flag is given back


# -- module:factory specs run code by design; failing ones are one clean error ---------------------------

FACTORIES = '''
import sys

def none():
    return None

def fails():
    raise RuntimeError("no GPU here")

def exits():
    sys.exit(3)
'''


@pytest.mark.parametrize("spec, says", [
    ("sys:exit", r"'sys:exit' failed instead of returning a segmenter \(it called sys.exit\(\)\)"),
    ("tfac:exits", r"'tfac:exits' failed .*it called sys.exit\(3\)"),
    ("tfac:none", "'tfac:none' returned NoneType, not a callable segmenter"),
    ("tfac:fails", r"'tfac:fails' failed .*RuntimeError: no GPU here"),
    ("tfac:nosuch", "cannot import segmenter factory 'tfac:nosuch'"),
    ("exitsonimport:f", r"'exitsonimport:f': importing exitsonimport failed \(it called sys.exit\(1\)\)"),
])
def test_a_factory_that_gives_no_segmenter_is_one_clean_error(tmp_path, monkeypatch, scene_tif, spec, says):
    (tmp_path / "tfac.py").write_text(FACTORIES)
    (tmp_path / "exitsonimport.py").write_text("import sys\nsys.exit(1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match=says):
        load_segmenter(spec)
    with pytest.raises(ModelError, match=says):
        segment_raster(scene_tif, segmenter=spec)
    out = tmp_path / "out.gpkg"
    r = CliRunner().invoke(main, ["segment", str(scene_tif), "-o", str(out), "--model", spec, "-q"])
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: ") and spec in r.stderr
    assert not out.exists()
