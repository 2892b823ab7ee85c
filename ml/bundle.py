"""Model bundles: ``models/<key>/`` = manifest.json + model.weights.h5 (+ README.md, plots/).

A bundle is written atomically (a temporary sibling folder, then a rename), its weights are
stored compactly (float16 where the metrics stay the same) and loading verifies their sha256
against the manifest, so a truncated or swapped weights file fails with a clear
:class:`BundleError` instead of producing silent garbage.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml import RESEARCH_USE_NOTICE
from ml.fsutil import write_atomic

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
WEIGHTS = "model.weights.h5"
MODEL_CARD = "README.md"
REPORT = "REPORT.md"
REQUIRED_KEYS = (
    "key",
    "task",
    "version",
    "architecture",
    "config",
    "input",
    "outputs",
    "label_provenance",
    "weights",
)
TASKS = ("segmentation", "classification")
AS_STATUS_NAMES = ["negative", "positive"]
STAGE_NAMES = ["Normal", "Early", "Moderate", "Advanced"]
INTENDED_USE = (
    "Research on explainable deep learning for ankylosing spondylitis on sagittal spine MRI. "
    + RESEARCH_USE_NOTICE
)
LABEL_DESCRIPTIONS = {
    "feature_rule_v2": (
        "AS status and stage were assigned by a feature-based labelling rule (v2) fitted on four "
        "image statistics, not by clinicians: the model learns that rule, not the disease."
    ),
    "feature_rule_v1": (
        "AS status and stage were assigned by the design's global feature-rule thresholds (v1) "
        "on image statistics, not by clinicians: the model learns that rule, not the disease."
    ),
    "clinical": (
        "AS status and stage come from the data owner's CSV (clinical labels); their meaning and "
        "quality are those of that source."
    ),
    "mixed": "Labels come from more than one source (see the dataset's label_source column).",
}
MASK_DESCRIPTIONS = {
    "expert": "Target masks are expert manual segmentations (vertebral bodies or discs).",
    "roi": "Target masks are lumbosacral region boxes derived from annotated level points.",
    "mixed": (
        "Target masks are expert manual segmentations where a slice has them, otherwise "
        "lumbosacral region boxes derived from annotated level points."
    ),
}


class BundleError(Exception):
    """A bundle is missing, malformed, or its weights do not match the manifest."""


@dataclass
class Bundle:
    """A loaded bundle: its key, folder, manifest, Keras model and task."""

    key: str
    path: Path
    manifest: dict[str, Any]
    model: Any
    task: str


# --------------------------------------------------------------------------- hashing / weights


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Keras also writes a compiled model's optimizer state into .weights.h5; bundles leave it out.
SKIPPED_H5_GROUPS = ("optimizer",)


def _copy_h5(src, dst, dtype, root: bool = False) -> None:
    """Copy an h5 tree, storing float32 datasets as ``dtype`` (attributes kept)."""
    import h5py

    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for name, item in src.items():
        if root and name in SKIPPED_H5_GROUPS:
            continue
        if isinstance(item, h5py.Group):
            _copy_h5(item, dst.create_group(name), dtype)
        else:
            data = item[()]
            if isinstance(data, np.ndarray) and data.dtype == np.float32:
                data = data.astype(dtype)
            # gzip + byte shuffle saves ~15 % on float16 weights; h5py reads it back transparently.
            big = isinstance(data, np.ndarray) and data.size >= 4096
            options = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if big else {}
            ds = dst.create_dataset(name, data=data, **options)
            for key, value in item.attrs.items():
                ds.attrs[key] = value


def save_weights(model, path: str | Path, storage_dtype: str = "float16") -> None:
    """Write ``model``'s weights as a Keras ``.weights.h5`` file, floats as ``storage_dtype``.

    Only the model's own variables are kept (no optimizer state).

    Keras' ``load_weights`` casts each stored array to its variable's dtype on assignment, so a
    float16 file loads into the float32 model unchanged in structure.
    """
    import h5py

    path = Path(path)
    if storage_dtype not in ("float16", "float32"):
        raise ValueError("storage_dtype must be float16 or float32")
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / "raw.weights.h5"
        model.save_weights(raw)
        dtype = np.float16 if storage_dtype == "float16" else np.float32
        with h5py.File(raw, "r") as src, h5py.File(path, "w") as dst:
            _copy_h5(src, dst, dtype, root=True)


def round_weights(model, storage_dtype: str = "float16") -> list[np.ndarray]:
    """Round ``model``'s float weights through ``storage_dtype`` in place; return the originals.

    Evaluating after this shows what a float16 bundle will score.
    """
    original = model.get_weights()
    if storage_dtype == "float32":
        return original
    model.set_weights(
        [w.astype(storage_dtype).astype(w.dtype) if w.dtype == np.float32 else w for w in original]
    )
    return original


# --------------------------------------------------------------------------- manifest


def label_provenance(
    label_source: str,
    rule_version: str | None = None,
    mask_kind: str | None = None,
) -> dict[str, Any]:
    """The manifest's ``label_provenance`` block for a dataset's label source."""
    description = LABEL_DESCRIPTIONS.get(label_source, f"Labels from source {label_source!r}.")
    block: dict[str, Any] = {
        "label_source": label_source,
        "description": description,
        "rule_version": rule_version,
        "research_use_only": True,
    }
    if mask_kind:
        block["mask_kind"] = mask_kind
        block["mask_description"] = MASK_DESCRIPTIONS.get(mask_kind, mask_kind)
    return block


def new_manifest(
    *,
    key: str,
    architecture: str,
    cfg: dict[str, Any] | None = None,
    display_name: str | None = None,
    version: str = "1.0.0",
    provenance: dict[str, Any] | None = None,
    default: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A manifest skeleton for ``architecture`` with everything derivable from the code.

    ``write_bundle`` fills ``parameters``, ``flops`` and ``weights.sha256``; training adds
    ``training``, ``dataset`` and ``metrics`` (passed here as ``extra`` or set later).
    """
    from ml.models import attention_layers, task_of, weights_init
    from ml.preprocessing import PREPROCESSING_SPEC

    cfg = dict(cfg or {})
    task = task_of(architecture)
    size = int(cfg.get("input_size", 256))
    outputs: dict[str, Any]
    if task == "classification":
        outputs = {"binary_output": list(AS_STATUS_NAMES), "stage_output": list(STAGE_NAMES)}
    else:
        outputs = {"mask": {"threshold": 0.5}}
    manifest: dict[str, Any] = {
        "key": key,
        "display_name": display_name or key,
        "task": task,
        "version": version,
        "architecture": architecture,
        "config": cfg,
        "parameters": None,
        "flops": None,
        "input": {
            "shape": [size, size, 1],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "preprocessing": PREPROCESSING_SPEC,
        },
        "outputs": outputs,
        "label_provenance": provenance or label_provenance("feature_rule_v2"),
        "training": None,
        "dataset": None,
        "metrics": {},
        "gradcam_layer": None,
        "attention_layers": attention_layers(architecture, cfg),
        "intended_use": INTENDED_USE,
        "weights": {"file": WEIGHTS, **weights_init(architecture, cfg)},
        "default": bool(default),
        "created": _dt.date.today().isoformat(),
    }
    manifest.update(extra)
    return manifest


