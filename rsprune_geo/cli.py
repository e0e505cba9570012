"""The ``rsprune`` command line: ``run`` and ``demo`` (thin: everything happens in the API)."""

from __future__ import annotations

import functools
import json
import sys
import traceback
from pathlib import Path

import click

from .errors import RsPruneError
from .features import DEFAULT_ENCODER, ENCODERS
from .pipeline import RunConfig, run as run_pipeline


def _fail_cleanly(func):
    """Turn user-facing errors (and unexpected ones) into one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        context = click.get_current_context()
        debug = context.find_root().params.get("debug", False)
        as_json = context.params.get("progress_json", False)

        def fail(message: str, code: int) -> None:
            if as_json:
                _json_line({"event": "error", "message": message})
            else:
                click.echo(f"Error: {message}" if code == 1 else message, err=True)
            sys.exit(code)

        try:
            return func(*args, **kwargs)
        except RsPruneError as exc:
            if debug:
                traceback.print_exc()
            fail(str(exc), 1)
        except KeyboardInterrupt:
            fail("Interrupted; no output was written.", 130)
        except Exception as exc:  # a bug, or an input we did not foresee: still one line
            if debug:
                traceback.print_exc()
            first = str(exc).splitlines()[0] if str(exc) else ""
            fail(f"unexpected {type(exc).__name__}: {first} (rerun with --debug for details)", 1)

    return wrapper


def _json_line(event: dict) -> None:
    """One JSON object per line on stderr: the machine-readable protocol of --progress-json."""
    sys.stderr.write(json.dumps(event) + "\n")
    sys.stderr.flush()


def evaluation_options() -> list:
    """Options of ``--evaluate`` and ``rsprune evaluate``: where true labels come from."""
    return [
        click.option("--labels", default=None,
                     help="True labels for --evaluate: a vector file of labelled polygons (a tile takes the label "
                          "it overlaps most), 'folders' (chip folder names) or 'column' (a tiles column)."),
        click.option("--label-column", default="label", show_default=True, help="Column holding the labels."),
        click.option("--eval-encoder", default=None,
                     help="Encoder whose space coverage and Fréchet are measured in (default: one unlike the run's)."),
    ]


def run_options(func):
    """Options shared by ``run`` and later subcommands, spelled once."""
    options = [
        click.option("--tile-size", type=int, default=256, show_default=True, help="Tile size in pixels."),
        click.option("--stride", type=int, default=None, help="Stride in pixels (default: tile size; smaller overlaps)."),
        click.option("--edge", type=click.Choice(["drop", "pad"]), default="drop", show_default=True,
                     help="Partial tiles at the raster's edge: drop them, or pad with nodata."),
        click.option("--bands", default=None, help="1-based bands read as RGB (e.g. 4,3,2) or one grey band; default: the RGB colour bands, else the first three."),
        click.option("--aoi", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Area of interest (any vector file); only tiles touching it are kept."),
        click.option("--max-nodata", type=float, default=0.25, show_default=True,
                     help="Tiles with a larger nodata fraction are dropped (status nodata)."),
        click.option("--entropy-min", type=float, default=None,
                     help="Absolute entropy threshold in bits (0-8); lower tiles are low_information."),
        click.option("--stage1", type=click.Choice(["bank", "paper"]), default=None,
                     help="Stage-1 rule. bank (default with --prior-bank): drop tiles below the entropy of every "
                          "prior-bank scene, cut within each tile's nearest scene; paper (default without): the "
                          "paper's global top --stage1-keep by entropy (D_H↑30%)."),
        click.option("--stage1-keep", type=float, default=None,
                     help="Fraction of the tiles with data that stage 1 keeps by highest entropy "
                          "(default: 1.0 under bank, i.e. no cut beyond the floor; 0.30 under paper)."),
        click.option("--plausibility-z", type=float, default=3.0, show_default=True,
                     help="bank rule: a scene's entropy floor is its median minus z robust deviations."),
        click.option("--keep", type=float, default=None,
                     help="Fraction of the tiles with data kept in the end (default: stage 1's fraction)."),
        click.option("--out-crs", default=None, help="CRS of the footprints (default: the inputs' common CRS, else EPSG:4326)."),
        click.option("--scaling", type=click.Choice(["source", "run"]), default="source", show_default=True,
                     help="Stretch non-uint8 rasters to grey levels per source, or once for the run."),
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed, recorded in the output."),
        click.option("--allow-no-crs", is_flag=True, help="Accept rasters without a CRS (footprints in pixel coordinates)."),
        click.option("--strict", is_flag=True, help="Stop at the first unusable file instead of skipping it."),
        click.option("--chips", is_flag=True, help="Inputs are image chips (PNG/JPEG/TIFF, folders too): one tile per file."),
        click.option("--prior-bank", multiple=True, type=click.Path(exists=True, file_okay=False),
                     help="Labelled scene dataset, ROOT/<class>/<images> (repeatable); enables stage 2."),
        click.option("--encoder", default=DEFAULT_ENCODER, show_default=True,
                     help="Scene encoder (`rsprune encoders` lists them)."),
        click.option("--weights", default=None, help="Local weights file (or folder, for git-rsclip) for the encoder."),
        click.option("--k-per-class", type=int, default=4, show_default=True, help="Scene centroids per prior-bank class."),
        click.option("--k", type=int, default=None, help="Total number of centroids, split over classes (overrides --k-per-class)."),
        click.option("--images-per-centroid", type=int, default=10, show_default=True,
                     help="With --k-per-class: no centroid is fitted on fewer bank images than this."),
        click.option("--bank-samples", type=int, default=None,
                     help="Fit each class on at most this many bank images (default: all of them)."),
        click.option("--match-bank-scale", is_flag=True,
                     help="Set the tile size so a tile covers the ground of one prior-bank image (needs its GSD)."),
        click.option("--quota-by", type=click.Choice(["scene", "centroid"]), default="scene", show_default=True,
                     help="Share the budget among scenes (then their centroids), or among centroids."),
        click.option("--clustering", type=click.Choice(["prior", "self"]), default="prior", show_default=True,
                     help="Assign tiles to the prior bank's centroids, or k-means on the tiles (baseline)."),
        click.option("--uniformity", type=float, default=1.0, show_default=True,
                     help="Cluster quotas: 1 = equal (water-filling), 0 = proportional to cluster size."),
        click.option("--spread", type=int, default=1, show_default=True,
                     help="Spread picks over this many distance bins per cluster (1 = centroid-first)."),
        click.option("--dedup", type=float, default=None, help="Drop near-duplicates: cosine threshold, e.g. 0.97."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                     help="Embedding and centroid cache (default ~/.cache/rsprune_geo)."),
        click.option("--device", default=None, help="Torch device for the encoder (default: cuda if present, else cpu)."),
        click.option("--batch-size", type=int, default=None, help="Tiles per encoder batch (default: the encoder's, 32)."),
        click.option("--dask-address", default=None, help="Run the per-tile work on this Dask scheduler (tcp://host:8786)."),
        click.option("--workers", type=int, default=None, help="Start a local Dask cluster of N worker processes."),
        click.option("--evaluate", is_flag=True, help="Also embed every tile and compare RS-Prune with baselines."),
        *evaluation_options(),
    ]
    return _apply(options)(func)


def _apply(options: list):
    """A decorator adding click ``options`` in their listed order."""

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(package_name="rsprune_geo")
def main(debug: bool) -> None:
    """RS-Prune for geodata: keep the informative, diverse tiles of remote-sensing imagery."""


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output GeoPackage (.gpkg).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or summary.")
@click.option("--progress-json", is_flag=True,
              help='Machine-readable progress on stderr, one JSON object a line: {"event": "progress", '
                   '"stage", "done", "total"}, then {"event": "ok", ...} or {"event": "error", "message"}.')
@run_options
@_fail_cleanly
def run(inputs, output, overwrite, quiet, progress_json, **options) -> None:
    """Tile INPUTS (rasters, globs or folders), score and select tiles, write a GeoPackage."""
    options["prior_bank"] = tuple(options["prior_bank"])
    if options["k"] is not None:
        options["k_per_class"] = None
    config = RunConfig(**options)
    on_progress = None
    if progress_json:
        def on_progress(stage, done, total):
            _json_line({"event": "progress", "stage": stage, "done": int(done), "total": int(total)})
    result = run_pipeline(list(inputs), output, config, overwrite=overwrite,
                          progress=not (quiet or progress_json), on_progress=on_progress)
    if progress_json:
        _json_line({"event": "ok", "output": str(result.output), "tiles": len(result.tiles),
                    "counts": {str(k): int(v) for k, v in result.tiles["status"].value_counts().items()}})
    elif not quiet:
        click.echo(result.summary())


@main.command()
@click.argument("run_file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the new selection here (default: replace RUN_FILE, needs --overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@click.option("--keep", type=float, required=True, help="Fraction of all tiles to keep.")
@click.option("--uniformity", type=float, default=None, help="Quota blend (default: the run's).")
@click.option("--spread", type=int, default=None, help="Distance bins per cluster (default: the run's).")
@click.option("--seed", type=int, default=None, help="Seed (default: the run's).")
@_fail_cleanly
def select(run_file, output, overwrite, keep, uniformity, spread, seed) -> None:
    """Re-select tiles of a finished stage-2 run with another keep ratio, without encoding."""
    from .reselect import reselect

    result = reselect(run_file, output, keep, uniformity, spread, seed, overwrite)
    click.echo(result.summary())


@main.command()
@click.argument("run_file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@_fail_cleanly
def report(run_file, output, overwrite) -> None:
    """Write a self-contained HTML report of a run (plots, parameters, timings, baselines)."""
    from .report import write_report

    click.echo(f"report: {write_report(run_file, output, overwrite)}")


@main.command()
@click.argument("run_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--to", "to_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for training chips of the kept tiles (resumable).")
@click.option("--format", "fmt", type=click.Choice(["tif", "png", "jpg"]), default="tif", show_default=True,
              help="GeoTIFF chips (all bands, georeferenced) or 8-bit RGB PNG/JPEG with metadata.jsonl.")
@click.option("--footprints", type=click.Path(dir_okay=False), default=None,
              help="Also write the kept footprints: .gpkg, .parquet (GeoParquet), .fgb or .geojson.")
@click.option("--status", default="kept", show_default=True, help="Which tiles to export.")
@click.option("--overwrite", is_flag=True, help="Replace an existing footprint file.")
@_fail_cleanly
def export(run_file, to_dir, fmt, footprints, status, overwrite) -> None:
    """Export a run's kept tiles as training chips and/or footprint layers."""
    from .export import export_chips, export_footprints

    if not to_dir and not footprints:
        raise RsPruneError("give --to DIR (chips) and/or --footprints FILE")
    if footprints:
        click.echo(f"footprints: {export_footprints(run_file, footprints, status, overwrite)}")
    if to_dir:
        done = export_chips(run_file, to_dir, fmt, status)
        click.echo(f"chips: {done['chips']} in {done['folder']} ({done['written']} written, "
                   f"{done['skipped']} already there)")


