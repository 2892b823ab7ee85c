"""The model registry: what is installed, and each model's card."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from backend.api.deps import CurrentUser, RuntimeDep
from backend.schemas.common import error_responses
from backend.schemas.models import ModelCard, ModelInfo
from backend.services import models as models_service

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=list[ModelInfo], responses=error_responses(401, 503))
async def list_models(_principal: CurrentUser, runtime: RuntimeDep) -> list[ModelInfo]:
    """Installed models: task, size, cost, measured metrics, version, label provenance."""
    return models_service.list_models(runtime.registry)


@router.get("/{key}", response_model=ModelCard, responses=error_responses(401, 404, 503))
async def read_model(key: str, _principal: CurrentUser, runtime: RuntimeDep) -> ModelCard:
    """One model's card: manifest, training and dataset details, README and plot links."""
    return models_service.model_card(runtime.registry, key)


@router.get(
    "/{key}/plots/{name}",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, **error_responses(401, 404, 503)},
)
async def read_model_plot(
    key: str, name: str, _principal: CurrentUser, runtime: RuntimeDep
) -> FileResponse:
    """A plot from the model's bundle (confusion matrix, training curves)."""
    return FileResponse(
        models_service.plot_file(runtime.registry, key, name), media_type="image/png"
    )
