"""Features: scene encoders registered by name, and the embedding cache.

Encoders are registered in torchgeo's ``models/api.py`` manner. They take uint8 RGB arrays and know
nothing of rasters.

``list_encoders()`` names them, ``encoder_info(name)`` says what one takes and gives without
loading it, ``get_encoder(name, ...)`` builds it. Any 3-band torchgeo weight is an encoder too,
by its enum name (``ResNet18_Weights.SENTINEL2_RGB_MOCO``), looked up with torchgeo's public
``get_weight``.
"""

from __future__ import annotations

from ..config import DEFAULT_ENCODER
from .base import Encoder
from .registry import EncoderInfo, encoder_info, get_encoder, list_encoders, register_encoder

# importing the encoder modules registers them (each imports torch only when built)
from . import efficientnet, gitrsclip, rcf, torchgeo_weights  # noqa: E402,F401  isort: skip

__all__ = ["DEFAULT_ENCODER", "Encoder", "EncoderInfo", "encoder_info", "get_encoder", "list_encoders",
           "register_encoder"]
