"""Model bundles: ``models/<key>/`` = manifest.json + model.weights.h5 (+ README.md, plots/).

A bundle is written atomically (a temporary sibling folder, then a rename), its weights are
stored compactly (float16 where the metrics stay the same) and loading verifies their sha256
against the manifest, so a truncated or swapped weights file fails with a clear
:class:`BundleError` instead of producing silent garbage.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from ml.data.labels import LabelRule, load_rule
from ml.fsutil import write_atomic
from ml.manifest import (
    MANIFEST,
    SCHEMA_VERSION,
    WEIGHTS,
    Manifest,
    ManifestError,
    default_outputs,
    label_provenance,
    parse_manifest,
    today,
)
from ml.weights import round_weights, save_weights, sha256_file

logger = logging.getLogger(__name__)

MODEL_CARD = "README.md"
REPORT = "REPORT.md"
# The fitted feature rule that labelled the training data (ml.data.labels), when the labels
# came from one: rule-feature models are explained in its terms (ml.explain.features).
LABEL_RULE = "label_rule.json"

__all__ = [
    "LABEL_RULE",
    "MANIFEST",
    "round_weights",
    "save_weights",
    "sha256_file",
    "WEIGHTS",
    "Bundle",
    "BundleError",
    "Manifest",
    "discover_bundles",
    "label_provenance",
    "load_bundle",
    "make_random_bundle",
    "new_manifest",
    "read_label_rule",
    "read_manifest",
    "repack_bundle",
    "update_manifest",
    "write_bundle",
]


class BundleError(Exception):
    """A bundle is missing, malformed, or its weights do not match the manifest."""


@dataclass
class Bundle:
    """A loaded bundle: its key, folder, typed manifest and Keras model."""

    key: str
    path: Path
    manifest: Manifest
    model: Any

    @property
    def task(self) -> str:
        return self.manifest.task


# --------------------------------------------------------------------------- manifest


def new_manifest(
    *,
    key: str,
    architecture: str,
    cfg: dict[str, Any] | None = None,
    display_name: str | None = None,
    version: str = "1.0.0",
    provenance: Any = None,
    default: bool = False,
    **fields: Any,
) -> Manifest:
    """A manifest for ``architecture`` with everything derivable from the code.

    ``write_bundle`` fills ``parameters``, ``flops``, the Grad-CAM layer and the weights' hash;
    training passes ``training``, ``dataset``, ``metrics`` and ``description`` as ``fields``.
    """
    from ml.models import spec
    from ml.preprocessing import PREPROCESSING_SPEC

    cfg = dict(cfg or {})
    arch = spec(architecture)
    size = int(cfg.get("input_size", 256))
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "key": key,
        "display_name": display_name or key,
        "task": arch.task,
        "version": version,
        "architecture": architecture,
        "config": cfg,
        "input": {"shape": [size, size, 1], "preprocessing": PREPROCESSING_SPEC},
        "outputs": default_outputs(arch.task),
        "label_provenance": provenance or label_provenance("feature_rule_v2"),
        "attention_layers": arch.attention_layers_for(cfg),
        "weights": {"file": WEIGHTS, **arch.weights_init(cfg)},
        "default": bool(default),
        "created": today(),
        **fields,
    }
    return check_manifest(data)


def check_manifest(data: Any, where: str = "manifest") -> Manifest:
    """Validate manifest data (any known schema version) against the architectures here.

    Raises:
        BundleError: invalid fields, a newer schema, an unknown architecture, or a task that
            is not the architecture's.
    """
    from ml.models import ARCHITECTURES, spec

    try:
        manifest = data if isinstance(data, Manifest) else parse_manifest(data, where)
    except ManifestError as exc:
        raise BundleError(str(exc)) from exc
    if manifest.architecture not in ARCHITECTURES:
        raise BundleError(f"{where}: unknown architecture {manifest.architecture!r}")
    if spec(manifest.architecture).task != manifest.task:
        raise BundleError(f"{where}: architecture {manifest.architecture} is not {manifest.task}")
    return manifest


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Read and validate ``bundle_dir/manifest.json`` (no model is built)."""
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: no {MANIFEST} (not a model bundle)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc})") from exc
    return check_manifest(data, str(path))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically (see :func:`ml.fsutil.write_atomic`)."""
    write_atomic(path, text.encode("utf-8"))


def update_manifest(bundle_dir: str | Path, updates: dict[str, Any]) -> Manifest:
    """Replace top-level fields of a bundle's manifest and rewrite it atomically.

    The weights file is untouched, and its hash is re-checked so the result stays loadable.
    """
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    _verify_weights(bundle_dir, manifest)
    data = {**manifest.model_dump(mode="json"), **updates}
    updated = check_manifest(json.loads(json.dumps(data, default=_json_default)))
    write_text_atomic(bundle_dir / MANIFEST, updated.to_json())
    return updated


def refresh_model_card(bundle_dir: str | Path) -> None:
    """Render the bundle's model card (README.md) again from its manifest as it is now."""
    from ml.model_card import render_model_card

    bundle_dir = Path(bundle_dir)
    write_text_atomic(bundle_dir / MODEL_CARD, render_model_card(read_manifest(bundle_dir)))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --------------------------------------------------------------------------- write / load


def _finished_manifest(model, manifest: Manifest) -> Manifest:
    """Fill what only the built model knows: parameters, FLOPs, the Grad-CAM layer."""
    from ml.models import count_flops, spec

    updates: dict[str, Any] = {"parameters": int(model.count_params())}
    if not manifest.flops:
        updates["flops"] = count_flops(model)
    if manifest.task == "classification" and not manifest.gradcam_layer:
        updates["gradcam_layer"] = spec(manifest.architecture).gradcam_layer_for(manifest.config)
    if not manifest.created:
        updates["created"] = today()
    return manifest.model_copy(update=updates, deep=True)


