"""A request that names no heatmap method gets the model's measured best one (its manifest's
``explanation.default_method``), Grad-CAM for a model never measured; GET /models shows both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import api_samples as samples
import httpx
import pytest
from api_helpers import DatabaseUrls, app_on_models
from study_helpers import parts

MEASURED = "cnn_measured"


def _measured_bundle(models: Path) -> None:
    """A tiny classifier whose manifest says occlusion measured best (made-up numbers)."""
    from ml.bundle import load_bundle, make_random_bundle, update_manifest

    path = make_random_bundle(models, MEASURED, "simple_cnn", task="classification", seed=3)

    def row(score: float) -> dict[str, object]:
        return {
            "n": 2, "score": score, "score_ci": (score - 0.1, score + 0.1), "deletion_auc": 0.4,
            "deletion_auc_ci": (0.3, 0.5), "insertion_auc": 0.6, "insertion_auc_ci": (0.5, 0.7),
            "empty_fraction": 0.0,
        }  # fmt: skip

    update_manifest(
        path,
        {
            "explanation": {
                "default_method": "occlusion",
                "measured": {"gradcam": row(0.1), "occlusion": row(0.5)},
                "split": "test",
                "slices": ["a", "b"],
                "subjects": 2,
                "steps": 4,
                "n_random": 1,
            }  # fmt: skip
        },
    )
    load_bundle(path)  # the weights' hash still verifies after the manifest changed


@pytest.fixture(scope="module")
async def client(
    databases: DatabaseUrls, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    async with app_on_models(
        databases, models_dir, tmp_path_factory, "default-method", _measured_bundle
    ) as c:
        yield c


async def _explain(c: httpx.AsyncClient, headers: dict[str, str], **fields: str) -> dict:
    r = await c.post(
        "/explain",
        headers=headers,
        **parts([("s.png", samples.phantom_png(7))], "file", faithfulness=False, **fields),
    )
    assert r.status_code == 200, r.text
    return dict(r.json()["explanation"])


async def test_explain_without_a_method_uses_the_measured_best(client) -> None:  # noqa: ANN001
    c, headers = client
    ex = await _explain(c, headers, model=MEASURED)
    assert ex["method"] == "occlusion" and ex["method_note"] == ""


async def test_a_named_method_wins_over_the_default(client) -> None:  # noqa: ANN001
    c, headers = client
    assert (await _explain(c, headers, model=MEASURED, method="gradcam"))["method"] == "gradcam"


async def test_an_unmeasured_model_defaults_to_gradcam(client) -> None:  # noqa: ANN001
    c, headers = client
    assert (await _explain(c, headers, model="cnn_tiny"))["method"] == "gradcam"


async def test_analyses_use_each_models_own_default(client) -> None:  # noqa: ANN001
    c, headers = client
    r = await c.post(
        "/analyses",
        headers=headers,
        **parts(
            [("s.png", samples.phantom_png(8))], "file", models=f"{MEASURED},cnn_tiny",
            faithfulness=False,
        ),
    )  # fmt: skip
    assert r.status_code == 200, r.text
    methods = {e["model"]["key"]: e["method"] for e in r.json()["explanations"]}
    assert methods == {MEASURED: "occlusion", "cnn_tiny": "gradcam"}


async def test_models_list_shows_default_method_and_measurements(client) -> None:  # noqa: ANN001
    c, headers = client
    r = await c.get("/models", headers=headers)
    assert r.status_code == 200, r.text
    by_key = {m["key"]: m for m in r.json()}
    measured = by_key[MEASURED]
    assert measured["default_method"] == "occlusion"
    assert measured["explanation"]["measured"]["occlusion"]["score"] == 0.5
    assert by_key["cnn_tiny"]["default_method"] == "gradcam"
    assert by_key["cnn_tiny"]["explanation"] is None
    assert by_key["seg_tiny"]["default_method"] is None
