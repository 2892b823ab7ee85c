"""The model registry: every bundle under the models folder, loaded once, hash-verified.

A bundle that fails to load (bad manifest, weights that do not match their sha256) is left out
and reported, so one broken bundle cannot take the service down; the registry default for each
task comes from the manifests' ``default`` flag.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.core.errors import BadInput, NotFound

log = logging.getLogger(__name__)

TASKS = ("segmentation", "classification")
DEFAULT_STAGE_NAMES = ["Normal", "Early", "Moderate", "Advanced"]
DEFAULT_STATUS_NAMES = ["negative", "positive"]


@dataclass
class ModelEntry:
    """A loaded bundle: its manifest, the Keras model, and what the service needs from both."""

    key: str
    task: str
    path: Path
    manifest: dict[str, Any]
    model: Any
    bundle: Any = None

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "0.0.0"))

    @property
    def display_name(self) -> str:
        return str(self.manifest.get("display_name") or self.key)

    @property
    def architecture(self) -> str:
        return str(self.manifest.get("architecture", "unknown"))

    @property
    def is_default(self) -> bool:
        return bool(self.manifest.get("default", False))

    @property
    def input_shape(self) -> list[int]:
        shape = (self.manifest.get("input") or {}).get("shape")
        if shape:
            return [int(s) for s in shape]
        dims = getattr(self.model, "input_shape", None) or (None, 256, 256, 1)
        if isinstance(dims, list):
            dims = dims[0]
        return [int(d) for d in dims[1:]]

    @property
    def input_size(self) -> int:
        return int(self.input_shape[0])

    @property
    def status_names(self) -> list[str]:
        outputs = self.manifest.get("outputs") or {}
        return list(outputs.get("binary_output") or DEFAULT_STATUS_NAMES)

    @property
    def stage_names(self) -> list[str]:
        outputs = self.manifest.get("outputs") or {}
        return list(outputs.get("stage_output") or DEFAULT_STAGE_NAMES)

    @property
    def mask_threshold(self) -> float:
        mask = (self.manifest.get("outputs") or {}).get("mask") or {}
        return float(mask.get("threshold", 0.5))

    @property
    def attention_layers(self) -> list[str]:
        return list(self.manifest.get("attention_layers") or [])

    @property
    def gradcam_layer(self) -> str | None:
        return self.manifest.get("gradcam_layer")

    @property
    def label_provenance(self) -> dict[str, Any]:
        prov = dict(self.manifest.get("label_provenance") or {})
        prov.setdefault("label_source", "unknown")
        prov.setdefault("description", "")
        # Whatever the manifest says, the service only ever serves research use.
        prov["research_use_only"] = True
        return prov


@dataclass
class ModelRegistry:
    """Loaded models by key, plus the per-task defaults and any bundles that failed."""

    models: dict[str, ModelEntry] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    models_dir: Path | None = None
    load_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.defaults: dict[str, str] = {}
        self._pick_defaults()

    def _pick_defaults(self) -> None:
        self.defaults = {}
        for task in TASKS:
            entries = sorted(self.by_task(task), key=lambda e: e.key)
            flagged = [e for e in entries if e.is_default]
            if len(flagged) > 1:
                log.warning(
                    "several default %s models %s; using %s",
                    task,
                    [e.key for e in flagged],
                    flagged[0].key,
                )
            if flagged or entries:
                self.defaults[task] = (flagged or entries)[0].key

    def add(self, entry: ModelEntry) -> None:
        self.models[entry.key] = entry
        self._pick_defaults()

    def by_task(self, task: str) -> list[ModelEntry]:
        return [e for e in self.models.values() if e.task == task]

    def keys(self) -> list[str]:
        return sorted(self.models)

    def get(self, key: str) -> ModelEntry:
        """The model for a key; NotFound (unknown_model) otherwise."""
        entry = self.models.get(key)
        if entry is None:
            raise NotFound(
                f"Unknown model {key!r}; available: {', '.join(self.keys()) or 'none'}.",
                code="unknown_model",
            )
        return entry

    def default_for(self, task: str) -> ModelEntry | None:
        key = self.defaults.get(task)
        return self.models[key] if key else None

    def resolve(self, keys: list[str] | None, task: str, *, limit: int = 8) -> list[ModelEntry]:
        """Models for a request: the named ones (checked for task), or the task's default.

        Raises BadInput with code unknown_model, wrong_task, too_many_models or no_model.
        """
        names = [k.strip() for k in (keys or []) if k and k.strip()]
        if not names:
            default = self.default_for(task)
            if default is None:
                raise BadInput(
                    f"No {task} model is installed on this server.",
                    code="no_model",
                    status_code=503,
                )
            return [default]
        unique = list(dict.fromkeys(names))
        if len(unique) > limit:
            raise BadInput(f"At most {limit} models per request.", code="too_many_models")
        out = []
        for key in unique:
            entry = self.models.get(key)
            if entry is None:
                raise BadInput(
                    f"Unknown model {key!r}; available {task} models: "
                    f"{', '.join(e.key for e in self.by_task(task)) or 'none'}.",
                    code="unknown_model",
                )
            if entry.task != task:
                raise BadInput(
                    f"Model {key!r} is a {entry.task} model; this needs a {task} model.",
                    code="wrong_task",
                )
            out.append(entry)
        return out


def load_registry(models_dir: Path, *, verify: bool = True) -> ModelRegistry:
    """Discover and load every bundle in ``models_dir`` (missing folder: empty registry)."""
    started = time.perf_counter()
    models_dir = Path(models_dir)
    registry = ModelRegistry(models_dir=models_dir)
    if not models_dir.is_dir():
        log.warning("models folder %s does not exist: no models loaded", models_dir)
        return registry
    from ml.bundle import BundleError, discover_bundles, load_bundle

    for path in discover_bundles(models_dir):
        try:
            bundle = load_bundle(path, verify=verify)
        except BundleError as exc:
            registry.errors[Path(path).name] = str(exc)
            log.error("skipping bundle %s: %s", path, exc)
            continue
        except Exception as exc:  # noqa: BLE001 - a broken bundle must not stop the service
            registry.errors[Path(path).name] = f"{type(exc).__name__}: {exc}"
            log.exception("skipping bundle %s", path)
            continue
        manifest = dict(bundle.manifest)
        task = str(getattr(bundle, "task", None) or manifest.get("task"))
        if task not in TASKS:
            registry.errors[bundle.key] = f"unknown task {task!r}"
            continue
        registry.add(
            ModelEntry(
                key=bundle.key,
                task=task,
                path=Path(bundle.path),
                manifest=manifest,
                model=bundle.model,
                bundle=bundle,
            )
        )
        log.info("loaded model %s (%s, v%s)", bundle.key, task, manifest.get("version"))
    registry.load_seconds = time.perf_counter() - started
    return registry
