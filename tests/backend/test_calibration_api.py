"""Serving applies each bundle's temperatures: the same weights with a calibration record report
the temperature-scaled probabilities, in /classify and in /explain alike."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import api_samples as samples
import httpx
import numpy as np
import pytest
from api_helpers import DatabaseUrls, app_on_models

from ml.calibration import apply_temperature

T_BINARY, T_STAGE = 3.0, 0.5


def _calibrated_bundle(models: Path) -> None:
    """``cnn_cal``: the same weights as ``cnn_tiny`` with a calibration record."""
    from ml.bundle import update_manifest
    from ml.manifest import Calibration, HeadCalibration

    shutil.copytree(models / "cnn_tiny", models / "cnn_cal")

    def head(t: float) -> HeadCalibration:
        return HeadCalibration(
            temperature=t, ece_before=0.2, ece_after=0.1, nll_before=1.0, nll_after=0.9
        )

    record = Calibration(
        fitted_on="test", n_fit=10, n_eval=10, binary=head(T_BINARY), stage=head(T_STAGE)
    )
    update_manifest(
        models / "cnn_cal",
        {"key": "cnn_cal", "default": False, "calibration": record.model_dump(mode="json")},
    )


@pytest.fixture(scope="module")
async def client(
    databases: DatabaseUrls, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    async with app_on_models(
        databases, models_dir, tmp_path_factory, "calibration", _calibrated_bundle
    ) as c:
        yield c


def _vector(probs: dict[str, float]) -> np.ndarray:
    return np.asarray(list(probs.values()), np.float64)


async def test_classify_reports_scaled_probabilities(client) -> None:  # noqa: ANN001
    c, headers = client
    r = await c.post(
        "/classify",
        files={"file": ("x.png", samples.phantom_png(21), "image/png")},
        data={"models": ["cnn_tiny", "cnn_cal"]},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    raw, cal = r.json()["classifications"]
    assert raw["model"]["key"] == "cnn_tiny" and cal["model"]["key"] == "cnn_cal"
    for field, t in (("as_probabilities", T_BINARY), ("stage_probabilities", T_STAGE)):
        expected = apply_temperature(_vector(raw[field]), t)
        assert _vector(cal[field]) == pytest.approx(expected, abs=1e-5), field
    assert raw["as_status"] == cal["as_status"] and raw["stage"] == cal["stage"]


async def test_explain_reports_the_scaled_probability(client) -> None:  # noqa: ANN001
    c, headers = client
    png = samples.phantom_png(22)
    got = {}
    for key in ("cnn_tiny", "cnn_cal"):
        r = await c.post(
            "/explain",
            files={"file": ("x.png", png, "image/png")},
            data={"model": key, "faithfulness": "false", "method": "gradcam"},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        got[key] = r.json()["explanation"]
    raw, cal = got["cnn_tiny"], got["cnn_cal"]
    assert raw["class_index"] == cal["class_index"]
    r = await c.post(
        "/classify",
        files={"file": ("x.png", png, "image/png")},
        data={"models": "cnn_cal"},
        headers=headers,
    )
    probs = _vector(r.json()["classifications"][0]["as_probabilities"])
    assert cal["probability"] == pytest.approx(probs[cal["class_index"]], abs=1e-5)
    assert cal["probability"] != pytest.approx(raw["probability"], abs=1e-4)
