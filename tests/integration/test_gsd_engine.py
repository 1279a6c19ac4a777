"""--gsd auto on the real engine: the letterbox enlarges a small (coarse) tile to the network
input, bicubic under auto, bilinear (today's) under native; masks come back at native pixels."""

import numpy as np
import pytest

from fastsam_geo import Options, load_segmenter


@pytest.fixture(scope="module")
def engines(untrained_fastsam_s):
    auto = load_segmenter(untrained_fastsam_s, Options(device="cpu", imgsz=256, conf=0.0, max_det=5))
    native = load_segmenter(untrained_fastsam_s, Options(device="cpu", imgsz=256, conf=0.0, max_det=5, gsd="native"))
    return auto, native


def test_auto_enlarges_bicubic_native_bilinear_and_masks_are_native(engines):
    auto, native = engines
    assert (auto.upsample, native.upsample) == ("cubic", "linear") and auto.cache_key != native.cache_key
    img = np.random.default_rng(0).integers(0, 255, (100, 128, 3), dtype=np.uint8)
    ta, ga = auto.preprocess([img])
    tn, gn = native.preprocess([img])
    assert ga == gn and ga[0][0] == 2.0  # letterboxed up 2x to the 256-px input
    assert not np.array_equal(ta.numpy(), tn.numpy())
    big = np.random.default_rng(1).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    assert np.array_equal(auto.preprocess([big])[0].numpy(), native.preprocess([big])[0].numpy())  # shrinking
    (inst,) = auto([img])
    assert inst.shape == (100, 128) and len(inst.crops) > 0
    for (x0, y0, x1, y1), crop in zip(inst.boxes, inst.crops, strict=True):
        assert crop.shape == (y1 - y0, x1 - x0) and 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 100


def test_sharpen_restores_edge_contrast_of_enlarged_tiles_only(untrained_fastsam_s):
    """`sharpen` (what --gsd auto asks for on coarse imagery) unsharp-masks a tile the network
    enlarges: a blurred edge gets steeper; a tile at or above the input size is fed as before."""
    opts = dict(device="cpu", imgsz=256, conf=0.0, max_det=5)
    plain = load_segmenter(untrained_fastsam_s, Options(**opts))
    sharp = load_segmenter(untrained_fastsam_s, Options(**opts, sharpen=0.6))
    assert sharp.sharpen == 0.6 and plain.sharpen == 0.0 and sharp.cache_key != plain.cache_key
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 200  # one vertical edge, enlarged 4x to 256
    tp, _ = plain.preprocess([img])
    ts, _ = sharp.preprocess([img])
    row_p, row_s = tp.numpy()[0, 0, 128], ts.numpy()[0, 0, 128]
    assert np.abs(np.diff(row_s)).max() > 1.1 * np.abs(np.diff(row_p)).max()  # steeper edge
    assert row_s.max() > row_p.max() + 0.02  # and the bright side overshoots, as an unsharp mask does
    assert np.allclose(row_s[:100], row_p[:100], atol=1e-6) and np.allclose(row_s[-100:], row_p[-100:], atol=1e-6)
    big = np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)  # r = 1: untouched
    assert np.array_equal(sharp.preprocess([big])[0].numpy(), plain.preprocess([big])[0].numpy())
