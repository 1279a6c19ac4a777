"""Cut the small sample GeoTIFF + labels shipped in fastsam_geo/data from ../shared/data (reproducible).

Imagery: OpenAerialMap (CC-BY-4.0, "OpenAerialMap contributors / HOT"), via HOT's fAIr-utilities
training data; labels: (c) OpenStreetMap contributors, ODbL-1.0.

    python scripts/make_sample.py
"""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window
from shapely.geometry import box

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(os.environ.get("FASTSAM_GEO_SHARED", ROOT.parent / "shared")) / "data/oam_osm/aoi1_zanzibar_tanzania"
OUT = ROOT / "fastsam_geo" / "data"
WINDOW = Window(1024, 0, 1536, 1024)  # the densest 1536 x 1024 px (230 m x 150 m) of mosaic a


def main() -> None:
    with rasterio.open(SRC / "mosaic_z20_a.tif") as src:
        data = src.read(window=WINDOW)
        prof = src.profile | dict(width=WINDOW.width, height=WINDOW.height,
                                  transform=src.window_transform(WINDOW), driver="GTiff", tiled=True,
                                  blockxsize=256, blockysize=256, compress="jpeg", jpeg_quality=88,
                                  photometric="YCBCR", interleave="pixel")
        bounds = rasterio.windows.bounds(WINDOW, src.transform)
        crs = src.crs
    tif = OUT / "sample_zanzibar.tif"
    with rasterio.open(tif, "w", **prof) as dst:
        dst.write(data)
        dst.build_overviews([2, 4], Resampling.average)
        dst.update_tags(SOURCE="OpenAerialMap (CC-BY-4.0), OpenAerialMap contributors / HOT; "
                               "hotosm/fAIr-utilities ramp-data TRAIN/HOTOSM/2")
    labels = gpd.read_file(SRC / "labels_osm.geojson").to_crs(crs)
    frame = box(*bounds)
    labels = labels[labels.intersects(frame)].copy()
    labels["partial"] = (~labels.within(frame)).astype(int)
    labels = labels[["osm_id", "partial", "geometry"]] if "osm_id" in labels else labels[["partial", "geometry"]]
    out = OUT / "sample_zanzibar_labels.geojson"
    out.unlink(missing_ok=True)
    labels.to_crs(4326).to_file(out, driver="GeoJSON")
    print(f"{tif.name}: {tif.stat().st_size / 1e3:.0f} kB; {out.name}: {len(labels)} buildings "
          f"({int(labels.partial.sum())} partial)")


if __name__ == "__main__":
    main()
