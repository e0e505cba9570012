"""``rsprune demo``: generate the demo mosaic and prior bank, run both stages; prints the summary."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from ..config import SUGGESTED_KEEP, RunConfig
from ..pipeline import run as run_pipeline
from .errors import fail_cleanly
from .options import progress_json_option
from .progress import finish, progress_reporter


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="demo-output", show_default=True,
              help="Folder for the demo mosaic and outputs.")
@click.option("--size", type=int, default=4096, show_default=True, help="Demo mosaic size in pixels.")
@click.option("--regenerate", is_flag=True, help="Regenerate the mosaic even if it exists.")
@progress_json_option
@fail_cleanly
def command(out_dir: str, size: int, regenerate: bool, progress_json: bool) -> None:
    """Generate the demo mosaic (with its true land cover) and prior bank.

    Run both stages, evaluate against the truth and the baselines (with the ``torch`` extra: the
    evaluation's independent encoder is torchgeo's RCF), draw the map (with the ``plots`` extra).
    """
    from ..fixtures.demo import DemoSpec, write_demo_mosaic, write_prior_bank
    from ..outputs.maps import plot_map

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mosaic = out / "demo-mosaic.tif"
    labels = out / "demo-labels.gpkg"  # what the generator made: the land covers, cloud, open water, nodata
    bank = out / "prior-bank"
    if regenerate or not mosaic.exists() or not labels.exists():
        click.echo(f"generating the demo mosaic ({size}x{size} px, 10 m, UTM 33N) and its true land cover ...",
                   err=progress_json)
        write_demo_mosaic(mosaic, DemoSpec(size=size), labels=labels)
    if regenerate or not bank.exists():
        click.echo("generating the demo prior bank (5 land-cover scenes x 12 chips) ...", err=progress_json)
        write_prior_bank(bank)
    evaluate = importlib.util.find_spec("torch") is not None
    config = RunConfig(keep=SUGGESTED_KEEP, prior_bank=(str(bank),), evaluate=evaluate,
                       labels=str(labels) if evaluate else None, cache_dir=str(out / "cache"))
    with progress_reporter(progress_json) as on_progress:
        result = run_pipeline([str(mosaic)], out / "demo.gpkg", config, overwrite=True, on_progress=on_progress)
    map_png: Path | None = out / "demo-map.png"
    if importlib.util.find_spec("matplotlib") is not None:
        plot_map(result.tiles, [str(mosaic)], map_png, title="rsprune demo: tiles by status (keep 15%)",
                 record=result.record)
        map_line = str(map_png)
    else:  # the run stands without the plots extra; only its picture is skipped
        map_png, map_line = None, "skipped: the map needs matplotlib: pip install 'rsprune_geo[plots]'"
    finish(progress_json, {"output": str(result.output), "mosaic": str(mosaic), "prior_bank": str(bank),
                           "labels": str(labels), "map": str(map_png) if map_png else None,
                           "counts": result.record.counts},
           f"{result.summary()}\n"
           + ("" if evaluate else "evaluation: skipped: it needs PyTorch: pip install 'rsprune_geo[torch]'\n")
           + f"mosaic:     {mosaic}\ntruth:      {labels}\nprior bank: {bank}\n"
           f"geopackage: {result.output}\n"
           f"map:        {map_line}")
