"""The model registry: every bundle under the models folder, loaded once, hash-verified.

Loading comes in two stages so the service is ready sooner: :func:`discover_registry` reads every
manifest (cheap) and :func:`load_entry` builds one model and loads its weights. The runtime loads
and warms the per-task defaults first and the rest in the background; until an entry's model is
in, ``entry.loaded`` is an unfinished future that requests wait on (no second copy is built).

A bundle that fails to load (bad manifest, weights that do not match their sha256) is left out
and reported, so one broken bundle cannot take the service down; the registry default for each
task comes from the manifests' ``default`` flag.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.core.errors import BadInput, NotFound
from ml.manifest import LabelProvenance, Manifest
from ml.vocab import TASKS

log = logging.getLogger(__name__)


@dataclass
class ModelEntry:
    """A loaded bundle: its typed manifest, the Keras model, and what the service needs."""

    key: str
    path: Path
    manifest: Manifest
    model: Any = None
    # Resolves (True) once the model is loaded and warm; fails if it cannot be loaded.
    loaded: Future[bool] = field(default_factory=Future, repr=False)
    # What ml.fold.fold_for_serving did to the served model (empty until loaded).
    folding: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.model is not None and not self.loaded.done():
            self.loaded.set_result(True)

    @property
    def ready(self) -> bool:
        return self.loaded.done() and self.loaded.exception() is None

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def display_name(self) -> str:
        return self.manifest.name

    @property
    def architecture(self) -> str:
        return self.manifest.architecture

    @property
    def is_default(self) -> bool:
        return self.manifest.default

    @property
    def input_shape(self) -> list[int]:
        return [int(s) for s in self.manifest.input.shape]

    @property
    def input_size(self) -> int:
        return self.manifest.input.size

    @property
    def status_names(self) -> list[str]:
        return self.manifest.status_names

    @property
    def stage_names(self) -> list[str]:
        return self.manifest.stage_names

    @property
    def mask_threshold(self) -> float:
        return self.manifest.mask_threshold

    @property
    def attention_layers(self) -> list[str]:
        return list(self.manifest.attention_layers)

    @property
    def gradcam_layer(self) -> str | None:
        return self.manifest.gradcam_layer

    @property
    def label_provenance(self) -> LabelProvenance:
        # The manifest schema only admits research-use-only provenance.
        return self.manifest.label_provenance


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

    def drop(self, key: str, error: str) -> None:
        """Take out a bundle that could not be loaded, and say why."""
        self.models.pop(key, None)
        self.errors[key] = error
        self._pick_defaults()

    def loading(self) -> list[str]:
        """Keys of the models not loaded and warm yet."""
        return sorted(k for k, e in self.models.items() if not e.loaded.done())

    def default_keys(self) -> list[str]:
        """The per-task defaults (loaded first)."""
        return sorted(set(self.defaults.values()))

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


def discover_registry(models_dir: Path) -> ModelRegistry:
    """Every bundle's manifest under ``models_dir``, no model built yet (missing folder: empty)."""
    models_dir = Path(models_dir)
    registry = ModelRegistry(models_dir=models_dir)
    if not models_dir.is_dir():
        log.warning("models folder %s does not exist: no models loaded", models_dir)
        return registry
    from ml.bundle import BundleError, discover_bundles, read_manifest

    for path in discover_bundles(models_dir):
        try:
            manifest = read_manifest(path)
        except BundleError as exc:
            registry.errors[Path(path).name] = str(exc)
            log.error("skipping bundle %s: %s", path, exc)
            continue
        registry.add(ModelEntry(key=manifest.key, path=Path(path), manifest=manifest))
    return registry


def load_entry(
    registry: ModelRegistry, entry: ModelEntry, *, verify: bool = True, fold: bool = True
) -> bool:
    """Build one entry's model and load its verified weights; a failure drops the entry.

    With ``fold``, the served model is a copy with its BatchNormalizations folded into the
    convolutions before them (:func:`ml.fold.fold_for_serving`: same outputs within 1e-4, checked
    here; the explained layers keep their values), else the model as built.

    The entry's ``loaded`` future is left for the caller to resolve once the model is warm
    (or it is failed here when the bundle cannot be loaded). Returns whether it loaded.
    """
    from ml.bundle import BundleError, load_bundle

    t0 = time.perf_counter()
    try:
        bundle = load_bundle(entry.path, verify=verify)
    except Exception as exc:  # noqa: BLE001 - a broken bundle must not stop the service
        message = str(exc) if isinstance(exc, BundleError) else f"{type(exc).__name__}: {exc}"
        log.error("skipping bundle %s: %s", entry.path, message)
        registry.drop(entry.key, message)
        if not entry.loaded.done():
            entry.loaded.set_exception(BundleError(message))
        return False
    served: Any = bundle.model
    folding: dict[str, Any] = {}
    if fold:
        served, folding = _folded(bundle.manifest, bundle.model, entry.key)
    entry.manifest, entry.model, entry.folding = bundle.manifest, served, folding
    log.info(
        "loaded model %s (%s, v%s) in %.1fs",
        entry.key,
        entry.task,
        entry.version,
        time.perf_counter() - t0,
    )
    return True


def _folded(manifest: Manifest, model: Any, key: str) -> tuple[Any, dict[str, Any]]:
    """The serving copy of ``model`` (BatchNorm folded), or ``model`` when folding fails."""
    from ml.explain.cam_graph import find_last_conv_layer
    from ml.fold import fold_for_serving

    # The explained layers keep their values: the Grad-CAM layer (by default the last
    # convolution) and the attention layers.
    cam_layer = manifest.gradcam_layer
    if cam_layer is None:
        try:
            cam_layer = find_last_conv_layer(model)
        except ValueError:
            cam_layer = None
    keep = [cam_layer or "", *manifest.attention_layers]
    try:
        served, report = fold_for_serving(model, keep=[k for k in keep if k])
    except Exception as exc:  # noqa: BLE001 - an optimisation must never cost a model
        log.warning("serving %s unfolded: folding failed (%s: %s)", key, type(exc).__name__, exc)
        return model, {"folded": [], "used": False, "error": str(exc)}
    if report["folded"] and not report["used"]:
        log.warning(
            "serving %s unfolded: the folded copy differs by %.2g", key, report["max_difference"]
        )
    elif report["used"]:
        log.info(
            "%s: %d batch norms folded into their convolutions (outputs within %.1g)",
            key,
            len(report["folded"]),
            report["max_difference"],
        )
    return served, report


def load_registry(models_dir: Path, *, verify: bool = True, fold: bool = True) -> ModelRegistry:
    """Discover and load every bundle in ``models_dir`` at once (missing folder: empty)."""
    started = time.perf_counter()
    registry = discover_registry(models_dir)
    for entry in list(registry.models.values()):
        if load_entry(registry, entry, verify=verify, fold=fold):
            entry.loaded.set_result(True)
    registry.load_seconds = time.perf_counter() - started
    return registry
