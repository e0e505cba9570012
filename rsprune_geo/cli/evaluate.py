"""``rsprune evaluate``: compare a stage-2 run with the baselines; prints the metrics table."""

from __future__ import annotations

import click

from ..errors import RsPruneError
from .errors import fail_cleanly
from .options import output_option, overwrite_option, progress_json_option, run_config_options, run_file_argument
from .progress import finish, progress_reporter


@click.command("evaluate")
@run_file_argument
@output_option(required=False, help="Also write the evaluated run (tiles of every scene, evaluation table) here: a "
               "GeoPackage or a run folder.", folder=True)
@overwrite_option
@run_config_options(["labels", "label_column", "eval_encoder"])
@progress_json_option
@fail_cleanly
def command(run_file: str, output: str | None, overwrite: bool, labels: str | None, label_column: str,
            eval_encoder: str | None, progress_json: bool) -> None:
    """Compare a stage-2 run with the baselines, by true labels when given.

    Reruns RUN's inputs and parameters with every tile embedded (cached embeddings are
    reused) and prints the metrics table: classes kept, label balance and junk kept by the
    true labels (--labels), coverage and Fréchet in an independent encoder's space, and the
    method's own-partition figures, marked (own). Baselines: random over the tiles with data,
    entropy only, the paper's stage 1 + random, the paper's stage 1 + RS-Prune's stage 2,
    per-cluster random, proportional quotas, self-clustering.
    """
    from ..pipeline import run as run_pipeline
    from ..runs.runfile import read_record

    record = read_record(run_file)
    if not record.stage2:
        raise RsPruneError(f"{run_file}: not a stage-2 run (it was made without `prior_bank`)")
    config = record.config(evaluate=True, labels=labels, label_column=label_column, eval_encoder=eval_encoder)
    with progress_reporter(progress_json) as on_progress:
        result = run_pipeline(record.input_paths, output, config, overwrite=overwrite, on_progress=on_progress)
    table = result.evaluation
    finish(progress_json, {"output": str(result.output) if result.output else None,
                           "counts": result.record.counts,
                           "evaluation": table.reset_index().to_dict("records") if table is not None else None},
           result.summary())
