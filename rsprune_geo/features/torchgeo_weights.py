"""Any torchgeo pretrained weight, by its enum name (e.g. ``ResNet18_Weights.SENTINEL2_RGB_MOCO``)."""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError
from .base import NetworkEncoder, file_digest, require_file, require_torch, torch_device


def torchgeo_weight_names() -> list[str]:
    """Every torchgeo weight that takes 3 bands (the RGB that rsprune feeds its encoders)."""
    from torchgeo.models import get_model_weights, list_models

    return sorted({str(weight) for model in list_models() for weight in _weights_of(model, get_model_weights)
                   if weight.meta.get("in_chans") == 3})


def _weights_of(model: str, get_model_weights) -> list:
    """The weights torchgeo lists for ``model`` (none for builders without pretrained weights)."""
    try:
        return list(get_model_weights(model))
    except (KeyError, ValueError):
        return []


def torchgeo_weight(name: str):
    """The torchgeo weight enum member called ``name`` (public ``torchgeo.models.get_weight``)."""
    require_torch(f"the torchgeo weight {name}")
    from torchgeo.models import get_weight

    try:
        return get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise InputError(f"{name}: not a torchgeo weight (see `rsprune encoders`)") from None


def hub_checkpoint_path(url: str) -> str:
    """Where torch's hub cache (``$TORCH_HOME/hub/checkpoints``) keeps the file of ``url``."""
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url.split("?")[0]))


def _builder_for(weight) -> str:
    """The torchgeo model name whose weights enum holds ``weight``."""
    from torchgeo.models import get_model_weights, list_models

    for model in list_models():
        if weight in _weights_of(model, get_model_weights):
            return model
    raise InputError(f"no torchgeo model builder for {weight}")


def _input_range(transforms) -> float:
    """The value range the weights' Normalize expects.

    1 (floats), 255 (8-bit) or 10000 (reflectance); 8-bit RGB tiles are rescaled to it.
    """
    stds = []
    for module in getattr(transforms, "modules", lambda: [])():
        std = getattr(module, "std", None)
        if std is None and hasattr(module, "flags"):
            std = module.flags.get("std")
        if std is not None:
            stds.append(float(np.max(np.asarray(std.cpu() if hasattr(std, "cpu") else std))))
    top = max(stds) if stds else 1.0
    return 1.0 if top <= 1 else (255.0 if top <= 255 else 10000.0)


class TorchgeoEncoder(NetworkEncoder):
    """A torchgeo model with pretrained weights, pooled features (``num_classes=0``).

    The state dict comes through torchgeo's own path (``weights.get_state_dict``, i.e. the torch
    hub cache) or from ``weights_file``. Missing file: an error naming where to put it.
    Inputs: 8-bit RGB rescaled to the range the weights' normalisation expects, then the
    weights' own transforms (resize, crop, normalise).
    """

    input_size = 256

    @classmethod
    def build(cls, name, weights=None, fit_images=None, seed=0, device=None, **runtime) -> TorchgeoEncoder:
        """The torchgeo weight ``name``, from ``weights`` or the torch hub cache."""
        return cls(name, weights, device, **runtime)

    def __init__(self, name: str, weights_file: str | None = None, device: str | None = None,
                 runtime: str = "auto", cache_dir: str | None = None, calibration: np.ndarray | None = None):
        import torch
        from torchgeo.models import get_model

        weight = torchgeo_weight(name)
        in_chans = weight.meta.get("in_chans")
        if in_chans != 3:
            raise InputError(f"{name} expects {in_chans} bands; rsprune feeds encoders RGB (3 bands)")
        self.name = name
        if weights_file:
            require_file(weights_file, f"weights for {name}", "check `weights`")
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
            source = weights_file
        else:
            source = hub_checkpoint_path(weight.url)
            require_file(
                source, f"weights for {name}",
                f"download {weight.url} there on a connected machine, or pass `weights` FILE",
            )
            state = weight.get_state_dict(progress=False)
        model = get_model(_builder_for(weight), weights=None, in_chans=3, num_classes=0)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shapes that do not fit
            raise InputError(f"{source}: weights do not fit {name} ({str(exc).splitlines()[1:2]})") from None
        head = {k for k in list(missing) + list(unexpected) if k.split(".")[0] in {"fc", "head", "classifier"}}
        if set(missing) - head or set(unexpected) - head:
            raise InputError(
                f"{source}: does not fit {name} ({len(missing)} missing keys, e.g. {list(missing)[:2]})"
            )
        self.device = torch_device(device)
        self.transforms = weight.transforms
        self.value_range = _input_range(weight.transforms)
        with torch.inference_mode():
            probe = model.eval()(torch.zeros(1, 3, 224, 224))
        self.dim = int(probe.flatten(1).shape[1])
        self._digest = file_digest(source)
        self.model = model
        self._setup_runtime(model, runtime, cache_dir, calibration)

    def _state_digest(self) -> str:
        return self._digest

    def _prepare(self, images: np.ndarray) -> np.ndarray:
        """8-bit RGB rescaled to the weights' range, then the weights' own transforms (on the CPU)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        x = x * (self.value_range / 255.0)
        with torch.inference_mode():
            return self.transforms(x).numpy()
