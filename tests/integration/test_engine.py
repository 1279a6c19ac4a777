"""The real loading and inference path, on a FastSAM-s-architecture model with random weights."""

import os

import numpy as np
import pytest
import torch

from fastsam_geo.engine import FastSAMSegmenter, make_untrained_checkpoint, resolve_weights
from fastsam_geo.errors import ModelError, WeightsNotFoundError
from fastsam_geo.types import Instances


@pytest.fixture(scope="module")
def seg(untrained_fastsam_s):
    return FastSAMSegmenter(untrained_fastsam_s, device="cpu", conf=0.3, iou=0.7, max_det=40)


def test_loads_and_returns_native_resolution_instances(seg, rng):
    assert seg.imgsz == 256 and seg.device == "cpu"
    imgs = [rng.integers(0, 255, (256, 256, 3), np.uint8), rng.integers(0, 255, (300, 180, 3), np.uint8)]
    out = seg(imgs)
    assert len(out) == 2 and all(isinstance(o, Instances) for o in out)
    assert out[1].shape == (300, 180)
    for inst in out:
        assert 0 < len(inst) <= 40
        h, w = inst.shape
        for (x0, y0, x1, y1), crop in zip(inst.boxes, inst.crops):
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert crop.shape == (y1 - y0, x1 - x0) and crop.dtype == bool
        assert (np.diff(inst.scores) <= 1e-6).all()  # sorted by score
        assert (inst.scores > 0.3).all()


def test_masks_agree_with_ultralytics_own_pipeline(untrained_fastsam_s, rng):
    """Our lean post-processing reproduces ultralytics' retina masks (same detections, same pixels)."""
    from ultralytics import YOLO

    img = rng.integers(0, 255, (512, 512, 3), np.uint8)  # resized 2x down to imgsz 256
    ours = FastSAMSegmenter(untrained_fastsam_s, device="cpu", conf=0.3, iou=0.7, max_det=20)([img])[0]
    ref = YOLO(str(untrained_fastsam_s), task="segment").predict(
        img[..., ::-1].copy(), imgsz=256, conf=0.3, iou=0.7, max_det=20, retina_masks=True, verbose=False)[0]
    ref_masks = ref.masks.data.cpu().numpy().astype(bool)
    ref_boxes = ref.boxes.xyxy.cpu().numpy()
    assert len(ours) == len(ref_masks) > 0
    dense = ours.dense().masks
    ious = []
    for k in range(len(ours)):
        # same detection order (by score); box within a pixel of ultralytics'
        assert np.abs(ours.boxes[k] - ref_boxes[k]).max() <= 1.5
        inter = (dense[k] & ref_masks[k]).sum()
        union = (dense[k] | ref_masks[k]).sum()
        ious.append(inter / union if union else 1.0)
    assert np.mean(ious) > 0.97 and min(ious) > 0.9, ious


def test_missing_weights_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTSAM_GEO_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match=r"FastSAM-s.pt not found .* put it in " + str(tmp_path)):
        resolve_weights("FastSAM-s.pt")
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        resolve_weights(tmp_path / "sub" / "model.pt")


def test_weights_found_by_name_in_the_weights_folder(tmp_path, monkeypatch, untrained_fastsam_s):
    """An official name resolves in $FASTSAM_GEO_WEIGHTS when the file's digest is pinned (here
    the test's own random-weights file is pinned in place of the real FastSAM-s digest)."""
    import hashlib
    from types import MappingProxyType

    from fastsam_geo.engine import weights
    (tmp_path / "FastSAM-s.pt").write_bytes(untrained_fastsam_s.read_bytes())
    monkeypatch.setenv("FASTSAM_GEO_WEIGHTS", str(tmp_path))
    digest = hashlib.sha256(untrained_fastsam_s.read_bytes()).hexdigest()
    monkeypatch.setattr(weights, "OFFICIAL_SHA256",
                        MappingProxyType({**weights.OFFICIAL_SHA256, "FastSAM-s.pt": frozenset({digest})}))
    assert resolve_weights("FastSAM-s.pt") == tmp_path / "FastSAM-s.pt"


