"""The ``fastsam-geo`` command line (also ``rio fastsam``): options in, one API call, a summary out.

No logic lives here beyond parsing options and presenting results. Every error the package
raises on purpose becomes one line on stderr and exit code 2; anything unexpected is one
line and exit code 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import functools
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import click

from . import __version__
from .errors import EmptyResultWarning, FastSAMGeoError


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Turn exceptions into one line and an exit code; show our warnings, hide library noise."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = (ctx.find_root().params or {}).get("debug", False)

        def show(message, category, *_a, **_k):
            if issubclass(category, EmptyResultWarning) or category.__module__.startswith("fastsam_geo"):
                click.echo(f"Warning: {message}", err=True)

        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            try:
                return fn(*args, **kwargs)
            except FastSAMGeoError as exc:
                if debug:
                    raise
                _fail(str(exc), 2)
            except KeyboardInterrupt:
                _fail("interrupted; no output written", 130)
            except (click.exceptions.Exit, click.ClickException, SystemExit):
                raise
            except Exception as exc:
                if debug:
                    raise
                first = str(exc).splitlines()[0] if str(exc) else ""
                _fail(f"unexpected {type(exc).__name__}: {first} (rerun with --debug for details)", 1)

    return wrapper


def _int_list(value: str | None, what: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got {value!r}") from None


class TqdmProgress:
    """A progress callback drawing a tqdm bar on stderr."""

    def __init__(self, total: int, quiet: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="tile", disable=quiet, file=sys.stderr, dynamic_ncols=True,
                        desc="segmenting")

    def __call__(self, p) -> bool:
        self.bar.total = p.total
        self.bar.update(p.done - self.bar.n)
        self.bar.set_postfix(objects=p.objects, refresh=False)
        return True

    def close(self) -> None:
        self.bar.close()


@click.group(name="fastsam", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fastsam-geo")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def main(debug: bool) -> None:
    """Fast Segment Anything (FastSAM) for GeoTIFFs: every object as a georeferenced polygon."""


@main.command()
@click.argument("raster", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output vector file: .gpkg, .parquet (GeoParquet), .geojson or .fgb.")
@click.option("-m", "--model", default=None,
              help="Weights (FastSAM-s.pt, FastSAM-x.pt, a YOLOv8-seg .pt path) or a segmenter factory "
                   "as package.module:function.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--tile-size", default=1024, show_default=True, type=int, help="Tile size in pixels.")
@click.option("--overlap", default=128, show_default=True, type=int,
              help="Pixels shared by neighbouring tiles.")
@click.option("--bands", default=None, help="Bands read as R,G,B (1-based), e.g. 4,3,2; one band = grey.")
@click.option("--stretch", type=click.Choice(["auto", "percentile", "none"]), default="auto",
              show_default=True, help="Contrast stretch for non-uint8 imagery (one per raster).")
@click.option("--batch-size", type=int, default=None, help="Tiles per forward pass (default: by device).")
@click.option("--conf", type=float, default=None, help="Confidence threshold (default: the model's).")
@click.option("--iou", type=float, default=None, help="NMS IoU threshold (default: the model's).")
@click.option("--imgsz", type=int, default=None, help="Network input size (default: the model's).")
@click.option("--min-area", type=int, default=16, show_default=True,
              help="Drop masks under this many pixels.")
@click.option("--simplify", type=float, default=0.0, show_default=True,
              help="Simplify outlines with this tolerance, in pixels.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@handle_errors
def segment(raster, output, model, device, tile_size, overlap, bands, stretch, batch_size, conf, iou,
            imgsz, min_area, simplify, quiet):
    """Segment every object in RASTER and write the polygons to OUTPUT."""
    from .api import load_segmenter, raster_info, segment_raster
    from .io import check_output
    from .pipeline import RunStats
    from .tiling import plan_tiles

    check_output(output)
    info = raster_info(raster)
    n_tiles = len(plan_tiles(info.width, info.height, tile_size, overlap))
    engine_args = dict(conf=conf, iou=iou, imgsz=imgsz, batch_size=batch_size)
    engine_args = {k: v for k, v in engine_args.items() if v is not None}
    seg = load_segmenter(model, device=device, **engine_args)
    bar = TqdmProgress(n_tiles, quiet)
    stats = RunStats()
    t0 = time.perf_counter()
    try:
        gdf = segment_raster(raster, segmenter=seg, tile_size=tile_size, overlap=overlap,
                             bands=_int_list(bands, "--bands"), stretch=stretch, batch_size=batch_size,
                             min_area=min_area, simplify=simplify, output=output, progress=bar,
                             stats=stats)
    finally:
        bar.close()
    if not quiet:
        click.echo(f"{len(gdf)} objects from {stats.tiles} tiles ({stats.tiles_skipped} empty) in "
                   f"{time.perf_counter() - t0:.1f} s -> {output}", err=True)


@main.command()
@click.argument("raster", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tile-size", default=1024, show_default=True, type=int)
@click.option("--overlap", default=128, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@handle_errors
def info(raster, tile_size, overlap, as_json):
    """Show RASTER's CRS, size, bands, dtype, nodata and the tiles a run would plan."""
    from .api import raster_info
    from .coords import crs_name
    from .raster import choose_bands
    from .tiling import plan_tiles

    ri = raster_info(raster)
    grid = plan_tiles(ri.width, ri.height, tile_size, overlap)
    rec = {
        "path": str(raster), "crs": crs_name(ri.crs), "width": ri.width, "height": ri.height,
        "bands": ri.count, "colorinterp": list(ri.colorinterp), "dtype": ri.dtype, "nodata": ri.nodata,
        "mask": ri.has_mask, "resolution": list(ri.res), "bounds": list(ri.bounds),
        "overviews": ri.overviews, "rgb_bands": list(choose_bands(ri)),
        "tiles": {"size": tile_size, "overlap": overlap, "rows": grid.n_rows, "cols": grid.n_cols,
                  "count": len(grid)},
    }
    if as_json:
        click.echo(json.dumps(rec, indent=2))
        return
    for key, value in rec.items():
        if key == "tiles":
            value = (f"{value['count']} ({value['rows']} x {value['cols']}) of {tile_size} px, "
                     f"overlap {overlap}")
        click.echo(f"{key:>12}: {value}")


if __name__ == "__main__":  # pragma: no cover
    main()
