#!/usr/bin/env python
"""Extract the extra building-footprint data (docs/training_data.md) from two public git repositories.

    git clone --bare https://github.com/hotosm/fAIr-utilities fair-utilities.git
    git clone --bare https://github.com/NRCan/geo-deep-learning geo-deep-learning.git
    python scripts/fetch_extdata.py --fair-utilities fair-utilities.git \
        --geo-deep-learning geo-deep-learning.git --out extdata

Files are read from pinned commits (``git show COMMIT:PATH``), so the output is byte-identical
whatever the clones' HEADs. Written under --out (git-ignored here; never commit data):

  hot_aoi3_kathmandu/      fAIr-utilities@61f15156 ramp-data/TRAIN/HOTOSM/2/data/3: 32 z20 OpenAerialMap tiles
                           stitched into two 1024x1024 EPSG:3857 GeoTIFFs (JPEG q95, like ../shared/data/oam_osm)
                           + OSM footprints (80) and per-mosaic labels with partial=1 at the edge.
                           Imagery CC-BY-4.0 (OpenAerialMap / HOT), labels (c) OpenStreetMap contributors, ODbL-1.0.
  spacenet4_atlanta_rgb/   geo-deep-learning@53aa49cc tests/data/spacenet: a SpaceNet 4 WorldView-2 crop
                           (R,G,B,NIR uint8, 0.5 m, EPSG:32616) + footprints. SpaceNet, CC-BY-SA-4.0.
  spacenet2_vegas_wv03/    geo-deep-learning@6bdffbb7 tests/data/spacenet: a SpaceNet 2 WorldView-3 crop
                           (RGB uint8, 0.27 m, EPSG:26911) + footprints. SpaceNet, CC-BY-SA-4.0.

Not used, ever: hotosm/fAIr-models (reserved as an external test set).
Needs git, rasterio, geopandas, shapely, numpy, Pillow; a few seconds on one core.
"""
import argparse
import io
import json
import math
import re
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from shapely.geometry import box
from shapely.validation import make_valid

FAIR_COMMIT = "61f15156c4d399be9068ea1fa3e9b85915345076"
GDL_SN4_COMMIT = "53aa49ccb54e0f487a9c314909481feb3d185957"
GDL_SN2_COMMIT = "6bdffbb7a013727f05593d760ca95b92eff23f0f"
R = 6378137.0
ORIGIN = math.pi * R  # 20037508.342789244


def git_ls(git_dir, commit, path):
    out = subprocess.run(["git", "--git-dir", str(git_dir), "ls-tree", "-r", "--name-only", commit, path],
                         check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line]


def git_bytes(git_dir, commit, path):
    return subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"],
                          check=True, capture_output=True).stdout


def write_git_file(git_dir, commit, path, dest):
    dest = Path(dest)
    dest.write_bytes(git_bytes(git_dir, commit, path))
    return dest


def labels_for_extent(gdf4326, bounds, crs):
    """Labels (EPSG:4326) touching a raster extent; partial=1 where not fully inside."""
    ext = gpd.GeoSeries([box(*bounds)], crs=crs).to_crs(4326).iloc[0]
    sel = gdf4326[gdf4326.intersects(ext)].copy()
    sel["partial"] = (~sel.within(ext)).astype(int)
    return sel


def save_geojson(gdf, path):
    if path.exists():
        path.unlink()
    gdf.to_file(path, driver="GeoJSON")


# --------------------------------------------------------------------------- HOT aoi3
def tile_bounds_3857(x, y, z):
    size = 2 * ORIGIN / 2 ** z
    left = -ORIGIN + x * size
    top = ORIGIN - y * size
    return left, top - size, left + size, top


def components(tiles):
    """4-connected groups of (x, y) tiles."""
    tiles = set(tiles)
    groups = []
    while tiles:
        stack = [tiles.pop()]
        grp = set(stack)
        while stack:
            x, y = stack.pop()
            for n in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                if n in tiles:
                    tiles.remove(n)
                    grp.add(n)
                    stack.append(n)
        groups.append(grp)
    return sorted(groups, key=lambda g: (-len(g), min(g)))


