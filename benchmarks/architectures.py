"""Small segmentation architectures the pinned ultralytics offers, on what does not need training:
parameters, GFLOPs, checkpoint size (fp32, fp16, and int8 weights with per-tensor scales) and CPU
time per 1024-px tile, all measured in this run (random weights: compute does not depend on them).

Whether an architecture *scores* better on unseen areas needs a training run per candidate
(``scripts/train_buildings.py --base yolo11n-seg.yaml ...``); this table is the part that fits the
wheel budget (the shipped file must stay <= 8 MB) and the CPU-latency budget.

    python benchmarks/architectures.py [--archs yolov8n-seg yolo11n-seg yolo26n-seg] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import os
import time

os.environ.setdefault("YOLO_OFFLINE", "true")


def size_mb(obj) -> float:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.tell() / 1e6


def int8_state(model) -> dict:
    """Weights as int8 with one fp32 scale per tensor (storage only; dequantised to load)."""
    import torch

    out = {}
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point and v.numel() > 256:
            scale = v.abs().max().clamp(min=1e-12) / 127
            out[k] = ((v / scale).round().to(torch.int8), scale.float())
        else:
            out[k] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["yolov8n-seg", "yolo11n-seg", "yolo26n-seg"])
    ap.add_argument("--imgsz", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import copy

    import torch
    from ultralytics.nn.tasks import SegmentationModel
    from ultralytics.utils.torch_utils import get_flops

    from fastsam_geo.engine.train import _packaged_yaml

    rows = []
    x = torch.rand(1, 3, args.imgsz, args.imgsz)
    models = {}
    for arch in args.archs:
        torch.manual_seed(0)
        m = SegmentationModel(_packaged_yaml(f"{arch}.yaml"), nc=1, verbose=False).eval()
        models[arch] = m
        params = sum(p.numel() for p in m.parameters())
        rows.append(dict(arch=arch, params_m=params / 1e6, gflops=get_flops(m, args.imgsz),
                         fp32=size_mb({"model": m}), fp16=size_mb({"model": copy.deepcopy(m).half()}),
                         int8=size_mb(int8_state(m)), seconds=[]))
    with torch.no_grad():
        for _ in range(args.repeats):  # interleaved, so load on the machine hits every architecture alike
            for row in rows:
                m = models[row["arch"]]
                m(x)  # warm
                t0 = time.perf_counter()
                m(x)
                row["seconds"].append(time.perf_counter() - t0)
    base = min(rows[0]["seconds"])
    print(f"| architecture | params (M) | GFLOPs @{args.imgsz} | fp32 / fp16 / int8 file (MB) | "
          f"CPU s per {args.imgsz}² tile (best of {args.repeats}) | vs {rows[0]['arch']} |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        t = min(r["seconds"])
        print(f"| {r['arch']} | {r['params_m']:.2f} | {r['gflops']:.1f} | {r['fp32']:.1f} / {r['fp16']:.1f} / "
              f"{r['int8']:.1f} | {t:.2f} | {t / base:.2f}x |")
    print(f"torch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
