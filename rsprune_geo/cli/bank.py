"""``rsprune bank``: build a prior-bank profile from labelled folders (``build``), or say what one holds (``info``)."""

from __future__ import annotations

import json

import click

from .errors import fail_cleanly
from .options import config_option, progress_json_option, quiet_option
from .progress import finish, progress_reporter


@click.group("bank")
def command() -> None:
    """Prior-bank profiles: what a run needs from a labelled bank, in one small file."""


@command.command("build")
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The profile to write (NAME.rsbank).")
@config_option("encoder")
@config_option("runtime")
@config_option("k_per_class")
@config_option("images_per_centroid")
@config_option("k")
@config_option("bank_samples")
@config_option("seed")
@config_option("cache_dir")
@click.option("--views", type=click.Choice(["1", "2", "4"]), default="1", show_default=True,
              help="Right-angle rotations each bank image is encoded in, averaged; runs with the profile use them.")
@click.option("--input-size", "input_sizes", type=click.IntRange(32, 1024), multiple=True,
              help="The encoder's input side in pixels (repeatable: the first is the profile's own, the others "
                   "share its network; default: the encoder's). Runs pick one with --input-size.")
@click.option("--source", default="", help="Where the bank comes from (a citation, a URL), stored in the profile.")
@click.option("--terms", default="", help="The bank's terms of use (its licence), stored in the profile.")
@quiet_option
@progress_json_option
@fail_cleanly
def build(folders: tuple[str, ...], output: str, encoder: str, runtime: str, k_per_class: int | None,
          images_per_centroid: int, k: int | None, bank_samples: int | None, seed: int, cache_dir: str | None,
          views: str, input_sizes: tuple[int, ...], source: str, terms: str, quiet: bool,
          progress_json: bool) -> None:
    """Build the profile of the labelled FOLDERS (ROOT/<class>/<images>) for one encoder.

    On this machine's CPU runtime: `--prior-bank OUTPUT` then selects what `--prior-bank FOLDERS`
    selects.
    """
    from ..bank.building import build_profile
    from ..bank.priorbank import CentroidSpec

    spec = CentroidSpec(None if k is not None else k_per_class, images_per_centroid, k, bank_samples, seed)
    with progress_reporter(progress_json, quiet) as on_progress:
        profile = build_profile(list(folders), output, encoder, runtime, spec, cache_dir, source, terms, on_progress,
                                int(views), input_sizes)
    finish(progress_json, {"output": output, "images": len(profile), "classes": len(profile.classes)},
           None if quiet else describe(profile.path, profile.about))


@command.command("info")
@click.argument("profile")
@click.option("--json", "as_json", is_flag=True, help="Print the profile's JSON description.")
@fail_cleanly
def info(profile: str, as_json: bool) -> None:
    """Print what PROFILE holds (a .rsbank file, or `default`: the one the package ships)."""
    from ..bank.profile import load_profile

    loaded = load_profile(profile)
    click.echo(json.dumps(loaded.about, indent=1) if as_json else describe(loaded.path, loaded.about))


def describe(path: str, about: dict) -> str:
    """A profile's description in a few lines."""
    encoder = about["encoder"]
    gsd = f"{about['gsd']:g} m/pixel" if about.get("gsd") else "no declared pixel size"
    return "\n".join([
        f"{path}: prior-bank profile {about['name']!r}",
        f"  {about['images']} images in {len(about['classes'])} classes, {gsd}",
        f"  encoder {encoder['name']} ({encoder['runtime']}), key {encoder['key']}",
        "  centroids: " + ", ".join(f"{k} {v}" for k, v in encoder["centroids"].items()),
        f"  input size: {' and '.join(str(s) for s in [encoder['input_size'], *encoder.get('sizes', {})])} px; "
        f"views: {encoder.get('views', 1)}; scene metric: "
        + (f"bank ({encoder['metric']['dims']} dimensions, shrinkage {encoder['metric']['shrinkage']:g})"
           if encoder.get("metric") else "none (the encoder's raw cosine)"),
        f"  source: {about['source']}",
        f"  terms: {about['terms'] or 'not stated'}",
    ])
