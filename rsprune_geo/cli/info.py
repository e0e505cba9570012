"""``rsprune info``: what a run holds (GeoPackage or run folder); prints counts, parameters, inputs and versions."""

from __future__ import annotations

import json

import click

from .errors import fail_cleanly
from .options import cli_message, progress_json_option, run_file_argument
from .progress import finish


@click.command("info")
@run_file_argument
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@progress_json_option
@fail_cleanly
def command(run_file: str, as_json: bool, progress_json: bool) -> None:
    """Print what RUN holds: tiles per status, CRS, parameters, inputs, stages, versions."""
    from ..runs.runfile import describe_run

    info = describe_run(run_file)
    if progress_json:  # for tools: the run checked, its counts as the last JSON line on stderr
        finish(True, {"file": info["file"], "tiles": info["tiles"], "counts": info["counts"]})
        return
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    total = max(info["tiles"], 1)
    lines = [f"{info['file']}: run {info['run_id']} of {info['created']}"
             + (f" (re-selected from {info['reselected_from']})" if info["reselected_from"] else ""),
             f"tiles: {info['tiles']}  crs: {info['crs']}  layers: {', '.join(info['layers'])}"]
    lines += [f"  {status:<16} {n:>8}  {100 * n / total:5.1f}%" for status, n in info["counts"].items()]
    stage1, stage2 = info["stage1"], info["stage2"]
    if stage1:
        lines.append(f"stage 1: rule {stage1['rule']}")
    if stage2:
        lines.append(f"stage 2: encoder {stage2['encoder']} ({stage2['encoder_runtime']}), "
                     f"{stage2['n_centroids']} centroids")
    lines.append("parameters:")
    lines += [f"  {key} = {json.dumps(value)}" for key, value in sorted(info["parameters"].items())
              if value not in (None, [], "")]
    lines.append("inputs:")
    lines += [f"  {item['path']} ({item.get('width')}x{item.get('height')} px, {item.get('dtype')}, "
              f"bands {item.get('bands')}, {item.get('crs')})"
              + (f", STAC item {item['stac_item']}" if item.get("stac_item") else "") for item in info["inputs"]]
    if info["input_count"] > len(info["inputs"]):
        lines.append(f"  … and {info['input_count'] - len(info['inputs'])} more")
    lines += [f"warning: {cli_message(w)}" for w in info["warnings"]]  # parameters named as flags, as run said them
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    click.echo("\n".join(lines))
