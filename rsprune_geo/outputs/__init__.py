"""What a run leaves behind.

The GeoPackage (:mod:`.geopackage`), the map (:mod:`.maps`), the HTML report and galleries
(:mod:`.report`) and the exports for data teams (:mod:`.export`).
"""

from .geopackage import check_output_path, tiles_style_qml, write_geopackage
from .maps import plot_map

__all__ = ["check_output_path", "plot_map", "tiles_style_qml", "write_geopackage"]
