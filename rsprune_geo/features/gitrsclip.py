"""Git-RSCLIP (the paper's encoder: SigLIP trained on Git-10M) through Hugging Face transformers."""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError
from .base import NetworkEncoder, file_digest, require_torch, torch_device, torch_network, unit_range
from .registry import register_encoder

#: Hugging Face repositories of the two Git-RSCLIP sizes.
GIT_RSCLIP_REPOS = {"git-rsclip": "lcybuaa/Git-RSCLIP", "git-rsclip-base": "lcybuaa/Git-RSCLIP-base"}


def hf_cache_dir(repo: str) -> str:
    """Where the Hugging Face hub cache keeps ``repo``."""
    home = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub"
    )
    return os.path.join(home, "models--" + repo.replace("/", "--"))


def _hub_snapshot(repo: str) -> str:
    """The local snapshot folder of ``repo`` in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, "config.json")
    return os.path.dirname(found) if isinstance(found, str) else hf_cache_dir(repo)


def weights_folder_digest(folder: str) -> str:
    """A digest of a model folder's config and weights files (names and contents).

    The same in every process, so cached embeddings and centroids are found again.
    """
    import hashlib

    h = hashlib.blake2b(digest_size=6)
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and name.endswith((".json", ".safetensors", ".bin", ".pt")):
                h.update(f"{name}:{file_digest(path)}\n".encode())
    else:
        h.update(folder.encode())
    return h.hexdigest()


@register_encoder("git-rsclip-base", "Git-RSCLIP base, from the Hugging Face cache or `weights`",
                  input_size=256, dim=None, weights="folder", torch=True)
@register_encoder("git-rsclip", "Git-RSCLIP large (the paper's), from the Hugging Face cache or `weights`",
                  input_size=256, dim=None, weights="folder", torch=True)
class GitRSCLIPEncoder(NetworkEncoder):
    """Git-RSCLIP image features (``get_image_features``), 256² input, mean/std 0.5.

    Loads offline only: from the local Hugging Face cache, or from ``weights`` (a folder
    holding ``config.json`` and the weights, as ``save_pretrained`` writes it).
    """

    input_size = 256

    @classmethod
    def build(cls, name, weights=None, fit_images=None, seed=0, device=None, **runtime) -> GitRSCLIPEncoder:
        """``git-rsclip`` or ``git-rsclip-base``, from ``weights`` or the Hugging Face cache."""
        return cls(name, weights, device, **runtime)

    def __init__(self, name: str = "git-rsclip", weights: str | None = None, device: str | None = None,
                 runtime: str = "auto", cache_dir: str | None = None, calibration: np.ndarray | None = None):
        require_torch(f"the {name} encoder")
        import torch
        from transformers import AutoModel

        repo = GIT_RSCLIP_REPOS[name]
        self.name = name
        location = weights or repo
        try:
            model = AutoModel.from_pretrained(location, local_files_only=True)
        except OSError:
            where = weights or hf_cache_dir(repo)
            raise InputError(
                f"{name} weights not found at {where}; on a connected machine run "
                f"`huggingface-cli download {repo}` and copy the cache there, or pass `weights` DIR"
            ) from None
        if not hasattr(model, "get_image_features"):
            raise InputError(f"{location}: not a SigLIP/CLIP model (no image tower)")
        self.device = torch_device(device)
        vision = getattr(model.config, "vision_config", model.config)
        self.input_size = int(getattr(vision, "image_size", 256))
        network = torch_network(model.eval(), _image_features)
        with torch.inference_mode():
            probe = network(torch.zeros(1, 3, self.input_size, self.input_size))
        self.dim = int(probe.shape[1])
        self._digest = str(getattr(model.config, "_commit_hash", None) or weights_folder_digest(
            weights or _hub_snapshot(repo)))
        self._setup_runtime(network, runtime, cache_dir, calibration)

    def _state_digest(self) -> str:
        return self._digest

    def _prepare(self, images: np.ndarray) -> np.ndarray:
        return unit_range(images)  # the processor's mean and std of 0.5


def _image_features(model, pixels):
    """The image tower's pooled features: (N, 3, S, S) in [-1, 1] → (N, D)."""
    out = model.get_image_features(pixel_values=pixels)
    return out if hasattr(out, "shape") else out.pooler_output
