"""The model registry as a use case: list models, read a model card, find a plot."""

from __future__ import annotations

from pathlib import Path

from backend.core.errors import NotFound, NotReady
from backend.inference.registry import ModelEntry, ModelRegistry
from backend.schemas.models import ModelCard, ModelInfo, PlotLink
from backend.storage.artifacts import valid_name


def _require(registry: ModelRegistry | None) -> ModelRegistry:
    if registry is None:
        raise NotReady("The models are still loading; retry in a moment.")
    return registry


def model_info(entry: ModelEntry, registry: ModelRegistry) -> ModelInfo:
    m = entry.manifest
    return ModelInfo(
        key=entry.key,
        display_name=entry.display_name,
        task=m.task,
        version=entry.version,
        architecture=entry.architecture,
        parameters=int(m.parameters or 0),
        flops=int(m.flops or 0),
        input_shape=entry.input_shape,
        metrics=m.metrics,
        label_provenance=m.label_provenance,
        default=registry.defaults.get(entry.task) == entry.key,
        intended_use=m.intended_use,
        default_method=m.default_method if m.task == "classification" else None,
        explanation=m.explanation,
        calibration=m.calibration,
        cross_validation=m.cross_validation,
        ready=entry.ready,
    )


def list_models(registry: ModelRegistry | None) -> list[ModelInfo]:
    """Every loaded model, segmentation first, then by key."""
    reg = _require(registry)
    entries = sorted(reg.models.values(), key=lambda e: (e.task != "segmentation", e.key))
    return [model_info(e, reg) for e in entries]


def _plots(entry: ModelEntry) -> list[Path]:
    folder = entry.path / "plots"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and valid_name(p.name.lower()))


def model_card(registry: ModelRegistry | None, key: str) -> ModelCard:
    """The manifest, the model card text and links to the bundle's plots."""
    reg = _require(registry)
    entry = reg.get(key)
    m = entry.manifest
    readme = entry.path / "README.md"
    return ModelCard(
        **model_info(entry, reg).model_dump(),
        outputs=m.outputs,
        training=m.training,
        dataset=m.dataset,
        gradcam_layer=m.gradcam_layer,
        attention_layers=list(m.attention_layers),
        weights=m.weights,
        created=m.created,
        readme=readme.read_text(encoding="utf-8") if readme.is_file() else None,
        plots=[PlotLink(name=p.name, url=f"/models/{key}/plots/{p.name}") for p in _plots(entry)],
    )


def plot_file(registry: ModelRegistry | None, key: str, name: str) -> Path:
    """One of a bundle's plot images (only files listed in its plots folder)."""
    entry = _require(registry).get(key)
    for p in _plots(entry):
        if p.name == name:
            return p
    raise NotFound("No such plot for this model.", code="plot_not_found")