@main.command()
@_fail_cleanly
def encoders() -> None:
    """List the scene encoders."""
    for name, (description, _needs_bank) in ENCODERS.items():
        mark = " (default)" if name == DEFAULT_ENCODER else ""
        click.echo(f"{name:<20} {description}{mark}")
    try:
        from .features.torchgeo_weights import torchgeo_weight_names

        names = torchgeo_weight_names()
        click.echo(f"\n3-band torchgeo weights ({len(names)}):")
        for name in names:
            click.echo(f"  {name}")
    except ImportError:  # pragma: no cover
        click.echo("(torchgeo is not installed)")


@main.command()
@click.argument("run_file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Also write the evaluated run (tiles of every scene, evaluation table) here.")
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@_apply(evaluation_options())
@_fail_cleanly
def evaluate(run_file, output, overwrite, labels, label_column, eval_encoder) -> None:
    """Compare a stage-2 run with the baselines, by true labels when given.

    Reruns RUN_FILE's inputs and parameters with every tile embedded (cached embeddings are
    reused) and prints the metrics table: classes kept, label balance and junk kept by the
    true labels (--labels), coverage and Fréchet in an independent encoder's space, and the
    method's own-partition figures, marked (own). Baselines: random over the tiles with data,
    entropy only, the paper's stage 1 + random, the paper's stage 1 + RS-Prune's stage 2,
    per-cluster random, proportional quotas, self-clustering.
    """
    from dataclasses import fields

    from .outputs import read_run

    _, record = read_run(run_file)
    if not record.get("stage2"):
        raise RsPruneError(f"{run_file}: not a stage-2 run (it was made without --prior-bank)")
    known = {f.name for f in fields(RunConfig)}
    params = {k: (tuple(v) if isinstance(v, list) else v) for k, v in record["parameters"].items() if k in known}
    config = RunConfig(**{**params, "evaluate": True, "labels": labels, "label_column": label_column,
                          "eval_encoder": eval_encoder})
    inputs = [item["path"] for item in record["inputs"]]
    result = run_pipeline(inputs, output, config, overwrite=overwrite)
    click.echo(result.summary())