def hot_aoi3(git_dir, out, zoom=20):
    d = out / "hot_aoi3_kathmandu"
    d.mkdir(parents=True, exist_ok=True)
    base = "ramp-data/TRAIN/HOTOSM/2/data/3"
    files = git_ls(git_dir, FAIR_COMMIT, base)
    pat = re.compile(r"OAM-(\d+)-(\d+)-(\d+)\.png$")
    tiles = {}
    for f in files:
        m = pat.search(f)
        if m and int(m.group(3)) == zoom:
            tiles[(int(m.group(1)), int(m.group(2)))] = f
    labels = gpd.read_file(io.BytesIO(git_bytes(git_dir, FAIR_COMMIT, f"{base}/labels.geojson")))
    labels = labels.set_crs(4326, allow_override=True)
    labels["geometry"] = labels.geometry.apply(lambda g: g if g.is_valid else make_valid(g))
    save_geojson(labels, d / "labels_osm.geojson")
    stats = {"labels_all": len(labels), "mosaics": []}
    for i, grp in enumerate(components(tiles)):
        name = f"mosaic_z{zoom}_{chr(ord('a') + i)}"
        xs = [t[0] for t in grp]
        ys = [t[1] for t in grp]
        x0, y0 = min(xs), min(ys)
        w, h = (max(xs) - x0 + 1) * 256, (max(ys) - y0 + 1) * 256
        arr = np.zeros((3, h, w), np.uint8)
        mask = np.zeros((h, w), np.uint8)
        for (x, y) in grp:
            im = Image.open(io.BytesIO(git_bytes(git_dir, FAIR_COMMIT, tiles[(x, y)])))
            a = np.asarray(im.convert("RGBA"))
            r0, c0 = (y - y0) * 256, (x - x0) * 256
            arr[:, r0:r0 + 256, c0:c0 + 256] = a[..., :3].transpose(2, 0, 1)
            mask[r0:r0 + 256, c0:c0 + 256] = np.where(a[..., 3] > 0, 255, 0)
        left, _, _, top = tile_bounds_3857(x0, y0, zoom)
        res = 2 * ORIGIN / 2 ** zoom / 256
        transform = from_origin(left, top, res, res)
        tif = d / f"{name}.tif"
        prof = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:3857",
                    transform=transform, tiled=True, blockxsize=256, blockysize=256,
                    compress="JPEG", jpeg_quality=95, photometric="YCbCr")
        with rasterio.open(tif, "w", **prof) as dst:
            dst.write(arr)
        lab = labels_for_extent(labels, rasterio.open(tif).bounds, "EPSG:3857")
        save_geojson(lab, d / f"{name}_labels.geojson")
        stats["mosaics"].append({"name": name, "px": f"{w}x{h}", "tiles": len(grp),
                                 "tile_range": f"x {x0}-{max(xs)}, y {y0}-{max(ys)}, z {zoom}",
                                 "labels": len(lab), "partial": int(lab.partial.sum()),
                                 "nodata_px": int((mask == 0).sum())})
    return stats


# --------------------------------------------------------------------------- SpaceNet crops
def spacenet_crop(git_dir, out, name, commit, img_path, lbl_path, layer=None):
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    img = write_git_file(git_dir, commit, img_path, d / "image.tif")
    raw = d / ("_labels_src" + Path(lbl_path).suffix)
    write_git_file(git_dir, commit, lbl_path, raw)
    with rasterio.open(img) as r:
        bounds, crs, meta = r.bounds, r.crs, (r.width, r.height, r.count, r.dtypes[0], r.res)
    g = gpd.read_file(raw, layer=layer)
    g = g[["geometry"]].to_crs(4326)
    g["geometry"] = g.geometry.apply(lambda x: x if x.is_valid else make_valid(x))
    raw.unlink()
    save_geojson(g, d / "labels_all.geojson")
    lab = labels_for_extent(g, bounds, crs)
    save_geojson(lab, d / "image_labels.geojson")
    return {"px": f"{meta[0]}x{meta[1]}", "bands": meta[2], "dtype": meta[3],
            "res": [round(v, 4) for v in meta[4]], "crs": str(crs),
            "labels_src": len(g), "labels_touching": len(lab), "partial": int(lab.partial.sum())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fair-utilities", required=True, help="git dir of hotosm/fAIr-utilities (bare clone)")
    ap.add_argument("--geo-deep-learning", required=True, help="git dir of NRCan/geo-deep-learning (bare clone)")
    ap.add_argument("--out", default="extdata")
    a = ap.parse_args()
    out = Path(a.out)
    stats = {}
    stats["hot_aoi3_kathmandu"] = hot_aoi3(Path(a.fair_utilities), out)
    sn = "tests/data/spacenet/"
    stats["spacenet4_atlanta_rgb"] = spacenet_crop(
        Path(a.geo_deep_learning), out, "spacenet4_atlanta_rgb", GDL_SN4_COMMIT,
        sn + "SN4_buildings_train_AOI_6_Atlanta_nadir10_catid_1030010003993E00_PS-RGBNIR_732701_3729639_clipped.tif",
        sn + "SN4_buildings_train_AOI_6_Atlanta_geojson_buildings_732701_3729639.geojson")
    stats["spacenet2_vegas_wv03"] = spacenet_crop(
        Path(a.geo_deep_learning), out, "spacenet2_vegas_wv03", GDL_SN2_COMMIT,
        sn + "SpaceNet_AOI_2_Las_Vegas-056155973080_01_P001-WV03-RGB.tif",
        sn + "SpaceNet_AOI_2_Las_Vegas-056155973080_01_P001-WV03.gpkg")
    (out / "fetch_stats.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
