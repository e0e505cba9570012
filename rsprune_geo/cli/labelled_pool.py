"""``rsprune labelled-pool``: build a labelled benchmark pool from a scene dataset; prints its parts."""

from __future__ import annotations

import click

from .errors import fail_cleanly
from .options import progress_json_option
from .progress import finish


@click.command("labelled-pool")
@click.argument("scenes", type=click.Path(exists=True, file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the class counts, junk and layout.")
@progress_json_option
@fail_cleanly
def command(scenes: str, out_dir: str, seed: int, progress_json: bool) -> None:
    """Build a labelled benchmark pool from a scene dataset SCENES (ROOT/<class>/<images>).

    Writes OUT_DIR/bank (the first 10 images of each class), OUT_DIR/chips (10 down to 2 other
    images per class, plus 20% planted junk in chips/junk), OUT_DIR/mosaic.tif (the same tiles on
    a georeferenced grid) and OUT_DIR/labels.gpkg (each cell's true label), for
    `rsprune run ... --evaluate --labels`.
    """
    from ..fixtures.labelled_pool import PoolSpec, build_labelled_pool

    pool = build_labelled_pool(scenes, out_dir, PoolSpec(seed=seed))
    finish(progress_json, {"bank": str(pool.bank), "chips": str(pool.chips), "mosaic": str(pool.mosaic),
                           "labels": str(pool.labels), "classes": len(pool.classes), "junk": pool.junk},
           f"bank:   {pool.bank} ({len(pool.classes)} classes)\n"
           f"chips:  {pool.chips} ({sum(pool.counts.values())} scenes, {pool.junk} junk)\n"
           f"mosaic: {pool.mosaic}\nlabels: {pool.labels}")
