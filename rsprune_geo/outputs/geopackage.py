"""The run's GeoPackage: tiles, runs and a QGIS style, written atomically."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

from ..errors import OutputError
from ..runs.inputs import INPUTS_LAYER
from ..runs.vocabulary import Status
from .temporaries import owner_prefix

#: GeoPackage version QGIS 3.22's GDAL (3.6) prefers.
GPKG_VERSION = "1.2"


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse an existing output (unless ``overwrite``) or a folder we cannot write, up front."""
    out = Path(path)
    if out.suffix.lower() != ".gpkg":
        raise OutputError(f"{out}: the output must be a GeoPackage (.gpkg)")
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: the file exists; pass `overwrite` to replace it")
    if out.exists() and out.is_dir():
        raise OutputError(f"{out}: is a folder")
    if ";" in out.name:
        raise OutputError(f"{out}: GDAL cuts GeoPackage paths at ';' — choose a name without it")
    check_parent(out)
    return out


def check_parent(out: Path) -> None:
    """An :class:`OutputError` unless the folder ``out`` goes into exists and is writable."""
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{out}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: the folder {parent} is not writable")


def tiles_style_qml(column: str = "status") -> str:
    """A QGIS categorised style (QML) colouring tile footprints by ``status``."""
    categories, symbols = [], []
    for i, status in enumerate(Status):
        value, (r, g, b) = status.value, status.color
        fill_alpha = 110 if status is Status.KEPT else 60
        categories.append(f'<category render="true" symbol="{i}" value="{value}" label="{value}"/>')
        symbols.append(
            f'<symbol type="fill" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">'
            f'<layer class="SimpleFill" enabled="1" locked="0" pass="0"><Option type="Map">'
            f'<Option name="color" type="QString" value="{r},{g},{b},{fill_alpha}"/>'
            f'<Option name="outline_color" type="QString" value="{r},{g},{b},255"/>'
            f'<Option name="outline_style" type="QString" value="solid"/>'
            f'<Option name="outline_width" type="QString" value="0.3"/>'
            f'<Option name="outline_width_unit" type="QString" value="MM"/>'
            f'<Option name="style" type="QString" value="solid"/>'
            f"</Option></layer></symbol>"
        )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology">'
        f'<renderer-v2 type="categorizedSymbol" attr="{column}" symbollevels="0" '
        'enableorderby="0" forceraster="0">'
        f"<categories>{''.join(categories)}</categories>"
        f"<symbols>{''.join(symbols)}</symbols>"
        "</renderer-v2></qgis>"
    )


def write_geopackage(
    path: str | os.PathLike,
    tiles: gpd.GeoDataFrame | Iterable[gpd.GeoDataFrame],
    runs: pd.DataFrame,
    extra_layers: dict[str, pd.DataFrame] | None = None,
    overwrite: bool = False,
    inputs: Iterable[pd.DataFrame] | None = None,
) -> Path:
    """Write a run's GeoPackage atomically: a temporary file beside ``path``, then a rename.

    An interrupted write leaves no file at ``path``. The layer ``layer_styles`` holds the
    default QGIS style of ``tiles``.

    Args:
        path: the GeoPackage to write.
        tiles: footprints and every column, as one table or as parts written one after the
            other (memory holds one part).
        runs: the ``runs`` layer (the run's attributes).
        extra_layers: other tables to write, by layer name.
        overwrite: replace an existing file.
        inputs: the run's inputs in batches, when they are a layer of their own.

    Returns:
        The path written.

    Raises:
        OutputError: ``path`` exists (without ``overwrite``) or cannot be written.
    """
    out = check_output_path(path, overwrite)
    # a name GDAL takes as is, marked with its owner (a later run removes it if this one is killed)
    fd, tmp_name = tempfile.mkstemp(prefix=owner_prefix(), suffix=".tmp.gpkg", dir=out.parent)
    os.close(fd)
    os.unlink(tmp_name)  # GDAL must create the file itself
    try:
        for k, part in enumerate([tiles] if isinstance(tiles, pd.DataFrame) else tiles):
            if k == 0:
                _write_layer(part, tmp_name, layer="tiles", driver="GPKG", dataset_options={"VERSION": GPKG_VERSION},
                             layer_options={"SPATIAL_INDEX": "YES"})
            else:
                _write_layer(part, tmp_name, layer="tiles", driver="GPKG", append=True)
        _write_layer(runs, tmp_name, layer="runs", driver="GPKG")
        for name, frame in (extra_layers or {}).items():
            _write_layer(frame, tmp_name, layer=name, driver="GPKG")
        for k, frame in enumerate(inputs or ()):
            _write_layer(frame, tmp_name, layer=INPUTS_LAYER, driver="GPKG", append=k > 0)
        write_style(tmp_name)
        os.replace(tmp_name, out)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write the GeoPackage ({exc.strerror or exc})") from None
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OutputError(f"{out}: cannot write the GeoPackage ({msg})") from None
    finally:
        for leftover in (tmp_name, tmp_name + "-journal", tmp_name + "-wal", tmp_name + "-shm"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return out


def write_style(path: str | os.PathLike, layer: str = "tiles") -> None:
    """Store the default QGIS style of a tiles ``layer`` in the GeoPackage.

    The style colours tiles by status and goes in the ``layer_styles`` table, so QGIS shows the layer
    styled when it opens it.
    """
    styles = pd.DataFrame({
        "f_table_catalog": [""], "f_table_schema": [""], "f_table_name": [layer], "f_geometry_column": ["geom"],
        "styleName": ["rsprune status"], "styleQML": [tiles_style_qml()], "styleSLD": [""], "useAsDefault": [True],
        "description": ["tiles coloured by status (rsprune_geo)"], "owner": [""], "ui": [""],
        "update_time": [pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%S")],
    })
    _write_layer(styles, str(path), layer="layer_styles", driver="GPKG")


def _write_layer(frame, path, **kwargs) -> None:
    """Pyogrio's write, quiet about the missing CRS of chips in pixel coordinates."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        pyogrio.write_dataframe(frame, path, **kwargs)

