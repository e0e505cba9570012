"""Training loaders over a run's tiles: a torch ``Dataset`` and a torchgeo ``GeoSampler``.

``TileDataset`` reads each tile's exact pixel window from its source, so a data team trains on
the kept tiles without exporting chips. ``TileGeoSampler`` yields exactly the kept footprints for
any torchgeo ``RasterDataset`` over the same rasters (torchgeo is imported only when it is used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import torch  # noqa: F401
except ImportError:
    raise ImportError("rsprune_geo.loaders (TileDataset, TileGeoSampler) needs PyTorch, which the default install "
                      "leaves out: pip install 'rsprune_geo[torch]'") from None

from .datasets import PIXEL_MODES, TileDataset, choose_tiles  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from .samplers import TileGeoSampler, footprint_boxes

__all__ = ["PIXEL_MODES", "TileDataset", "TileGeoSampler", "choose_tiles", "footprint_boxes"]


def __getattr__(name: str) -> Any:
    if name in ("TileGeoSampler", "footprint_boxes"):
        from . import samplers

        return getattr(samplers, name)
    raise AttributeError(name)
