"""The ``fastsam-geo`` command line (also ``rio fastsam``): options in, one API call, a summary out.

No logic lives here beyond parsing options and presenting results. Every error the package
raises on purpose becomes one line on stderr and exit code 2; anything unexpected is one
line and exit code 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import click

from . import __version__
from .errors import EmptyResultWarning, FastSAMGeoError
from .signals import EXIT_CODE, Terminated, terminate_as_interrupt


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
                from .progress import write

                write(f"Warning: {message}")  # above a live progress bar, not through it

        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            try:
                with terminate_as_interrupt():  # kill, timeout, docker stop: Ctrl-C's clean-up, then exit 143
                    return fn(*args, **kwargs)
            except FastSAMGeoError as exc:
                if debug:
                    raise
                _fail(str(exc), getattr(exc, "exit_code", 2))
            except Terminated:
                _fail("terminated; no output written", EXIT_CODE)
            except KeyboardInterrupt:
                ctx_params = click.get_current_context().params
                resume = " (finished tiles are kept in --job-dir: rerun the same command to resume)" \
                    if ctx_params.get("job_dir") else ""
                _fail(f"interrupted; no output written{resume}", 130)
            except BrokenPipeError:  # whoever read our stdout stopped (`| head`): not a failure
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit flush
                sys.exit(0)
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


DATASET = click.STRING
"""Input rasters and vector files are strings handed to GDAL untouched: a URL or a GDAL virtual
path (``https://...``, ``/vsicurl/https://...``, ``/vsis3/...``) must keep its ``//``, which a
pathlib path would collapse."""


class _OneLineErrors(click.Group):
    """Click's usage errors (an unknown option, a value that is not a number, a missing
    argument) as one ``Error: ...`` line and exit code 2, like every other bad input, instead of
    the usage text plus a hint plus the error."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """``--debug`` anywhere on the line (``fastsam-geo segment x.tif -o y.gpkg --debug``), not
        only before the command: it is moved to the front, up to a ``--`` separator."""
        end = args.index("--") if "--" in args else len(args)
        if "--debug" in args[:end]:
            args = ["--debug"] + [a for a in args[:end] if a != "--debug"] + args[end:]
        return super().parse_args(ctx, args)

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Exit as exc:  # --help, --version
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        sys.exit(0)


@click.group(name="fastsam", cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fastsam-geo")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def main(debug: bool) -> None:
    """Fast Segment Anything (FastSAM) for GeoTIFFs: every object as a georeferenced polygon."""
    from .engine import release_freed_memory  # (imports no torch)

    # the command owns its process: a fixed glibc mmap threshold keeps peak memory flat
    # (FASTSAM_GEO_MALLOC=0 trades ~170 MB for ~25 % more CPU speed; see README, Performance)
    release_freed_memory(process_owner=True)


@main.command()
@click.argument("raster", type=DATASET)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output vector file: .gpkg, .parquet (GeoParquet), .geojson or .fgb.")
@click.option("--layer", default=None, show_default="the output file's name",
              help="Layer name; in an existing GeoPackage only this layer is written or replaced.")
@click.option("--dst-crs", default=None, show_default="the raster's; GeoJSON: WGS 84 lon/lat (RFC 7946)",
              help="Write the polygons in this CRS, e.g. EPSG:4326 (area_m2 is geodesic either way).")
@click.option("-m", "--model", default=None, show_default="bundled buildings-nano",
              help="Weights: FastSAM-s.pt or FastSAM-x.pt (from $FASTSAM_GEO_WEIGHTS or ~/.cache/fastsam-geo/weights, "
                   "never the current folder; SHA-256 checked), or a YOLOv8-seg .pt path (a checkpoint is code: it "
                   "loads after a notice, unpickled restricted to ultralytics' model classes unless "
                   "FASTSAM_GEO_TRUST_WEIGHTS=1). Or package.module:function, a segmenter factory: this imports and "
                   "runs that code.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--tile-size", default=1024, show_default=True, type=int,
              help="Tile size in pixels (at the model's GSD with --gsd auto or a number).")
@click.option("--overlap", default=128, show_default=True, type=int,
              help="Pixels shared by neighbouring tiles.")
@click.option("--gsd", default="auto", show_default=True, metavar="auto|native|M",
              help="Resolution: auto sizes tiles so the network sees the raster at the ground sample distance "
                   "its model card records; native uses tiles as given; a number is the model GSD (m/px) to assume.")
@click.option("--bands", default=None, help="Bands read as R,G,B (1-based), e.g. 4,3,2; one band = grey.")
@click.option("--stretch", type=click.Choice(["auto", "percentile", "none"]), default="auto",
              show_default=True, help="Contrast stretch for non-uint8 imagery (one per raster): to the levels the "
                                      "model card records (one map for all bands), else 2-98 %% per band to 0-255.")
@click.option("--batch-size", type=int, default=None, help="Tiles per forward pass (default: by device).")
@click.option("--conf", type=float, default=None, help="Confidence threshold (default: the model's).")
@click.option("--iou", type=float, default=None, help="NMS IoU threshold (default: the model's).")
@click.option("--imgsz", type=int, default=None, help="Network input size (default: the model's).")
@click.option("--max-det", type=int, default=300, show_default=True, help="Most masks per tile.")
@click.option("--tta", is_flag=True, help="Also run each tile flipped (3x the network time).")
@click.option("--sharpen", type=float, default=None, metavar="AMOUNT",
              help="Unsharp-mask enlarged tiles by AMOUNT (0-3; 0: off). Default: 0.6 where --gsd enlarges imagery "
                   "2.5x coarser than the model's (0.5 m for the bundled model), else off.")
@click.option("--dedup/--no-dedup", default=True, show_default=True,
              help="Keep one mask per object (a roof found twice, or inside another, is a duplicate); "
                   "--no-dedup keeps nested objects (FastSAM's everything mode).")
@click.option("--skip-failed-tiles", is_flag=True,
              help="A tile whose segmentation fails is skipped (and named) instead of stopping the run.")
@click.option("--min-area", default="16px", show_default=True, metavar="AREA",
              help="Drop masks under AREA pixels (16px; a bare number is pixels, as before), or footprints "
                   "under AREA ground m2 after merging (e.g. 10m2).")
@click.option("--max-area", default=None, metavar="M2", help="Drop footprints over this ground area, m2.")
@click.option("--simplify", default="0", show_default=True, metavar="TOL",
              help="Simplify outlines with this tolerance: 0.3m (ground metres) or 1px (pixels; a bare number "
                   "is pixels, as before).")
@click.option("--regularize", is_flag=True,
              help="Right-angle footprints (buildingregulariser; needs the [regularize] extra).")
@click.option("--fill-holes-below", default=None, metavar="M2", help="Fill holes smaller than this, ground m2.")
@click.option("--min-quality", type=float, default=0.0, show_default=True,
              help="Drop objects whose mask quality (the quality column, 0-1) is below this.")
@click.option("--point", "points", multiple=True, metavar="X,Y[,LABEL]",
              help="Select the object at this point (label 0: remove objects there). Repeatable.")
@click.option("--box", "boxes", multiple=True, metavar="XMIN,YMIN,XMAX,YMAX",
              help="Select the object best matching this box. Repeatable.")
@click.option("--prompt-crs", default=None, help="CRS of --point/--box (default: the raster's), e.g. EPSG:4326.")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Vector file of prompts: points are clicks, polygons are boxes; 'label'/'group' columns.")
@click.option("--prompts-layer", default=None, metavar="NAME", help="The --prompts file's layer, for one with several.")
@click.option("--text", "texts", multiple=True, help="Select the object best matching this text (needs [text]).")
@click.option("--clip", default=None, help="CLIP for --text: MODEL:WEIGHTS, e.g. ViT-B-32:/path/weights.bin.")
@click.option("--bbox", default=None, metavar="XMIN,YMIN,XMAX,YMAX",
              help="Only segment this area (in --prompt-crs, default the raster's CRS).")
@click.option("--cache", default=None, metavar="DIR|auto",
              help="Keep per-tile results there for later runs and prompts (auto: user cache folder).")
@click.option("--job-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Record each finished tile there; the same command after a crash or kill resumes, and writes "
                   "the same output.")
@click.option("--restart", is_flag=True, help="Discard the job in --job-dir (other options, changed raster).")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Segment tiles on this Dask cluster's workers (they must see RASTER; needs [distributed]).")
@click.option("--workers", type=click.IntRange(1, 4096), default=None,
              help="Segment tiles on a local Dask cluster of N worker processes (needs [distributed]).")
@click.option("--allow-empty", is_flag=True,
              help="Finding no object writes an empty layer and exits 0 (default: an error, exit 3, nothing written).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@handle_errors
def segment(raster, output, layer, model, device, tile_size, overlap, gsd, bands, stretch, batch_size, conf, iou,
            imgsz, max_det, tta, sharpen, dedup, skip_failed_tiles, min_area, max_area, simplify, regularize,
            fill_holes_below, min_quality, points, boxes, prompt_crs, prompts_file, prompts_layer, texts, clip, bbox,
            cache, job_dir, restart, scheduler, workers, allow_empty, quiet, dst_crs):
    """Segment every object in RASTER, or the ones the prompts select, and write polygons to OUTPUT."""
    from .api import SegmentedRaster, single_call_cache
    from .io import check_output, read_prompts
    from .options import Options
    from .pipeline import RunStats
    from .prompts import TextPrompt, parse_box, parse_point

    options = Options(tile_size=tile_size, overlap=overlap, bands=_int_list(bands, "--bands"), stretch=stretch,
                      device=device, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det, batch_size=batch_size,
                      tta=tta, dedup=dedup, skip_failed_tiles=skip_failed_tiles, min_quality=min_quality, gsd=gsd,
                      sharpen=sharpen, **cleanup_options(min_area, max_area, simplify, regularize, fill_holes_below))
    check_output(output, inputs=[raster, prompts_file], layer=layer)
    for crs in (prompt_crs, dst_crs):
        if crs is not None:
            from .coords import parse_crs

            parse_crs(crs)  # fail early, one line
    prompts = [parse_point(p, prompt_crs) for p in points] + [parse_box(b, prompt_crs) for b in boxes]
    if prompts_file is not None:
        prompts += read_prompts(prompts_file, layer=prompts_layer)
    prompts += [TextPrompt(t) for t in texts]
    area = None
    if bbox is not None:
        box = parse_box(bbox, prompt_crs)
        area = (box.xmin, box.ymin, box.xmax, box.ymax)
    stats = RunStats()
    t0 = time.perf_counter()
    with _cluster(scheduler, workers) as client:
        sr = SegmentedRaster(raster, segmenter=model, options=options, cache=single_call_cache(cache, bool(prompts)),
                             text_embedder=clip, job_dir=job_dir, restart=restart, client=client)
        if prompts:
            gdf = sr.prompt(prompts, progress=not quiet, output=output, layer=layer, stats=stats, dst_crs=dst_crs)
            what = f"{int(gdf.found.sum())} of {len(gdf)} prompted objects"
        else:  # polygons stream to the file as tiles finish: memory does not grow with the raster
            n = sr.segment_to_file(output, layer=layer, bbox=area, bbox_crs=prompt_crs, progress=not quiet,
                                   stats=stats, dst_crs=dst_crs, allow_empty=allow_empty)
            what = f"{n} objects"
    for tile, error in stats.failed:
        x0, y0, x1, y1 = tile.box
        click.echo(f"Warning: skipped tile row {tile.row}, column {tile.col} (pixels x {x0}-{x1}, y {y0}-{y1}): "
                   f"{error}", err=True)
    if not quiet and sr.gsd is not None and sr.gsd.factor != 1:
        coarse = f", sharpen {sr.options.sharpen:g}" if sr.options.sharpen != options.sharpen else ""
        click.echo(f"GSD: raster {sr.gsd.raster_gsd:.3g} m/px, model {sr.gsd.model_gsd:.3g} m/px: tiles of "
                   f"{sr.gsd.tile_size} px, overlap {sr.gsd.overlap}{coarse} (--gsd native: as given)", err=True)
    if not quiet:
        click.echo(f"{what} from {stats.tiles} tiles ({stats.tiles_cached} cached, {stats.tiles_skipped} empty"
                   + (f", {len(stats.failed)} failed and skipped" if stats.failed else "")
                   + f") in {time.perf_counter() - t0:.1f} s"
                   + (f" on {stats.extra['workers']} Dask workers" if "workers" in stats.extra else "")
                   + f" -> {output}", err=True)


def _cluster(scheduler: str | None, workers: int | None):
    """A Dask client for --scheduler / --workers, or none (then dask is never imported)."""
    if scheduler is None and workers is None:
        return contextlib.nullcontext()
    from .distributed import cluster

    return cluster(scheduler, workers)


@main.command()
@click.argument("raster", type=DATASET)
@click.option("--tile-size", default=1024, show_default=True, type=int)
@click.option("--overlap", default=128, show_default=True, type=int)
@click.option("--gsd", default="auto", show_default=True, metavar="auto|native|M",
              help="As for segment: the tiles planned are those segment would cut.")
@click.option("-m", "--model", default=None, show_default="bundled buildings-nano",
              help="The model segment would run (its card's GSD sizes the tiles with --gsd auto).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@handle_errors
def info(raster, tile_size, overlap, gsd, model, as_json):
    """Show RASTER's CRS, size, bands, dtype, nodata, ground GSD and the tiles a run would plan."""
    from .api import raster_info
    from .coords import crs_name
    from .gsd import ground_gsd
    from .models import resolve_gsd
    from .options import Options
    from .raster import choose_bands
    from .tiling import plan_tiles

    ri = raster_info(raster)
    opts, gsd_plan = resolve_gsd(Options(tile_size=tile_size, overlap=overlap, gsd=gsd), ri, model)
    grid = plan_tiles(ri.width, ri.height, opts.tile_size, opts.overlap)
    rec = {
        "path": str(raster), "crs": crs_name(ri.crs), "width": ri.width, "height": ri.height,
        "bands": ri.count, "colorinterp": list(ri.colorinterp), "dtype": ri.dtype, "nodata": ri.nodata,
        "mask": ri.has_mask, "resolution": list(ri.res), "bounds": list(ri.bounds),
        "ground_gsd": None if (g := ground_gsd(ri.transform, ri.crs, ri.width, ri.height)) is None else round(g, 4),
        "overviews": ri.overviews, "rgb_bands": list(choose_bands(ri)),
        "tiles": {"size": opts.tile_size, "overlap": opts.overlap, "rows": grid.n_rows, "cols": grid.n_cols,
                  "count": len(grid), "model_gsd": None if gsd_plan is None else round(gsd_plan.model_gsd, 4)},
    }
    if as_json:
        click.echo(json.dumps(rec, indent=2))
        return
    for key, value in rec.items():
        if key == "tiles":
            at = "" if gsd_plan is None else \
                f" ({tile_size} px at the model's {gsd_plan.model_gsd:g} m/px; --gsd native: as given)"
            value = (f"{value['count']} ({value['rows']} x {value['cols']}) of {value['size']} px, "
                     f"overlap {value['overlap']}{at}")
        elif key == "ground_gsd":
            value = "unknown (a CRS without ground units)" if value is None else \
                f"{value:g} m/px on the ground, at the centre"
        click.echo(f"{key:>12}: {value}")


