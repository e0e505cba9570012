"""``rsprune options``: every run parameter with its default, range and help (``--json`` for tools)."""

from __future__ import annotations

import json

import click

from .errors import fail_cleanly


@click.command("options")
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON (what the QGIS plugin's forms read).")
@fail_cleanly
def command(as_json: bool) -> None:
    """List the run parameters: flag, default, range or choices, help."""
    from .. import __version__
    from ..config import describe_range, option_schema
    from ..features import list_encoders
    from ..progress import STAGES
    from ..runs.vocabulary import Status

    items = option_schema()
    statuses = [{"value": s.value, "color": list(s.color), "pruned": s.pruned, "description": s.description}
                for s in Status]
    schema = {"version": 1, "package_version": __version__, "encoders": list_encoders(), "statuses": statuses,
              "stages": STAGES, "options": items}
    if as_json:
        click.echo(json.dumps(schema, indent=1, ensure_ascii=False))
        return
    for item in items:
        if not item["flag"]:
            continue
        limits = ", ".join(item["choices"]) if item["choices"] else ""
        if item["low"] is not None or item["high"] is not None:
            from ..config import Option

            limits = describe_range(Option("", low=item["low"], high=item["high"], low_open=item["low_open"]))
        click.echo(f"{item['flag']:<24} default {item['default']!s:<10} {limits}")
