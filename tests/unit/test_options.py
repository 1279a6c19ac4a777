"""Options: every number checked at the API boundary, one clear error naming the option."""

import math

import pytest

from fastsam_geo.errors import InputError
from fastsam_geo.options import Options

BAD = {
    "conf": [2, -0.1, math.nan, "0.3", True],
    "iou": [0, -1, 1.5, math.inf],
    "imgsz": [-64, 0, 16, 3.5],
    "max_det": [0, -5, 1.5],
    "batch_size": [0, -1, 2.0],
    "threads": [0, -2],
    "min_area": [-1, 2.5],
    "simplify": [math.nan, -1.0, math.inf],
    "tile_size": [16, 0, 512.5],
    "stretch": ["linear"],
    "prefer": ["largest"],
    "device": ["gpu", "cuda:x", 3],
    "tta": ["yes", 1],
    "dedup": [None],
    "bands": [(1, 2), (0, 1, 2), ("a",)],
}


@pytest.mark.parametrize("name,value", [(k, v) for k, vs in BAD.items() for v in vs])
def test_a_bad_value_is_one_input_error_naming_the_option(name, value):
    with pytest.raises(InputError, match=rf"^({name}|{name.replace('_', ' ')}) must") as e:
        Options(**{name: value})
    assert "\n" not in str(e.value)


def test_overlap_against_tile_size_and_unknown_names():
    with pytest.raises(InputError, match=r"overlap .* must be smaller than the tile size"):
        Options(tile_size=256, overlap=256)
    with pytest.raises(InputError, match=r"unknown option 'conff'; options are: .*conf"):
        Options.of(conff=0.3)


def test_good_values_and_what_changes_a_tiles_masks():
    o = Options.of(conf=0.2, bands=[3, 2, 1], device="cuda:1", tile_size=512, overlap=0)
    assert o.bands == (3, 2, 1) and o.conf == 0.2
    assert o.engine() == {"conf": 0.2, "max_det": 300, "tta": False, "upsample": "cubic"}
    key = o.result_key()
    # what changes masks is in the key; what only changes speed is not
    for name, value in dict(conf=0.3, iou=0.5, imgsz=640, max_det=10, half=True, tta=True, tile_size=256,
                            overlap=16, bands=(1,), stretch="none", min_area=4, gsd="native", sharpen=0.6).items():
        assert Options.of(o, **{name: value}).result_key() != key, name
    # sharpening off, whether unset or 0: the key runs had before it existed (their caches and jobs stay valid)
    assert Options.of(o, sharpen=0.0).result_key() == key and "sharpen" not in key
    for name, value in dict(device="cpu", batch_size=2, threads=1, dedup=False, simplify=1.0,
                            prefer="score").items():
        assert Options.of(o, **{name: value}).result_key() == key, name
