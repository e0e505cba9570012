"""``rsprune encoders``: list the scene encoders and the 3-band torchgeo weights."""

from __future__ import annotations

import click

from ..config import DEFAULT_ENCODER
from .errors import fail_cleanly
from .options import cli_message


@click.command("encoders")
@fail_cleanly
def command() -> None:
    """List the scene encoders."""
    from ..features import encoder_info, list_encoders

    for name in list_encoders():
        info = encoder_info(name)
        mark = " (default)" if name == DEFAULT_ENCODER else ""
        others = [str(side) for side in info.sizes if side != info.input_size]
        size = f"{info.input_size}px" + (f" (or {', '.join(others)})" if others else "") + (
            f", {info.dim}-d" if info.dim else "")
        click.echo(f"{name:<20} {cli_message(info.description)} [{size}]{mark}")
    try:
        from ..features.torchgeo_weights import torchgeo_weight_names

        names = torchgeo_weight_names()
        click.echo(f"\nany 3-band torchgeo weight by name ({len(names)}):")
        for name in names:
            click.echo(f"  {name}")
    except ImportError:  # pragma: no cover
        click.echo("(torchgeo is not installed)")
