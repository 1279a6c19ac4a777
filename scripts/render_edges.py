"""Render docs/edges.png: the bundled model's edge map of the shipped sample beside the image.

Tiles of 512 px with 64 px overlap (6 tiles), so the picture shows that the blended map has no
tile grid: the dashed lines on the right half mark where the tiles' cores meet.

    python scripts/render_edges.py [OUT.png]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import rasterio

import fastsam_geo
from fastsam_geo.samples import SAMPLE_IMAGE
from fastsam_geo.tiling import plan_tiles

TILE, OVERLAP = 512, 64


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "edges.png"
    with tempfile.TemporaryDirectory() as d:
        path = fastsam_geo.edge_map(SAMPLE_IMAGE, Path(d) / "edges.tif", tile_size=TILE, overlap=OVERLAP,
                                    device="cpu")
        with rasterio.open(path) as src:
            edges = src.read(1)
    with rasterio.open(SAMPLE_IMAGE) as src:
        rgb = src.read((1, 2, 3)).transpose(1, 2, 0)
    grid = plan_tiles(rgb.shape[1], rgb.shape[0], TILE, OVERLAP)
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.9), constrained_layout=True)
    axes[0].imshow(rgb)
    axes[0].set_title(f"{SAMPLE_IMAGE.name} (OpenAerialMap)")
    axes[1].imshow(edges, cmap="magma", vmin=0, vmax=255)
    for x in sorted({t.core[0] for t in grid} - {0}):
        axes[1].axvline(x - 0.5, color="cyan", lw=0.6, ls=(0, (4, 6)), alpha=0.6)
    for y in sorted({t.core[1] for t in grid} - {0}):
        axes[1].axhline(y - 0.5, color="cyan", lw=0.6, ls=(0, (4, 6)), alpha=0.6)
    axes[1].set_title(f"fastsam-geo edges (buildings-nano, {TILE}-px tiles blended; dashed: tile seams)")
    for ax in axes:
        ax.set_axis_off()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