def test_corrupt_and_wrong_kind_of_weights(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot load model weights"):
        FastSAMSegmenter(bad, device="cpu")
    from ultralytics.nn.tasks import DetectionModel
    det = tmp_path / "det.pt"
    torch.save({"model": DetectionModel("yolov8n.yaml", nc=1, verbose=False), "train_args": {}}, det)
    with pytest.raises(ModelError, match="not a segmentation model"):
        FastSAMSegmenter(det, device="cpu")


def test_unavailable_device_is_a_clear_error(untrained_fastsam_s):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ModelError, match="CUDA is not available"):
        FastSAMSegmenter(untrained_fastsam_s, device="cuda")


def test_checkpoint_metadata_sets_inference_defaults(tmp_path):
    p = make_untrained_checkpoint(tmp_path / "m.pt", arch="n", imgsz=320, conf=0.2, iou=0.55)
    s = FastSAMSegmenter(p, device="cpu")
    assert (s.imgsz, s.conf, s.iou) == (320, 0.2, 0.55)
    assert FastSAMSegmenter(p, device="cpu", conf=0.5).conf == 0.5


def test_pipeline_runs_on_the_real_engine(tmp_path, untrained_fastsam_s):
    from fastsam_geo import segment_raster
    from fastsam_geo.synthetic import make_scene, write_scene

    tif = write_scene(make_scene(400, 300, seed=1), tmp_path / "s.tif")
    seg = FastSAMSegmenter(untrained_fastsam_s, device="cpu", conf=0.3, max_det=10)
    gdf = segment_raster(tif, segmenter=seg, tile_size=256, overlap=32)
    assert len(gdf) > 0 and gdf.crs.to_epsg() == 32633
    minx, _, maxx, _ = gdf.total_bounds
    assert 500000 <= minx and maxx <= 500000 + 400 * 0.3 + 1e-6


@pytest.fixture
def host_threads():
    """torch's thread count set as a host might: unlike any default (cores, cpu_count)."""
    before = torch.get_num_threads()
    torch.set_num_threads((os.cpu_count() or 1) + 1)
    yield torch.get_num_threads()
    torch.set_num_threads(before)


@pytest.mark.parametrize("extra", [0, 1])
def test_threads_apply_during_calls_only(untrained_fastsam_s, rng, host_threads, extra):
    """torch's thread count is process-wide (in QGIS, QGIS's): ``threads=`` holds only while
    the segmenter runs, and without it the process's own count is used and left alone."""
    host = host_threads
    seg = FastSAMSegmenter(untrained_fastsam_s, device="cpu", max_det=5, threads=host + extra if extra else None)
    assert torch.get_num_threads() == host
    during, network = [], seg.model
    seg.model = lambda x: (during.append(torch.get_num_threads()), network(x))[1]
    img = rng.integers(0, 255, (256, 256, 3), np.uint8)
    seg([img])
    seg.decode(seg.infer(seg.prepare([img])))  # the pipeline's staged calls
    assert during == [host + extra] * 2 and torch.get_num_threads() == host


def test_overlapping_thread_scopes_give_the_host_its_count_back(host_threads):
    """The pipeline runs the network and decoding on two threads, so scopes interleave: the
    first one out must not restore while the other still runs, nor the last one restore a
    count the first had set."""
    from fastsam_geo.engine import torch_threads

    network, decode = torch_threads(host_threads + 1), torch_threads(host_threads + 1)
    network.__enter__()
    decode.__enter__()
    network.__exit__(None, None, None)
    assert torch.get_num_threads() == host_threads + 1
    decode.__exit__(None, None, None)
    assert torch.get_num_threads() == host_threads


def _frame(inst: Instances) -> np.ndarray:
    """The instances pasted into full-tile masks ``(N, H, W)``, without the product's helpers."""
    out = np.zeros((len(inst), *inst.shape), bool)
    for k, ((x0, y0, x1, y1), crop) in enumerate(zip(inst.boxes.tolist(), inst.crops)):
        out[k, y0:y1, x0:x1] = crop
    return out