def _model_options(fn: Callable) -> Callable:
    """The options ``edges`` and ``proposals`` share with ``segment`` (model and tiling)."""
    for opt in reversed([
        click.option("-m", "--model", default=None, show_default="bundled buildings-nano",
                     help="Weights or package.module:factory, as for segment."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option("--tile-size", default=1024, show_default=True, type=int, help="Tile size in pixels."),
        click.option("--overlap", default=128, show_default=True, type=int,
                     help="Pixels shared by neighbouring tiles."),
        click.option("--gsd", default="auto", show_default=True, metavar="auto|native|M",
                     help="Resolution, as for segment: auto cuts tiles so the network sees the model's GSD."),
        click.option("--bands", default=None, help="Bands read as R,G,B (1-based)."),
        click.option("--conf", type=float, default=None, help="Confidence threshold (default: the model's)."),
        click.option("--imgsz", type=int, default=None, help="Network input size (default: the model's)."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary."),
    ]):
        fn = opt(fn)
    return fn


@main.command()
@click.argument("raster", type=DATASET)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output GeoTIFF (.tif): uint8 edge strength, a COG with overviews on RASTER's grid.")
@_model_options
@handle_errors
def edges(raster, output, model, device, tile_size, overlap, gsd, bands, conf, imgsz, quiet):
    """Edge map of RASTER: Sobel edges of the per-pixel mask probability, tiles blended seamlessly."""
    from .api import edge_map
    from .options import Options

    options = Options(tile_size=tile_size, overlap=overlap, bands=_int_list(bands, "--bands"), device=device,
                      conf=conf, imgsz=imgsz, gsd=gsd)
    t0 = time.perf_counter()
    edge_map(raster, output, segmenter=model, options=options, progress=not quiet)
    if not quiet:
        click.echo(f"edge map in {time.perf_counter() - t0:.1f} s -> {output}", err=True)


@main.command()
@click.argument("raster", type=DATASET)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output vector file: .gpkg, .parquet, .geojson or .fgb.")
@click.option("--layer", default=None, show_default="the output file's name", help="Layer name.")
@click.option("--allow-empty", is_flag=True,
              help="No box writes an empty layer and exits 0 (default: an error, exit 3, nothing written).")
@_model_options
@handle_errors
def proposals(raster, output, layer, allow_empty, model, device, tile_size, overlap, gsd, bands, conf, imgsz, quiet):
    """Every candidate box in RASTER with score and rank, georeferenced, one per object across seams."""
    from .api import object_proposals
    from .options import Options

    options = Options(tile_size=tile_size, overlap=overlap, bands=_int_list(bands, "--bands"), device=device,
                      conf=conf, imgsz=imgsz, gsd=gsd)
    t0 = time.perf_counter()
    gdf = object_proposals(raster, output, segmenter=model, options=options, layer=layer, progress=not quiet,
                           allow_empty=allow_empty)
    if not quiet:
        click.echo(f"{len(gdf)} boxes in {time.perf_counter() - t0:.1f} s -> {output}", err=True)


@main.command()
@click.option("-o", "--output", default="sample_buildings.gpkg", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the buildings (relative to the current folder); the full path is printed.")
@click.option("--device", default="auto", show_default=True)
@handle_errors
def demo(output, device):
    """Segment the bundled sample image with the bundled building model (offline)."""
    from .api import evaluate as run_evaluate
    from .api import segment_raster
    from .samples import ATTRIBUTION, SAMPLE_IMAGE, SAMPLE_LABELS

    t0 = time.perf_counter()
    gdf = segment_raster(SAMPLE_IMAGE, device=device, output=output)
    r = run_evaluate(gdf, SAMPLE_LABELS, iou=0.5, ignore_partial=True)
    click.echo(f"Found {len(gdf)} buildings in {SAMPLE_IMAGE.name} ({time.perf_counter() - t0:.1f} s) "
               f"-> {Path(output).resolve()}\nAgainst its OpenStreetMap footprints: precision {r.precision:.2f}, "
               f"recall {r.recall:.2f}, F1@0.5 {r.f1:.2f}\n{ATTRIBUTION}")


def cleanup_options(min_area: str, max_area: str | None, simplify: str, regularize: bool,
                    fill_holes_below: str | None) -> dict:
    """Options fields of the segment command's clean-up flags (units parsed, bare numbers as before)."""
    from .options import parse_quantity

    area, unit = parse_quantity(min_area, "--min-area", ("px", "m2"), default="px")
    tol, tol_unit = parse_quantity(simplify, "--simplify", ("m", "px"), default="px")
    if unit == "px" and area != int(area):
        raise click.BadParameter(f"{min_area!r}: a pixel count is a whole number", param_hint="--min-area")
    out = dict(min_area=int(area)) if unit == "px" else dict(min_area_m2=area)
    out.update(simplify=tol) if tol_unit == "px" else out.update(simplify_m=tol)
    if max_area is not None:
        out["max_area_m2"] = parse_quantity(max_area, "--max-area", ("m2",), default="m2")[0]
    if fill_holes_below is not None:
        out["fill_holes_below_m2"] = parse_quantity(fill_holes_below, "--fill-holes-below", ("m2",), default="m2")[0]
    return dict(out, regularize=regularize)


@main.command()
@click.argument("pred", type=DATASET)
@click.argument("gt", type=DATASET)
@click.option("--iou", default=0.5, show_default=True, type=float, help="IoU for a match.")
@click.option("--raster", type=DATASET, default=None,
              help="The image PRED comes from: the reference is clipped to its valid footprint (and needed by "
                   "--by-tile, --plot, --min-ref-area in px).")
@click.option("--clip/--no-clip", default=True, show_default=True,
              help="Clip the reference to the raster's valid pixels; --no-clip counts every reference polygon "
                   "(those outside the image as misses).")
@click.option("--ignore-partial", is_flag=True,
              help="Reference polygons with partial=1 (cut by the image edge) count neither way.")
@click.option("--min-ref-area", default=None, metavar="AREA",
              help="Ignore reference polygons smaller than AREA: 20px (raster pixels; the SpaceNet 2 protocol "
                   "ignores buildings under 20 px) or 15m2 (ground square metres).")
@click.option("--by-tile", is_flag=True, help="Also print a table per tile (--tile-size squares of --raster).")
@click.option("--tile-size", default=1024, show_default=True, type=int, help="Tile size for --by-tile, pixels.")
@click.option("--by-size", is_flag=True,
              help="Also print a table per footprint size class (ground m2, --sizes): what is found of huts, "
                   "houses and large buildings.")
@click.option("--sizes", default="20,50,150,500", show_default=True, metavar="M2,...",
              help="Size class edges for --by-size, ground square metres, ascending.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PNG",
              help="Draw the imagery with TP/FP/FN outlines to this PNG (needs --raster and the [plot] extra).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--pred-layer", default=None, metavar="NAME", help="PRED's layer, for a file with several.")
@click.option("--ref-layer", default=None, metavar="NAME", help="GT's layer, for a file with several.")
@handle_errors
def evaluate(pred, gt, iou, raster, clip, ignore_partial, min_ref_area, by_tile, tile_size, by_size, sizes, plot,
             as_json, pred_layer, ref_layer):
    """Score predicted footprints PRED against reference footprints GT (any vector files)."""
    from .api import evaluate as run_evaluate
    from .api import evaluate_by_size, evaluate_by_tile, prepare_reference
    from .errors import InputError
    from .io import read_vector

    if (by_tile or plot) and raster is None:
        raise InputError(f"{'--by-tile' if by_tile else '--plot'} needs --raster (the image PRED comes from)")
    if plot is not None and plot.suffix.lower() != ".png":
        raise InputError(f"{plot}: --plot writes a PNG; name it .png")
    if plot is not None and not plot.resolve().parent.is_dir():
        raise InputError(f"{plot}: folder {plot.parent} does not exist")
    if plot is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise InputError("--plot needs matplotlib: pip install 'fastsam-geo[plot]'")
    pred = read_vector(pred, layer=pred_layer, layer_option="--pred-layer")  # each file read once
    gt = read_vector(gt, layer=ref_layer, layer_option="--ref-layer")
    kw = dict(iou=iou, ignore_partial=ignore_partial, min_ref_area=min_ref_area, raster=raster, clip=clip)
    r = run_evaluate(pred, gt, **kw)
    tiles = evaluate_by_tile(pred, gt, raster, tile_size=tile_size, **{k: v for k, v in kw.items() if k != "raster"}) \
        if by_tile else None
    classes = evaluate_by_size(pred, gt, sizes=sizes, **kw) if by_size else None
    if plot is not None:
        from . import plots

        ref, _ = prepare_reference(gt, raster=raster, clip=clip, min_ref_area=min_ref_area)
        plots.save(plots.show_evaluation(raster, pred, ref, r, ignore_partial=ignore_partial), plot)
    rec = r.as_dict()
    if as_json:
        if tiles is not None:
            rec["tiles"] = tiles.to_dict(orient="records")
        if classes is not None:
            rec["sizes"] = classes.to_dict(orient="records")
        click.echo(json.dumps(rec, indent=2))
        return
    if r.clipped:
        click.echo(f"Reference clipped to the raster's valid footprint: {r.out_of_extent} polygon(s) out of extent "
                   "not counted (--no-clip counts them).")
    else:
        click.echo("Reference not clipped " + ("(--no-clip)." if raster is not None else
                                               "(give --raster to clip it to the image)."))
    if r.below_min_area:
        click.echo(f"{r.below_min_area} reference polygon(s) under {min_ref_area} ignored.")
    for n, what in ((r.ref_without_area, "reference"), (r.pred_without_area, "prediction")):
        if n:
            click.echo(f"{n} {what} row(s) without a polygon (NULL or empty geometry, points, lines) not counted.")
    click.echo(f"TP {r.tp}  FP {r.fp}  FN {r.fn}  precision {r.precision:.6f}  recall {r.recall:.6f}  "
               f"F1 {r.f1:.6f}  mean IoU {r.mean_iou:.4f}  (IoU >= {iou:g})")
    if tiles is not None:
        click.echo(tiles.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if classes is not None:
        table = classes.assign(m2=[f"{lo:g}-{hi:g}" if hi != float("inf") else f">= {lo:g}"
                                   for lo, hi in zip(classes.min_m2, classes.max_m2)])
        scores = ["precision", "recall", "f1", "mean_iou"]
        table[scores] = table[scores].where(table.tp + table.fp + table.fn > 0)  # nothing to score: "-"
        table["precision"] = table.precision.where(table.tp + table.fp > 0)
        table["recall"] = table.recall.where(table.tp + table.fn > 0)
        click.echo(table[["m2", "tp", "fp", "fn", *scores]]
                   .to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    if plot is not None:
        click.echo(f"plot -> {plot}")


@main.command()
@click.argument("images", nargs=-1, required=True, type=DATASET)
@click.option("--labels", required=True, type=DATASET,
              help="Footprint polygons (any vector format, any CRS).")
@click.option("--labels-layer", default=None, metavar="NAME", help="LABELS' layer, for a file with several.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Model file to write (.pt); a model card MODEL.json is written beside it.")
@click.option("--base", default="yolov8n-seg.yaml", show_default=True,
              help="Architecture yaml to train from scratch (a bare name is ultralytics' own, never a file in the "
                   "current folder), or weights to fine-tune: buildings-nano (the bundled model), FastSAM-s.pt, "
                   "FastSAM-x.pt (verified, from the weights "
                   "folders) or a .pt path (code: it loads after a notice, unpickled restricted unless "
                   "FASTSAM_GEO_TRUST_WEIGHTS=1).")
@click.option("--epochs", default=100, show_default=True, type=int)
@click.option("--minutes", default=None, type=float,
              help="Train for this many minutes instead of --epochs (the schedule is fitted to the time).")
@click.option("--gsd", default="auto", show_default=True,
              help="Ground m/px the network sees: auto (the base model's, when fine-tuning one with a card; "
                   "else the imagery's own), native, or a number. Recorded in the card for segment --gsd auto.")
@click.option("--imgsz", default=512, show_default=True, type=int, help="Network input size.")
@click.option("--tile-size", default=None, type=int,
              help="Tile size in pixels at the training GSD [default: --imgsz with a GSD, else 1024 raster pixels].")
@click.option("--overlap", default=256, show_default=True, type=int, help="Training tile overlap.")
@click.option("--batch", default=8, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True)
@click.option("--val-fraction", default=0.15, show_default=True, type=float,
              help="Share of tile columns per raster held out (spatially) for validation.")
@click.option("--coarsen", default=0.0, show_default=True, type=float,
              help="Share of training tiles that also train blurred to 1.5-4x coarser imagery (for a model "
                   "that will meet coarser imagery than its training data).")
@click.option("--attribution", multiple=True, help="Data licence/attribution line for the model card.")
@handle_errors
def train(images, labels, labels_layer, output, base, epochs, minutes, gsd, imgsz, tile_size, overlap, batch, device,
          val_fraction, coarsen, attribution):
    """Train a building model on IMAGES (GeoTIFFs) and footprint LABELS, offline.

    Fine-tune the bundled model on your own area: --base buildings-nano --minutes 10."""
    from .training import train as run_train

    res = run_train(list(images), labels, output, base=base, epochs=epochs, minutes=minutes, gsd=gsd,
                    imgsz=imgsz, tile_size=tile_size, overlap=overlap, batch=batch, device=device,
                    val_fraction=val_fraction, attribution=attribution, coarsen=coarsen, labels_layer=labels_layer)
    v = res.info.get("validation", {})
    f1 = f"validation F1@0.5 {v['f1']:.3f}" if "f1" in v else "no validation split"
    click.echo(f"model -> {res.model} ({res.model.stat().st_size / 1e6:.1f} MB), card -> {res.card}; {f1}",
               err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
