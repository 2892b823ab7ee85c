"""Every explanation method through the API, and an empty map never shown as an explanation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import api_samples as samples
import httpx
import numpy as np
import pytest
from api_helpers import DatabaseUrls, app_on_models
from study_helpers import parts


def _dead_bundle(models: Path) -> None:
    """A classifier whose explained layer (and so everything after it) is all zero."""
    from ml.bundle import load_bundle, make_random_bundle, write_bundle

    path = make_random_bundle(models, "cnn_dead", "simple_cnn", task="classification")
    bundle = load_bundle(path)
    layer = bundle.model.get_layer(bundle.manifest.gradcam_layer)
    layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    keep = {p.name: p.read_bytes() for p in path.iterdir() if p.suffix == ".png"}
    write_bundle(bundle.model, path, bundle.manifest, storage_dtype="float16", files=keep)


@pytest.fixture(scope="module")
async def client(
    databases: DatabaseUrls, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    async with app_on_models(databases, models_dir, tmp_path_factory, "methods", _dead_bundle) as c:
        yield c


@pytest.mark.parametrize("method", ["occlusion", "rise", "integrated_gradients", "eigencam"])
async def test_each_method_explains_with_a_score(client, method: str) -> None:  # noqa: ANN001
    c, headers = client
    r = await c.post(
        "/explain",
        headers=headers,
        **parts([("s.png", samples.phantom_png(5))], "file", method=method, model="cnn_tiny"),
    )
    assert r.status_code == 200, r.text
    ex = r.json()["explanation"]
    assert ex["method"] == method and ex["method_note"] == ""
    assert ex["faithfulness"] is not None and -1.0 <= ex["faithfulness"]["score"] <= 1.0
    png = await c.get(ex["heatmap_url"], headers=headers)
    assert png.status_code == 200


async def test_an_empty_map_is_never_shown_as_an_explanation(client) -> None:  # noqa: ANN001
    c, headers = client
    r = await c.post(
        "/explain",
        headers=headers,
        **parts([("s.png", samples.phantom_png(6))], "file", model="cnn_dead"),
    )
    assert r.status_code == 200, r.text
    ex = r.json()["explanation"]
    # Grad-CAM, Grad-CAM++ and Eigen-CAM read the dead layer; occlusion reads the output, which
    # no pixel moves: the result says so instead of presenting an empty map as evidence.
    assert ex["method"] == "occlusion"
    assert "nothing to show" in ex["method_note"]