@main.command("labelled-pool")
@click.argument("scenes", type=click.Path(exists=True, file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the class counts, junk and layout.")
@_fail_cleanly
def labelled_pool(scenes, out_dir, seed) -> None:
    """Build a labelled benchmark pool from a scene dataset SCENES (ROOT/<class>/<images>).

    Writes OUT_DIR/bank (the first 10 images of each class), OUT_DIR/chips (10 down to 2 other
    images per class, plus 20% planted junk in chips/junk), OUT_DIR/mosaic.tif (the same tiles on
    a georeferenced grid) and OUT_DIR/labels.gpkg (each cell's true label), for
    `rsprune run ... --evaluate --labels`.
    """
    from .labelled_pool import PoolSpec, build_labelled_pool

    pool = build_labelled_pool(scenes, out_dir, PoolSpec(seed=seed))
    click.echo(f"bank:   {pool.bank} ({len(pool.classes)} classes)")
    click.echo(f"chips:  {pool.chips} ({sum(pool.counts.values())} scenes, {pool.junk} junk)")
    click.echo(f"mosaic: {pool.mosaic}")
    click.echo(f"labels: {pool.labels}")


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="demo-output", show_default=True,
              help="Folder for the demo mosaic and outputs.")
@click.option("--size", type=int, default=4096, show_default=True, help="Demo mosaic size in pixels.")
@click.option("--regenerate", is_flag=True, help="Regenerate the mosaic even if it exists.")
@_fail_cleanly
def demo(out_dir: str, size: int, regenerate: bool) -> None:
    """Generate the demo mosaic and prior bank, run both stages, evaluate, draw the map."""
    from .demo import DemoSpec, write_demo_mosaic, write_prior_bank
    from .outputs import plot_map

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mosaic = out / "demo-mosaic.tif"
    bank = out / "prior-bank"
    if regenerate or not mosaic.exists():
        click.echo(f"generating the demo mosaic ({size}x{size} px, 10 m, UTM 33N) ...")
        write_demo_mosaic(mosaic, DemoSpec(size=size))
    if regenerate or not bank.exists():
        click.echo("generating the demo prior bank (5 land-cover scenes x 12 chips) ...")
        write_prior_bank(bank)
    config = RunConfig(keep=0.15, prior_bank=(str(bank),), evaluate=True, cache_dir=str(out / "cache"))
    result = run_pipeline([str(mosaic)], out / "demo.gpkg", config, overwrite=True)
    map_png = plot_map(result.tiles, [str(mosaic)], out / "demo-map.png",
                       title="rsprune demo: tiles by status (keep 15%)")
    click.echo(result.summary())
    click.echo(f"mosaic:     {mosaic}")
    click.echo(f"prior bank: {bank}")
    click.echo(f"geopackage: {result.output}")
    click.echo(f"map:        {map_png}")


if __name__ == "__main__":  # pragma: no cover
    main()