def validate_manifest(manifest: Any, where: str = "manifest") -> dict[str, Any]:
    """Check the keys every consumer relies on; raise :class:`BundleError` naming what is wrong."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{where}: missing keys {', '.join(missing)}")
    if manifest["task"] not in TASKS:
        raise BundleError(f"{where}: task must be one of {TASKS}, got {manifest['task']!r}")
    weights = manifest["weights"]
    if not isinstance(weights, dict) or not weights.get("file"):
        raise BundleError(f"{where}: weights.file is missing")
    from ml.models import ARCHITECTURES, task_of

    if manifest["architecture"] not in ARCHITECTURES:
        raise BundleError(f"{where}: unknown architecture {manifest['architecture']!r}")
    if task_of(manifest["architecture"]) != manifest["task"]:
        raise BundleError(
            f"{where}: architecture {manifest['architecture']} is not {manifest['task']}"
        )
    return manifest


def read_manifest(bundle_dir: str | Path) -> dict[str, Any]:
    """Read and validate ``bundle_dir/manifest.json`` (no model is built)."""
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: no {MANIFEST} (not a model bundle)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc})") from exc
    return validate_manifest(manifest, str(path))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps_manifest(manifest: dict[str, Any]) -> str:
    """Stable, human-readable JSON for a manifest."""
    return json.dumps(manifest, indent=2, default=_json_default, allow_nan=False) + "\n"


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically (see :func:`ml.fsutil.write_atomic`)."""
    write_atomic(path, text.encode("utf-8"))