def _write_files(folder: Path, files: dict[str, str | Path | bytes]) -> None:
    for name, source in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            shutil.copyfile(source, target)


def write_bundle(
    model,
    out_dir: str | Path,
    manifest: Manifest,
    storage_dtype: str = "float16",
    files: dict[str, str | Path | bytes] | None = None,
) -> Path:
    """Write a bundle folder atomically and return its path.

    Args:
        model: the trained Keras model.
        out_dir: the bundle folder (``models/<key>``); replaced whole if it exists.
        manifest: see :func:`new_manifest`; ``parameters``, ``flops``, ``gradcam_layer``
            (classifiers) and ``weights`` (file, sha256, storage_dtype) are filled here.
        storage_dtype: ``float16`` (compact) or ``float32``.
        files: extra files to include, relative name -> source path or bytes
            (e.g. ``plots/curves.png``); README.md (model card) and REPORT.md (when the manifest
            has metrics) are rendered from the final manifest unless given here.
    """
    from ml.model_card import render_model_card, render_report

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    manifest = _finished_manifest(model, check_manifest(manifest))
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        weights_path = tmp / WEIGHTS
        save_weights(model, weights_path, storage_dtype)
        weights = manifest.weights.model_copy(
            update={
                "file": WEIGHTS,
                "sha256": sha256_file(weights_path),
                "storage_dtype": storage_dtype,
                "bytes": weights_path.stat().st_size,
            }
        )
        manifest = check_manifest(manifest.model_copy(update={"weights": weights}))
        files = dict(files or {})
        # The model card (and the report, once there are metrics) describe the final manifest.
        files.setdefault(MODEL_CARD, render_model_card(manifest).encode())
        if manifest.metrics.model_dump(exclude_none=True, exclude_defaults=True):
            files.setdefault(REPORT, render_report(manifest).encode())
        _write_files(tmp, files)
        (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "wrote bundle %s (%s weights, %d parameters)",
        out_dir,
        storage_dtype,
        manifest.parameters,
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


def _verify_weights(bundle_dir: Path, manifest: Manifest) -> Path:
    weights = manifest.weights
    path = bundle_dir / weights.file
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: weights file {weights.file} is missing")
    expected = weights.sha256
    if not expected:
        raise BundleError(f"{bundle_dir}: manifest has no weights.sha256 to verify against")
    actual = sha256_file(path)
    if actual != expected:
        raise BundleError(
            f"{bundle_dir}: weights file {weights.file} does not match the manifest "
            f"(sha256 {actual[:12]}... != expected {expected[:12]}...); the bundle is corrupt "
            "or was modified"
        )
    return path


def build_for_manifest(manifest: Manifest):
    """Build the (randomly initialised) model a manifest describes."""
    from ml.models import build_model

    cfg = dict(manifest.config)
    if cfg.get("backbone_weights"):
        # The bundle's own weights replace any initialisation; the file may not exist here.
        cfg["backbone_weights"] = None
    return build_model(manifest.architecture, cfg)


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Load a bundle folder: validate the manifest, verify the weights' sha256, build, load.

    Raises:
        BundleError: manifest missing/invalid, weights missing, hash mismatch or unloadable.
    """
    path = Path(path)
    manifest = read_manifest(path)
    weights_path = _verify_weights(path, manifest) if verify else path / manifest.weights.file
    try:
        model = build_for_manifest(manifest)
    except (ValueError, TypeError, KeyError) as exc:
        raise BundleError(f"{path}: cannot build {manifest.architecture}: {exc}") from exc
    try:
        model.load_weights(weights_path)
    except Exception as exc:  # h5py/Keras raise many types for a bad file
        raise BundleError(f"{path}: weights do not load into the model: {exc}") from exc
    return Bundle(key=manifest.key, path=path, manifest=manifest, model=model)


def read_label_rule(bundle_dir: str | Path, manifest: Manifest) -> LabelRule | None:
    """The fitted labelling rule shipped in a bundle (``label_rule.json``), if any.

    Raises:
        BundleError: the file is unreadable, or is another rule than the one the manifest says
            labelled the training data.
    """
    path = Path(bundle_dir) / LABEL_RULE
    if not path.is_file():
        return None
    try:
        rule = load_rule(path)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: not a label rule ({exc})") from exc
    expected = manifest.label_provenance.label_source
    if rule.label_source != expected:
        raise BundleError(
            f"{path}: a {rule.label_source} rule, but the training labels are {expected}"
        )
    return rule


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
        cfg: builder config; ``None`` picks the architecture's tiny one (64x64 input).
        task: checked against the architecture's task when given.
        default: mark as the registry default for its task.
        label_source: label provenance to record (``clinical`` for provenance tests).
        seed: weight initialisation seed.

    Returns:
        The bundle folder.
    """
    import keras

    from ml.models import build_model, spec

    arch = spec(architecture)
    if task is not None and task != arch.task:
        raise ValueError(f"{architecture} is a {arch.task} model, not {task}")
    cfg = dict(arch.tiny if cfg is None else cfg)
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
            mask_kind="expert" if arch.task == "segmentation" else None,
        ),
        default=default,
        training={"note": "random weights for tests; never trained", "epochs_run": 0},
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
    manifest = bundle.manifest
    storage = manifest.weights.storage_dtype or "float16"
    keep: dict[str, str | Path | bytes] = {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        # README.md and REPORT.md are rendered again from the manifest.
        if p.is_file() and p.name not in (MANIFEST, manifest.weights.file, MODEL_CARD, REPORT)
    }
    return write_bundle(bundle.model, path, manifest, storage_dtype=storage, files=keep)
