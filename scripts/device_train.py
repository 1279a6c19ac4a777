"""Train several prepared runs at once on one GPU machine that has torch but no geospatial stack.

The machine that has the data and rasterio prepares each run (``train_buildings.py --prepare-only``),
packs them here, and scores the models that come back (``train_buildings.py --score-only``); the GPU
machine only unpacks and trains (``train_buildings.py --train-only``), all runs side by side, so they
share its CPU cores (augmentation) and its GPU alike.

    python scripts/device_train.py pack RUN_DIR... --dest .gpu     # here: tiles once, lossless
    python scripts/device_train.py run --src .gpu --work /tmp/runs --out OUT -- --minutes 6 ...

``pack`` stores every distinct training tile once (the runs of a leave-one-area-out study share
most of them) as lossless WebP, which decodes to the very pixels the PNG held (checked on
packing), plus each run's labels and report. ``run`` rebuilds each dataset, starts
``train_buildings.py --train-only --out WORK/NAME ARGS`` for every run at once, stops them at
``--deadline`` seconds, and writes each run's model, card, report, per-epoch results and log to
``OUT/NAME.tar`` (the files a GPU loan can send back).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pack(runs: list[Path], dest: Path) -> dict:
    """Write ``dest/pool/SHA.webp`` (each distinct tile once) and ``dest/runs/NAME/`` (labels,
    report, data.yaml, manifest of tile name -> SHA). Returns the sizes."""
    import cv2

    pool = dest / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    stats = {"runs": {}, "tiles": 0, "distinct": 0}
    for run in runs:
        ds = run / "dataset"
        out = dest / "runs" / run.name
        if out.exists():
            shutil.rmtree(out)
        manifest = {}
        for img in sorted((ds / "images").rglob("*.png")):
            rel = img.relative_to(ds).as_posix()
            data = cv2.imread(str(img), cv2.IMREAD_UNCHANGED)
            sha = hashlib.sha256(data.tobytes() + str(data.shape).encode()).hexdigest()[:20]
            target = pool / f"{sha}.webp"
            if not target.exists():
                ok, buf = cv2.imencode(".webp", data, [cv2.IMWRITE_WEBP_QUALITY, 101])  # 101: lossless
                if not ok or not (cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) == data).all():
                    raise SystemExit(f"error: {img} does not round-trip through lossless WebP")
                target.write_bytes(buf.tobytes())
                stats["distinct"] += 1
            manifest[rel] = sha
            stats["tiles"] += 1
        for txt in sorted((ds / "labels").rglob("*.txt")):
            dst = out / "dataset" / txt.relative_to(ds)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(txt, dst)
        for name in ("data.yaml", "summary.json"):
            (out / "dataset").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ds / name, out / "dataset" / name)
        shutil.copyfile(run / "report.json", out / "report.json")
        (out / "manifest.json").write_text(json.dumps(manifest))
        stats["runs"][run.name] = len(manifest)
    stats["bytes"] = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    return stats


def _write_tile(job: tuple[str, list[str]]) -> None:
    """Decode one pooled tile and write it as PNG wherever the runs use it."""
    import cv2
    import numpy as np

    src, dsts = job
    img = cv2.imdecode(np.frombuffer(Path(src).read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    for dst in dsts:
        cv2.imwrite(dst, img, [cv2.IMWRITE_PNG_COMPRESSION, 1])


def unpack(src: Path, work: Path) -> list[Path]:
    """Rebuild every packed run under ``work`` (PNG tiles, labels, report); return the run folders."""
    from concurrent.futures import ProcessPoolExecutor

    made, uses = [], {}
    for packed in sorted((src / "runs").iterdir()):
        run = work / packed.name
        if run.exists():
            shutil.rmtree(run)
        shutil.copytree(packed, run, ignore=shutil.ignore_patterns("manifest.json"))
        for rel, sha in json.loads((packed / "manifest.json").read_text()).items():
            dst = run / "dataset" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            uses.setdefault(str(src / "pool" / f"{sha}.webp"), []).append(str(dst))
        made.append(run)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_write_tile, uses.items(), chunksize=8))
    return made


def polars_stub(folder: Path) -> Path | None:
    """ultralytics' trainer imports polars only to read its own results.csv back into the
    checkpoint (and gives up quietly when that fails): where polars is missing, a stub whose
    every use fails stands in. Returns the folder to put on PYTHONPATH, or None."""
    try:
        import polars  # noqa: F401
        return None
    except ImportError:
        pkg = folder / "polars"
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text(
            "def __getattr__(name):\n    raise RuntimeError('polars is not installed (stub)')\n")
        return folder


def run(src: Path, work: Path, out: Path, train_args: list[str], deadline: float, threads: int) -> int:
    t0 = time.time()
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}, {gpu}, cpus {os.cpu_count()}", flush=True)
    runs = unpack(src, work)
    print(f"unpacked {len(runs)} runs in {time.time() - t0:.1f} s", flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads), YOLO_OFFLINE="true")
    stub = polars_stub(work / "_stubs")
    root = str(HERE.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, str(stub) if stub else "", env.get("PYTHONPATH", "")) if p)
    procs = {}

    def start(r: Path, extra: list[str]) -> None:
        report = json.loads((r / "report.json").read_text())
        holdout = report["args"].get("holdout")
        cmd = [sys.executable, str(HERE / "train_buildings.py"), "--train-only", "--out", str(r), *train_args, *extra]
        if holdout and holdout != "None":
            cmd += ["--holdout", holdout]
        log = open(r / "train.log", "a")  # noqa: SIM115 (open for the child's whole life, closed below)
        procs[r] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root), log, time.time())
        print("started", r.name, " ".join(cmd[2:]), flush=True)

    for r in runs:
        start(r, [])
    retried = set()
    while True:
        for r, (p, log, t_start) in list(procs.items()):
            # a run that fails at once (dataloader processes refused, say) gets one retry without them,
            # with the time that is left
            if p.poll() not in (None, 0) and time.time() - t_start < 120 and r not in retried:
                retried.add(r)
                log.close()
                left = (deadline - (time.time() - t0) - 90) / 60
                print(f"{r.name} failed at start (exit {p.returncode}): retry with --workers 0, "
                      f"{left:.1f} min", flush=True)
                start(r, ["--workers", "0", "--minutes", f"{max(left, 0.5):.2f}"])
        if all(p.poll() is not None for p, _, _ in procs.values()):
            break
        if time.time() - t0 > deadline:
            print(f"deadline {deadline:.0f} s: stopping the runs still going", flush=True)
            for p, _, _ in procs.values():
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(5)
    failed = 0
    out.mkdir(parents=True, exist_ok=True)
    for r, (p, log, _) in procs.items():
        p.wait()
        log.close()
        failed += p.returncode != 0
        if p.returncode == 0:  # where the run's minutes were spent, for its card
            report = json.loads((r / "report.json").read_text())
            report["schedule"]["hardware"] = f"{gpu} ({os.cpu_count()} CPU cores), {len(runs)} runs side by side"
            (r / "report.json").write_text(json.dumps(report, indent=2))
        print(f"{r.name}: exit {p.returncode}, model {'yes' if (r / 'model.pt').exists() else 'NO'}", flush=True)
        with tarfile.open(out / f"{r.name}.tar", "w") as tar:
            for name in ("model.pt", "model.json", "report.json", "train.log", "yolo/train/results.csv",
                         "yolo/train/args.yaml"):
                if (r / name).exists():
                    tar.add(r / name, arcname=name)
    print(f"done in {time.time() - t0:.0f} s, {failed} failed", flush=True)
    return 1 if failed else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--dest", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--src", type=Path, required=True)
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--deadline", type=float, default=540, help="seconds after start to stop every run")
    r.add_argument("--threads", type=int, default=2, help="OMP threads per run")
    r.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train_buildings.py's training options")
    a = ap.parse_args()
    if a.cmd == "pack":
        print(json.dumps(pack(a.runs, a.dest), indent=1))
    else:
        args = a.train_args[1:] if a.train_args[:1] == ["--"] else a.train_args
        raise SystemExit(run(a.src, a.work, a.out, args, a.deadline, a.threads))


if __name__ == "__main__":
    main()