def update_manifest(bundle_dir: str | Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into a bundle's manifest (top-level keys) and rewrite it atomically.

    The weights file is untouched, and its hash is re-checked so the result stays loadable.
    """
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    _verify_weights(bundle_dir, manifest)
    manifest.update(updates)
    validate_manifest(manifest)
    write_text_atomic(bundle_dir / MANIFEST, dumps_manifest(manifest))
    return manifest


# --------------------------------------------------------------------------- write / load


def write_bundle(
    model,
    out_dir: str | Path,
    manifest: dict[str, Any],
    storage_dtype: str = "float16",
    files: dict[str, str | Path | bytes] | None = None,
) -> Path:
    """Write a bundle folder atomically and return its path.

    Args:
        model: the trained Keras model.
        out_dir: the bundle folder (``models/<key>``); replaced whole if it exists.
        manifest: manifest dict (see :func:`new_manifest`); ``parameters``, ``flops``,
            ``gradcam_layer`` (classifiers) and ``weights`` (file, sha256, storage_dtype) are
            filled here.
        storage_dtype: ``float16`` (compact) or ``float32``.
        files: extra files to include, relative name -> source path or bytes
            (e.g. ``plots/curves.png``); README.md (model card) and REPORT.md (when the manifest
            has metrics) are rendered from the final manifest unless given here.
    """
    from ml.models import count_flops, gradcam_layer

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(dumps_manifest(manifest))  # a deep, JSON-clean copy
    manifest["parameters"] = int(model.count_params())
    if not manifest.get("flops"):
        manifest["flops"] = count_flops(model)
    if manifest.get("task") == "classification" and not manifest.get("gradcam_layer"):
        manifest["gradcam_layer"] = gradcam_layer(manifest["architecture"], model)
    manifest.setdefault("created", _dt.date.today().isoformat())
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        weights_path = tmp / WEIGHTS
        save_weights(model, weights_path, storage_dtype)
        weights = dict(manifest.get("weights") or {})
        weights.update(
            file=WEIGHTS,
            sha256=sha256_file(weights_path),
            storage_dtype=storage_dtype,
            bytes=weights_path.stat().st_size,
        )
        manifest["weights"] = weights
        validate_manifest(manifest)
        files = dict(files or {})
        # The model card (and the report, once there are metrics) describe the final manifest.
        from ml.evaluation.report import render_model_card, render_report

        files.setdefault(MODEL_CARD, render_model_card(manifest).encode())
        if manifest.get("metrics"):
            files.setdefault(REPORT, render_report(manifest).encode())
        for name, source in files.items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes):
                target.write_bytes(source)
            else:
                shutil.copyfile(source, target)
        (tmp / MANIFEST).write_text(dumps_manifest(manifest), encoding="utf-8")
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "wrote bundle %s (%s weights, %d parameters)",
        out_dir,
        storage_dtype,
        manifest["parameters"],
    )
    return out_dir


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``tmp``; the old bundle survives until the new one is in place."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _verify_weights(bundle_dir: Path, manifest: dict[str, Any]) -> Path:
    weights = manifest["weights"]
    path = bundle_dir / weights["file"]
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: weights file {weights['file']} is missing")
    expected = weights.get("sha256")
    if not expected:
        raise BundleError(f"{bundle_dir}: manifest has no weights.sha256 to verify against")
    actual = sha256_file(path)
    if actual != expected:
        raise BundleError(
            f"{bundle_dir}: weights file {weights['file']} does not match the manifest "
            f"(sha256 {actual[:12]}... != expected {expected[:12]}...); the bundle is corrupt "
            "or was modified"
        )
    return path


def build_for_manifest(manifest: dict[str, Any]):
    """Build the (randomly initialised) model a manifest describes."""
    from ml.models import build_model

    cfg = dict(manifest.get("config") or {})
    if cfg.get("backbone_weights"):
        # The bundle's own weights replace any initialisation; the file may not exist here.
        cfg["backbone_weights"] = None
    return build_model(manifest["architecture"], cfg)


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Load a bundle folder: validate the manifest, verify the weights' sha256, build, load.

    Raises:
        BundleError: manifest missing/invalid, weights missing, hash mismatch or unloadable.
    """
    path = Path(path)
    manifest = read_manifest(path)
    weights_path = _verify_weights(path, manifest) if verify else path / manifest["weights"]["file"]
    try:
        model = build_for_manifest(manifest)
    except (ValueError, TypeError, KeyError) as exc:
        raise BundleError(f"{path}: cannot build {manifest['architecture']}: {exc}") from exc
    try:
        model.load_weights(weights_path)
    except Exception as exc:  # h5py/Keras raise many types for a bad file
        raise BundleError(f"{path}: weights do not load into the model: {exc}") from exc
    return Bundle(
        key=manifest["key"], path=path, manifest=manifest, model=model, task=manifest["task"]
    )


def discover_bundles(models_dir: str | Path) -> list[Path]:
    """Folders directly under ``models_dir`` that hold a manifest, sorted by name."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    return sorted(
        p
        for p in models_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()
    )


# --------------------------------------------------------------------------- test bundles

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "attention_unet": {"input_size": 64, "base_filters": 4},
    "attention_unet_lite": {"input_size": 64, "base_filters": 4},
    "simple_cnn": {"input_size": 64, "filters": [4, 8, 8], "dense_units": 8},
    "stats_cnn": {"input_size": 64, "filters": [4, 4, 8, 8], "dense_units": 8},
    "ordinal_cnn": {
        "input_size": 64,
        "filters": [4, 4, 8, 8],
        "appearance_units": 4,
        "dense_units": [8],
    },
    "harmonized_ordinal": {
        "input_size": 64,
        "filters": [4, 4, 8, 8],
        "appearance_units": 4,
        "dense_units": [8],
        "max_refs": 32,
    },
    "hybrid_v1": {
        "input_size": 64,
        "backbone": "tiny",
        "tiny_filters": [4, 8, 16],
        "sequence": [2, 8],
        "key_dim": 4,
        "ff_dim": 8,
        "dense_units": 8,
    },
    "hybrid_v2": {
        "input_size": 64,
        "backbone": "tiny",
        "tiny_filters": [4, 8, 16],
        "dense_units": [16, 8],
        "dropouts": [0.1, 0.1],
    },
    "hybrid_v3": {
        "input_size": 64,
        "backbone": "tiny",
        "tiny_filters": [4, 8, 16],
        "token_dim": 8,
        "key_dim": 4,
        "ff_dim": 8,
        "dense_units": 8,
    },
}


def make_random_bundle(
    out_dir: str | Path,
    key: str,
    architecture: str,
    cfg: dict[str, Any] | None = None,
    task: str | None = None,
    default: bool = False,
    label_source: str = "feature_rule_v2",
    seed: int = 0,
) -> Path:
    """Write a tiny random-weight bundle for tests (API, registry, explanations).

    Args:
        out_dir: the models folder (bundle goes to ``out_dir/key``), or the bundle folder itself
            when its name already is ``key``.
        key: registry key.
        architecture: one of ``ml.models.ARCHITECTURES``.
        cfg: builder config; ``None`` picks a tiny one (64x64 input) from :data:`TINY_CONFIGS`.
        task: checked against the architecture's task when given.
        default: mark as the registry default for its task.
        label_source: label provenance to record (``clinical`` for provenance tests).
        seed: weight initialisation seed.

    Returns:
        The bundle folder.
    """
    import keras

    from ml.models import build_model, task_of

    if task is not None and task != task_of(architecture):
        raise ValueError(f"{architecture} is a {task_of(architecture)} model, not {task}")
    cfg = dict(TINY_CONFIGS[architecture] if cfg is None else cfg)
    keras.utils.set_random_seed(seed)
    model = build_model(architecture, cfg)
    out_dir = Path(out_dir)
    bundle_dir = out_dir if out_dir.name == key else out_dir / key
    manifest = new_manifest(
        key=key,
        architecture=architecture,
        cfg=cfg,
        display_name=f"{key} (random test weights)",
        version="0.0.1",
        provenance=label_provenance(
            label_source,
            rule_version="v2" if label_source == "feature_rule_v2" else None,
            mask_kind="expert" if task_of(architecture) == "segmentation" else None,
        ),
        default=default,
        training={"note": "random weights for tests; never trained", "epochs_run": 0},
        dataset=None,
        metrics={},
    )
    return write_bundle(model, bundle_dir, manifest, storage_dtype="float16")


def repack_bundle(path: str | Path) -> Path:
    """Rewrite a bundle's weights in the current compact format (no optimizer state, gzip).

    The weights' values do not change (float16 values round-trip exactly through the float32
    model); the hash is updated, other files and the manifest's contents are kept, and
    README.md / REPORT.md are rendered again from the manifest.
    """
    path = Path(path)
    bundle = load_bundle(path)
    manifest = dict(bundle.manifest)
    storage = manifest["weights"].get("storage_dtype", "float16")
    keep: dict[str, str | Path | bytes] = {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        # README.md and REPORT.md are rendered again from the manifest.
        if p.is_file() and p.name not in (MANIFEST, manifest["weights"]["file"], MODEL_CARD, REPORT)
    }
    return write_bundle(bundle.model, path, manifest, storage_dtype=storage, files=keep)