@pytest.mark.parametrize("axis", [0, 1])
def test_flip_mirrors_boxes_and_masks_back(axis):
    from fastsam_geo.engine.fastsam import _flip

    h, w = 10, 20  # not square, boxes and crops not symmetric: an identity or transposed flip fails
    crop_a = np.zeros((3, 5), bool)
    crop_a[0, :2] = crop_a[2, 4] = True
    crop_b = np.tril(np.ones((4, 4), bool))
    inst = Instances(np.array([[2, 1, 7, 4], [15, 6, 19, 10]], np.int32), np.array([0.9, 0.5], np.float32),
                     (crop_a, crop_b), (h, w))
    out = _flip(inst, axis)
    if axis == 1:  # left-right: x0' = W - x1, x1' = W - x0
        assert out.boxes.tolist() == [[13, 1, 18, 4], [1, 6, 5, 10]]
    else:  # up-down: y0' = H - y1, y1' = H - y0
        assert out.boxes.tolist() == [[2, 6, 7, 9], [15, 0, 19, 4]]
    assert out.shape == (h, w) and out.scores.tolist() == inst.scores.tolist()
    assert (_frame(out) == np.flip(_frame(inst), axis + 1)).all()  # every pixel mirrored
    twice = _flip(out, axis)
    assert (twice.boxes == inst.boxes).all() and all((a == b).all() for a, b in zip(twice.crops, inst.crops))


def test_tta_maps_flipped_views_back(untrained_fastsam_s, rng):
    from fastsam_geo.engine.fastsam import _flip
    img = rng.integers(0, 255, (256, 200, 3), np.uint8)
    plain = FastSAMSegmenter(untrained_fastsam_s, device="cpu", conf=0.3, max_det=30)
    tta = FastSAMSegmenter(untrained_fastsam_s, device="cpu", conf=0.3, max_det=30, tta=True)
    a, b = plain([img])[0], tta([img])[0]
    assert b.shape == a.shape and len(b) >= len(a) * 0.5
    # the left-right view's detections, flipped back, are the plain detections' mirror images
    flipped = plain([img[:, ::-1].copy()])[0]
    back = _flip(flipped, 1)
    assert len(back) == len(flipped) > 0
    assert (_frame(back) == _frame(flipped)[:, :, ::-1]).all()


