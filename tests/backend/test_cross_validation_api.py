"""A bundle's cross-validation record reaches clients: the model list and the model card carry
the pooled held-out metrics, their subject-bootstrap intervals and every fold, as the manifest
holds them; a bundle never cross-validated says so with ``null``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from api_helpers import DatabaseUrls, app_on_models

from ml.training.cv import CVReport, pooled_metrics, subject_bootstrap


def _report() -> CVReport:
    """A report made by the cross-validation's own pooling and bootstrap from per-slice rows."""
    rows = [
        {"image_id": f"s{s}_{j}", "subject_id": f"s{s}", "iou": 0.70 + 0.03 * s, "dice": 0.8}
        for s in range(6)
        for j in range(3)
    ]
    report = CVReport(key="seg_tiny", task="segmentation", k=2, subjects=6, slices=len(rows))
    for i in range(2):
        fold = [r for r in rows if int(r["subject_id"][1:]) % 2 == i]
        metrics = pooled_metrics(fold, "segmentation")
        report.folds.append({"fold": i, "subjects": 3, "n": len(fold), "metrics": metrics})
    cis = subject_bootstrap(rows, "segmentation", n_boot=200)
    for name, value in pooled_metrics(rows, "segmentation").items():
        folds = [f["metrics"][name] for f in report.folds]
        report.metrics[name] = {
            "pooled": value, "fold_mean": sum(folds) / len(folds), "ci95": list(cis[name]),
        }  # fmt: skip
    return report


def _with_cv(models: Path) -> None:
    from ml.bundle import update_manifest
    from ml.manifest import CrossValidation

    data = {k: v for k, v in _report().as_dict().items() if k not in ("key", "task")}
    record = CrossValidation(**data, evaluated="2026-01-01")
    update_manifest(models / "seg_tiny", {"cross_validation": record.model_dump(mode="json")})


@pytest.fixture(scope="module")
async def client(
    databases: DatabaseUrls, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    async with app_on_models(databases, models_dir, tmp_path_factory, "crossval", _with_cv) as c:
        yield c


async def test_model_card_and_list_carry_the_cross_validation(client) -> None:  # noqa: ANN001
    c, headers = client
    expected = _report()
    r = await c.get("/models/seg_tiny", headers=headers)
    assert r.status_code == 200, r.text
    cv = r.json()["cross_validation"]
    assert cv["k"] == 2 and cv["subjects"] == 6 and cv["slices"] == 18
    iou = cv["metrics"]["iou"]
    assert iou["pooled"] == pytest.approx(expected.metrics["iou"]["pooled"])
    assert iou["ci95"][0] < iou["pooled"] < iou["ci95"][1]  # six subjects of different IoU
    assert [f["n"] for f in cv["folds"]] == [9, 9]
    listed = {m["key"]: m for m in (await c.get("/models", headers=headers)).json()}
    assert listed["seg_tiny"]["cross_validation"] == cv
    assert listed["cnn_tiny"]["cross_validation"] is None
