"""What a training run records in its bundle's manifest: machine, files, labels, data."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ml.manifest import LabelProvenance


def file_record(path: str | Path) -> dict[str, Any]:
    import hashlib

    data = Path(path).read_bytes()
    return {"file": Path(path).name, "sha256": hashlib.sha256(data).hexdigest()}


def machine_info() -> dict[str, Any]:
    """Where a run happened (for the manifest)."""
    import keras

    versions = {}
    for pkg in ("keras", "tensorflow", "tensorflow-cpu", "jax"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    cpus = os.cpu_count() or 0
    from ml.runtime import accelerator_name

    accelerator = accelerator_name()
    on = f"{accelerator}, " if accelerator else ""
    return {
        "summary": f"{on}{platform.machine()} CPU x{cpus}, Keras {keras.__version__} "
        f"({keras.backend.backend()})",
        "platform": platform.platform(),
        "accelerator": accelerator,
        "cpu_count": cpus,
        "backend": keras.backend.backend(),
        "versions": versions,
    }


def provenance(train_data, dataset_dir: Path, task: str) -> LabelProvenance:
    """The labels' provenance: source, rule version, mask kind."""
    from ml.manifest import label_provenance

    rule_version = None
    rule_path = dataset_dir / "label_rule.json"
    if train_data.label_source.startswith("feature_rule") and rule_path.is_file():
        try:
            rule_version = json.loads(rule_path.read_text()).get("version")
        except ValueError:
            rule_version = None
    mask_kind = None
    if task == "segmentation":
        kinds = {r.get("mask_kind", "") for r in train_data.rows} - {""}
        mask_kind = kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else None)
    return label_provenance(train_data.label_source, rule_version, mask_kind)


def dataset_record(train_data, test_data, dataset_dir: Path, fit_idx, val_idx) -> dict[str, Any]:
    """The prepared dataset a run used: hash, sizes, split, sources."""
    return {
        "hash": train_data.dataset_hash,
        "dir": dataset_dir.name,
        "n_train": int(len(train_data)),
        "n_fit": int(len(fit_idx)),
        "n_val": int(len(val_idx)),
        "n_test": int(len(test_data)),
        "split": "subject",
        "label_source": train_data.label_source,
        "sources": {
            str(s): int(n)
            for s, n in zip(*np.unique(train_data.sources, return_counts=True), strict=True)
        },
    }
