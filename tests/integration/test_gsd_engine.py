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