@pytest.mark.parametrize("scale,px,py", [(1.0, 0.0, 0.0), (0.5, 0.0, 64.0), (0.37, 12.0, 0.0)])
def test_cpu_mask_sampling_matches_the_exact_bilinear_weights(scale, px, py):
    """The OpenCV path used on CPU and the torch path used on GPU build the same masks."""
    from fastsam_geo.engine.fastsam import _box_mask_cv2, _interp_weights

    g = np.random.default_rng(3)
    nm, ph, pw, stride = 8, 64, 64, 4.0
    proto = g.normal(size=(nm, ph, pw)).astype(np.float32)
    native = int(ph * stride / scale)
    agree, total = 0, 0
    for _ in range(30):
        x0, y0 = (int(v) for v in g.integers(0, native - 20, 2))
        x1, y1 = (int(min(native, v + g.integers(5, native // 2))) for v in (x0, y0))
        coef = g.normal(size=nm).astype(np.float32)
        ours = _box_mask_cv2(coef, proto.transpose(1, 2, 0), (x0, y0, x1, y1), scale, px, py, stride)
        ry, ys = _interp_weights(y0, y1, scale, py, stride, ph, "cpu")
        rx, xs = _interp_weights(x0, x1, scale, px, stride, pw, "cpu")
        t = torch.from_numpy(proto)[:, ys[0]:ys[1], xs[0]:xs[1]]
        logits = ry @ (torch.from_numpy(coef) @ t.reshape(nm, -1)).view(t.shape[1:]) @ rx.T
        exact = logits.numpy()
        assert ours.shape == exact.shape == (y1 - y0, x1 - x0)
        differ = ours != (exact > 0)
        # only pixels whose logit is within OpenCV's interpolation rounding of zero may differ
        assert np.abs(exact[differ]).max(initial=0) < 0.05 * np.abs(exact).max()
        agree += (~differ).sum()
        total += differ.size
    assert agree / total > 0.995


@pytest.mark.parametrize("iou", [0.45, 0.7, 0.9])
def test_cpu_nms_keeps_what_torchvision_keeps(iou):
    import torchvision

    from fastsam_geo.engine.fastsam import _nms

    g = np.random.default_rng(int(iou * 100))
    xy = g.uniform(0, 1024, (3000, 2))
    boxes = torch.from_numpy(np.column_stack([xy, xy + g.uniform(4, 300, (3000, 2))]).astype(np.float32))
    scores = torch.from_numpy(g.random(3000).astype(np.float32))
    expected = torchvision.ops.nms(boxes, scores, iou)
    assert torch.equal(_nms(boxes, scores, iou), expected)
    assert torch.equal(_nms(boxes, scores, iou, 300), expected[:300])


def test_a_segmenters_cache_key_changes_with_every_setting_that_changes_masks(untrained_fastsam_s):
    base = dict(device="cpu", conf=0.3, iou=0.7, max_det=40)
    key = FastSAMSegmenter(untrained_fastsam_s, **base).cache_key
    assert FastSAMSegmenter(untrained_fastsam_s, **base, batch_size=3, threads=1).cache_key == key
    for change in (dict(conf=0.4), dict(iou=0.6), dict(max_det=41), dict(imgsz=128), dict(tta=True),
                   dict(mask_margin=0.1), dict(mask_nms=0.5), dict(half=True), dict(upsample="cubic"),
                   dict(flat_std=0), dict(flat_std=8)):
        assert FastSAMSegmenter(untrained_fastsam_s, **{**base, **change}).cache_key != key, change


def flat_tile(tone: int, shape=(1024, 1024), sigma: float = 1.5, seed: int = 0) -> np.ndarray:
    """One flat tone with faint noise, as an exported mosaic's fill or a blown-out area."""
    noise = np.random.default_rng(seed).normal(0, sigma, (*shape, 3))
    return np.clip(tone + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("tta", [False, True])
def test_no_masks_on_a_flat_white_tile_though_the_network_draws_some(tta):
    """The bundled model draws roof-sized boxes on flat white (a mosaic's fill collar without
    nodata, blown-out sand, cloud) at a low threshold (the GPU-trained model only below about
    0.05; the 40-epoch one did at its card's 0.25); the featureless filter drops them, flipped
    views too."""
    from fastsam_geo.engine import BUNDLED_PATH

    tiles = [flat_tile(240), flat_tile(200, seed=1)]
    raw = FastSAMSegmenter(BUNDLED_PATH, device="cpu", flat_std=0, tta=tta, conf=0.01)(tiles)
    assert sum(len(r) for r in raw) >= 2  # what the network itself draws there
    assert [len(r) for r in FastSAMSegmenter(BUNDLED_PATH, device="cpu", tta=tta, conf=0.01)(tiles)] == [0, 0]


def test_the_featureless_filter_keeps_what_a_tile_with_texture_gives(untrained_fastsam_s, rng):
    """On imagery with texture everywhere the filter changes nothing: the same masks, the same order."""
    img = rng.integers(0, 255, (300, 256, 3), np.uint8)
    a = FastSAMSegmenter(untrained_fastsam_s, device="cpu", conf=0.3, iou=0.7, max_det=40)([img])[0]
    b = FastSAMSegmenter(untrained_fastsam_s, device="cpu", conf=0.3, iou=0.7, max_det=40, flat_std=0)([img])[0]
    assert len(a) == len(b) > 0 and np.array_equal(a.boxes, b.boxes)


def test_flipped_views_are_judged_on_flipped_pixels():
    """With test-time flips, each view's masks are checked against that view's own pixels: a tile
    that is imagery on the left and flat white on the right keeps no mask on the right."""
    import rasterio

    from fastsam_geo.engine import BUNDLED_PATH
    from fastsam_geo.samples import SAMPLE_IMAGE

    with rasterio.open(SAMPLE_IMAGE) as src:
        img = src.read(window=((0, 1024), (0, 1024))).transpose(1, 2, 0).copy()
    img[:, 512:] = flat_tile(240, (1024, 512))

    def on_white(inst):
        return int((inst.boxes[:, 0] >= 512 + 5).sum())

    assert on_white(FastSAMSegmenter(BUNDLED_PATH, device="cpu", tta=True, flat_std=0, conf=0.01)([img])[0]) > 0
    kept = FastSAMSegmenter(BUNDLED_PATH, device="cpu", tta=True, conf=0.01)([img])[0]
    assert on_white(kept) == 0 and len(kept) > 10
