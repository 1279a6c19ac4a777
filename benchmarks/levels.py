"""Non-uint8 imagery through the bundled model: does a 16-bit or float copy of an 8-bit scene
score what the 8-bit scene scores?

The model trained on 8-bit drone mosaics whose 2nd/98th percentiles lie at ~45/228 (its card's
``input_levels``). Non-uint8 imagery needs a stretch to 8 bits; a 2-98 % stretch to 0-255 (what
QGIS shows, and what fastsam-geo did before the card recorded levels) gives the network brighter,
harsher imagery than it ever saw. For each scene this writes copies that carry the *same* picture
in other numbers (uint16 with one gain and offset, or one per band as raw sensor counts differ;
float32 reflectance 0.02-0.42), segments them with ``segment_raster`` (real pipeline) and scores them with
``evaluate`` (F1@0.5, edge-cut references ignored), pooled per group:

- in-sample: the eight shared OAM mosaics (the model trained on them: a stretch check, not a score);
- unseen: Banepa, Nepal (``extdata/hot_aoi3_kathmandu`` from ``scripts/fetch_extdata.py``), if present;
- sample: the bundled sample.

Rows: uint8 as given (the reference); uint16 (one gain for all bands, or one per band) and
float32 stretched to the card's levels (one map for all bands); uint16 stretched to 0-255 band
by band (the same weights with a card that records no levels: what every model got before). Printed,
measured in this run.

    python benchmarks/levels.py [--groups in-sample unseen sample]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio

os.environ.setdefault("YOLO_OFFLINE", "true")

from scenes import groups  # benchmarks/scenes.py, beside this script

from fastsam_geo import evaluate, segment_raster
from fastsam_geo.models import DEFAULT_MODEL, check_weights

GAIN, OFFSET = (37.0, 41.0, 33.0), (180.0, 95.0, 240.0)


def copy_as(src: Path, dst: Path, kind: str) -> Path:
    """``src`` (uint8 RGB) with the same picture as uint16 (one gain and offset, or ``uint16-bands``:
    a gain and offset per band, as raw sensor counts differ by band) or float32 reflectance."""
    with rasterio.open(src) as s:
        data = s.read().astype(np.float64)
        profile = s.profile
    if kind == "uint16":
        out = (data * GAIN[0] + OFFSET[0]).round().astype(np.uint16)
    elif kind == "uint16-bands":
        out = np.stack([b * g + o for b, g, o in zip(data, GAIN, OFFSET)]).round().astype(np.uint16)
    else:
        out = (0.02 + data / 255.0 * 0.4).astype(np.float32)
    profile.update(dtype=out.dtype.name, compress="deflate", photometric="minisblack")
    profile.pop("jpeg_quality", None)
    with rasterio.open(dst, "w", **profile) as d:
        d.write(out)
    return dst


def without_levels(tmp: Path) -> Path:
    """The bundled weights beside a copy of its card without ``input_levels``."""
    weights = Path(check_weights(DEFAULT_MODEL))
    dst = tmp / "no-levels" / weights.name
    dst.parent.mkdir()
    shutil.copy(weights, dst)
    card = json.loads(weights.with_suffix(".json").read_text())
    card.pop("input_levels", None)
    dst.with_suffix(".json").write_text(json.dumps(card))
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", nargs="+", default=["in-sample", "unseen", "sample"])
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="fsg-levels-"))
    t0 = time.perf_counter()
    try:
        plain = without_levels(tmp)
        rows = {"uint8 (as given)": ("uint8", None), "uint16, card levels": ("uint16", None),
                "uint16, gain per band, card levels": ("uint16-bands", None),
                "float32, card levels": ("float32", None), "uint16, 0-255 per band (before)": ("uint16", plain)}
        table: dict[str, dict[str, float]] = {}
        for group, items in groups().items():
            if group not in args.groups:
                continue
            for name, (kind, model) in rows.items():
                tp = fp = fn = 0
                for i, (tif, labels) in enumerate(items):
                    path = tif if kind == "uint8" else copy_as(tif, tmp / f"{group}_{i}_{kind}.tif", kind)
                    r = evaluate(segment_raster(path, segmenter=None if model is None else str(model)), labels,
                                 iou=0.5, ignore_partial=True)
                    tp, fp, fn = tp + r.tp, fp + r.fp, fn + r.fn
                f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
                table.setdefault(name, {})[group] = f1
                print(f"{group:9s} {name:26s} F1 {f1:.3f} (tp {tp} fp {fp} fn {fn})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cols = [g for g in args.groups if any(g in v for v in table.values())]
    print(f"\n## F1@0.5 of the same scenes in other numbers, bundled model ({time.perf_counter() - t0:.0f} s)\n")
    print("| imagery | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    ref = table["uint8 (as given)"]
    for name, per in table.items():
        cells = [f"{per[g]:.3f}" + ("" if name.startswith("uint8") else f" ({per[g] - ref[g]:+.3f})") for g in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
