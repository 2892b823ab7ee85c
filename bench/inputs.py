"""What both sides of the benchmark run on: the model bundles, the images, the FLOP ceiling."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH_MODELS = ROOT / "var" / "bench-models"


@dataclass
class Inputs:
    """The chosen models, their FLOPs per forward pass, the images and the matmul peak."""

    models_dir: Path
    seg_key: str
    cls_keys: list[str]
    seg_flops: float
    cls_flops: list[float]
    images: list[bytes]
    peak: float


def ensure_models(models_dir: Path) -> Path:
    """The shipped bundles if there are any, else full-size random-weight ones (cached)."""
    from ml.bundle import discover_bundles, make_random_bundle

    tasks = set()
    for p in discover_bundles(models_dir):
        tasks.add(json.loads((p / "manifest.json").read_text()).get("task"))
    if {"segmentation", "classification"} <= tasks:
        return models_dir
    if len(discover_bundles(BENCH_MODELS)) >= 3:
        return BENCH_MODELS
    print(
        f"no trained bundles in {models_dir}: writing full-size random-weight bundles to "
        f"{BENCH_MODELS} (once)",
        flush=True,
    )
    BENCH_MODELS.mkdir(parents=True, exist_ok=True)
    make_random_bundle(BENCH_MODELS, "bench_seg", "attention_unet_lite", cfg={}, default=True)
    make_random_bundle(BENCH_MODELS, "bench_cnn", "simple_cnn", cfg={}, default=True)
    make_random_bundle(BENCH_MODELS, "bench_hybrid_v2", "hybrid_v2", cfg={})
    return BENCH_MODELS


def pick_models(models_dir: Path) -> dict[str, Any]:
    from ml.bundle import discover_bundles

    manifests = [
        json.loads((p / "manifest.json").read_text()) for p in discover_bundles(models_dir)
    ]

    def ordered(task: str) -> list[dict[str, Any]]:
        ms = [m for m in manifests if m.get("task") == task]
        return sorted(ms, key=lambda m: (not m.get("default"), m["key"]))

    seg = ordered("segmentation")[0]
    classifiers = ordered("classification")[:2]
    return {"segmentation": seg, "classifiers": classifiers}


REAL_SLICES = ROOT.parent / "shared" / "data" / "lumbar_mri"


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def real_pngs(n: int) -> list[bytes]:
    """``n`` real slices, taken in turn from each source (sorted, deterministic); [] when the
    data is absent. Real slices lie inside the models' applicability domain, so every model
    runs on them (phantoms are flagged as out of domain)."""
    import csv

    index = REAL_SLICES / "slices.csv"
    if not index.is_file():
        return []
    by_source: dict[str, list[str]] = {}
    with open(index, newline="") as fh:
        for r in csv.DictReader(fh):
            by_source.setdefault(r["source"], []).append(Path(r["filename"]).stem)
    picks: list[Path] = []
    sources = sorted(by_source)
    i = 0
    while len(picks) < n and any(by_source.values()):
        src = sources[i % len(sources)]
        if by_source[src]:
            stems = sorted(by_source[src])
            stem = stems[len(stems) // 2]
            by_source[src].remove(stem)
            picks.append(REAL_SLICES / f"processed_{src}" / f"{stem}.npy")
        i += 1
    return [_png(np.load(p).astype(np.uint8)) for p in picks]


def phantom_pngs(n: int) -> list[bytes]:
    from PIL import Image

    from ml.data.synthetic import make_phantom

    out = []
    for seed in range(n):
        img = np.clip(np.rint(make_phantom(seed, 256).image * 255), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def matmul_peak(seconds: float = 2.0, n: int = 1024) -> float:
    """Best float32 matmul rate (FLOP/s) this machine gives TensorFlow right now."""
    import tensorflow as tf

    a = tf.random.uniform((n, n))
    b = tf.random.uniform((n, n))
    mm = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    mm(a, b).numpy()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        for _ in range(4):
            c = mm(a, b)
        c.numpy()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
    return best


def prepare_inputs(models_dir: Path) -> Inputs:
    """Pick (or make) the models and images, and measure the matmul peak, printing each."""
    models_dir = ensure_models(models_dir.resolve())
    chosen = pick_models(models_dir)
    seg, cls = chosen["segmentation"], chosen["classifiers"]
    cls_keys = [m["key"] for m in cls]
    seg_flops = float(seg["flops"])
    cls_flops = [float(m["flops"]) for m in cls]
    images = real_pngs(12) or phantom_pngs(12)
    print(
        f"models: segmentation {seg['key']}, classifiers {', '.join(cls_keys)} (from {models_dir})",
        flush=True,
    )
    peak = matmul_peak()
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s", flush=True)
    return Inputs(
        models_dir=models_dir,
        seg_key=seg["key"],
        cls_keys=cls_keys,
        seg_flops=seg_flops,
        cls_flops=cls_flops,
        images=images,
        peak=peak,
    )
