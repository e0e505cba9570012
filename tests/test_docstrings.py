"""The public API is documented in Google style, and the sections match the signatures."""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import pytest

import rsprune_geo

ROOT = Path(__file__).resolve().parents[1]

# What docs/python-api.md and the notebooks import, beside the package's ``__all__``.
DOCUMENTED = {
    "rsprune_geo.stages.selection": ["select_tiles"],
    "rsprune_geo.stages.clustering": ["fit_scene_centroids", "assign_to_centroids"],
    "rsprune_geo.outputs.stac": ["export_stac"],
    "rsprune_geo.outputs.export": ["export_chips", "export_footprints"],
    "rsprune_geo.features": ["list_encoders", "encoder_info", "get_encoder"],
    "rsprune_geo.fixtures.labelled_pool": ["build_labelled_pool"],
    "rsprune_geo.fixtures.demo": ["write_demo_mosaic", "write_prior_bank", "DemoSpec"],
    "rsprune_geo.reselect": ["reselect"],
    "rsprune_geo.reading.pixels": ["read_images"],
    "rsprune_geo.evaluation": ["tile_labels", "label_balance"],
    "rsprune_geo.bank.priorbank": ["find_prior_bank"],
    "rsprune_geo.outputs.maps": ["region_bounds"],
    "rsprune_geo.outputs.galleries": ["plot_gallery", "plot_scene_gallery"],
    "rsprune_geo.outputs.report": ["plot_cluster_sizes", "plot_entropy_histogram", "plot_scene_balance"],
    "rsprune_geo.loaders": ["TileDataset", "TileGeoSampler"],
}


def api() -> list[tuple[str, object]]:
    found = [(f"rsprune_geo.{name}", getattr(rsprune_geo, name)) for name in rsprune_geo.__all__]
    for module, names in DOCUMENTED.items():
        mod = importlib.import_module(module)
        found += [(f"{module}.{name}", getattr(mod, name)) for name in names]
    return found


def section(doc: str, title: str) -> list[str] | None:
    """The names a Google-style section lists (``None`` when the docstring has no such section)."""
    lines = doc.splitlines()
    if f"{title}:" not in lines:
        return None
    names = []
    for line in lines[lines.index(f"{title}:") + 1:]:
        if line and not line.startswith(" "):
            break
        match = re.match(r"^    (\*{0,2}[A-Za-z_][A-Za-z_0-9.]*)( \(.*\))?:", line)
        if match:
            names.append(match.group(1))
    return names


def parameters(func) -> list[str]:
    out = []
    for p in inspect.signature(func).parameters.values():
        if p.name in ("self", "cls"):
            continue
        out.append(("**" if p.kind is p.VAR_KEYWORD else "*" if p.kind is p.VAR_POSITIONAL else "") + p.name)
    return out


def test_section_reads_google_style():
    doc = "Summary.\n\nArgs:\n    a: one.\n        More of it.\n    **rest: the others.\n\nReturns:\n    A thing."
    assert section(doc, "Args") == ["a", "**rest"]
    assert section(doc, "Raises") is None


def test_the_documented_api_covers_what_the_docs_import():
    text = (ROOT / "docs" / "python-api.md").read_text()
    imported = {(m, n.strip()) for m, names in re.findall(r"from (rsprune_geo[\w.]*) import ([\w, ]+)", text)
                for n in names.split(",")}
    listed = {(m, n) for m, names in DOCUMENTED.items() for n in names}
    top = {("rsprune_geo", n) for n in rsprune_geo.__all__}
    assert imported - listed - top == set()


@pytest.mark.parametrize("name, obj", api(), ids=[name for name, _ in api()])
def test_public_api_docstrings_are_google_style(name, obj):
    doc = inspect.getdoc(obj) or ""
    lines = doc.splitlines()
    assert lines and lines[0].strip(), f"{name}: no docstring"
    assert len(lines) == 1 or not lines[1].strip(), f"{name}: the summary runs over one line"
    assert len(lines[0]) <= 100, f"{name}: the summary line is long"
    if inspect.isfunction(obj):
        assert section(doc, "Args") == (parameters(obj) or None), f"{name}: Args do not match the signature"
        returns = inspect.signature(obj).return_annotation
        if returns not in (None, "None", inspect.Signature.empty):
            assert section(doc, "Returns") is not None, f"{name}: no Returns section"
        for raised in section(doc, "Raises") or []:
            assert hasattr(rsprune_geo, raised) or hasattr(builtins, raised), f"{name}: raises {raised}?"
    elif inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        fields = [f.name for f in dataclasses.fields(obj)]
        if obj is rsprune_geo.RunConfig:
            # Its ~50 fields are documented by their Option (``rsprune run --help`` prints them).
            assert all(f.metadata["option"].help for f in dataclasses.fields(obj))
        else:
            assert section(doc, "Attributes") == fields, f"{name}: Attributes do not match the fields"
    elif inspect.isclass(obj) and "__init__" in vars(obj):
        assert section(doc, "Args") == parameters(obj.__init__), f"{name}: Args do not match __init__"
