"""fastsam-geo against segment-geospatial's FastSAM wrapper (samgeo), same weights, same image.

samgeo is never a dependency: it lives in its own virtual environment (it pins ultralytics
8.0.x through segment-anything-fast), made once with::

    python3 -m venv /tmp/samgeo-venv
    /tmp/samgeo-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 segment-geospatial \\
        segment-anything-fast "setuptools<70"

This script copies the weights of a model of ours into that ultralytics' format (state dict
into the same YOLOv8-seg architecture, saved as ``FastSAM-s.pt`` where samgeo looks for it,
so nothing is downloaded), runs samgeo's workflow (``set_image`` -> ``everything_prompt`` ->
``save_masks`` -> ``raster_to_vector``) and ours (``segment_raster``) on a raster samgeo
can hold in memory, at the same ground resolution, and prints the time ratio and how well the
outputs agree (greedy one-to-one IoU matching of polygons).

    python benchmarks/samgeo_compare.py [--model buildings-nano.pt] [--image sample] [--venv /tmp/samgeo-venv]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

SAMGEO_RUN = textwrap.dedent('''
    import json, sys, time, torch
    from ultralytics.nn.tasks import SegmentationModel
    arch, sd_path, image, out_tif, out_vec, imgsz, conf, iou = sys.argv[1:9]
    m = SegmentationModel(arch, nc=1, verbose=False)
    m.load_state_dict(torch.load(sd_path, map_location="cpu"))
    torch.save({"model": m.half(), "train_args": {"task": "segment", "imgsz": int(imgsz)}}, "FastSAM-s.pt")
    from samgeo.fast_sam import SamGeo
    t0 = time.perf_counter()
    sam = SamGeo(model="FastSAM-s.pt")
    sam.set_image(image, imgsz=int(imgsz), conf=float(conf), iou=float(iou), retina_masks=True)
    sam.everything_prompt(output=out_tif)
    sam.raster_to_vector(out_tif, out_vec, dst_crs=None)
    print(json.dumps({"seconds": time.perf_counter() - t0}))
''')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="buildings-nano.pt")
    ap.add_argument("--image", default="sample")
    ap.add_argument("--venv", type=Path, default=Path("/tmp/samgeo-venv"))
    args = ap.parse_args()
    import geopandas as gpd
    import torch

    from fastsam_geo import evaluate, segment_raster
    from fastsam_geo.engine import FastSAMSegmenter
    from fastsam_geo.raster import read_info
    from fastsam_geo.samples import SAMPLE_IMAGE

    image = SAMPLE_IMAGE if args.image == "sample" else Path(args.image).resolve()  # samgeo runs elsewhere
    seg = FastSAMSegmenter(args.model, device="cpu")
    info = read_info(image)
    tile = int(seg.meta.get("tile_size", 1024))
    # samgeo resizes the whole image to imgsz: pick it so both see the same ground resolution
    imgsz = int(round(max(info.width, info.height) * seg.imgsz / tile / 32) * 32)
    arch = f"{seg.meta.get('arch', 'yolov8n-seg')}.yaml".replace("yolov8n-seg", "yolov8n-seg")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        from ultralytics.nn.tasks import load_checkpoint

        unfused, _ = load_checkpoint(str(seg.path), device="cpu", fuse=False)  # seg.model has BN fused away
        torch.save({k: v.float() for k, v in unfused.state_dict().items()}, d / "sd.pt")
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "YOLO_OFFLINE": "true",
               "TORCH_HOME": str(d)}
        (d / "hub" / "checkpoints").mkdir(parents=True)
        (d / "run.py").write_text(SAMGEO_RUN)
        # samgeo checks $TORCH_HOME/hub/checkpoints/FastSAM-s.pt before downloading: put it there
        cmd = [str(args.venv / "bin" / "python"), "run.py", arch, str(d / "sd.pt"), str(image), str(d / "sg.tif"),
               str(d / "sg.gpkg"), str(imgsz), str(seg.conf), str(seg.iou)]
        prep = subprocess.run([*cmd[:2], *cmd[2:]], cwd=d, env=env, capture_output=True, text=True)
        if prep.returncode:
            raise SystemExit(f"samgeo run failed:\n{prep.stderr[-2000:]}")
        t_samgeo = json.loads(prep.stdout.strip().splitlines()[-1])["seconds"]
        t0 = time.perf_counter()
        ours = segment_raster(image, segmenter=FastSAMSegmenter(args.model, device="cpu"), tile_size=tile)
        t_ours = time.perf_counter() - t0
        theirs = gpd.read_file(d / "sg.gpkg")
        theirs = theirs[theirs.geometry.area > 0]
        r = evaluate(ours, theirs, iou=0.5)
    print(f"image {image.name} ({info.width}x{info.height}); model {Path(args.model).name}; samgeo imgsz {imgsz}")
    print(f"samgeo FastSAM workflow: {t_samgeo:.1f} s, {len(theirs)} polygons")
    print(f"fastsam-geo segment_raster: {t_ours:.1f} s, {len(ours)} polygons")
    print(f"RATIO samgeo / ours = {t_samgeo / t_ours:.1f}x")
    print(f"agreement: {r.tp} matched at IoU >= 0.5 (mean IoU {r.mean_iou:.3f}); "
          f"{r.fp} only ours, {r.fn} only samgeo's")


if __name__ == "__main__":
    main()
