"""The four inference endpoints end to end: results, provenance, history rows, artifacts."""

from __future__ import annotations

import api_samples as samples
import pytest
from api_helpers import Env

from backend.models import Analysis, AuditEvent, ModelResult

NOTICE_WORDS = ("Research use only", "not a diagnosis")


def _upload(data: bytes, name: str = "slice.png") -> dict:
    return {"file": (name, data, "application/octet-stream")}


def _common(body: dict) -> None:
    assert body["research_use_only"] is True
    assert all(w in body["notice"] for w in NOTICE_WORDS)
    assert body["image_url"] == f"/artifacts/{body['id']}/input.png"
    assert body["timings_ms"]["total"] > 0


async def _get_png(env: Env, url: str, headers: dict) -> bytes:
    r = await env.client.get(url, headers=headers)
    assert r.status_code == 200, (url, r.text)
    assert r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")
    return r.content


async def test_classify_default_and_side_by_side(env: Env, alice: dict) -> None:
    r = await env.client.post("/classify", files=_upload(samples.phantom_png()), headers=alice)
    assert r.status_code == 200, r.text
    body = r.json()
    _common(body)
    assert body["kind"] == "classify"
    [c] = body["classifications"]
    assert c["model"]["key"] == "cnn_tiny" and c["model"]["version"] == "0.0.1"
    assert c["as_status"] in ("negative", "positive")
    assert abs(sum(c["as_probabilities"].values()) - 1) < 1e-4
    assert list(c["stage_probabilities"]) == ["Normal", "Early", "Moderate", "Advanced"]
    assert abs(sum(c["stage_probabilities"].values()) - 1) < 1e-4
    assert c["label_provenance"]["label_source"] == "feature_rule_v2"
    assert c["label_provenance"]["research_use_only"] is True

    r = await env.client.post(
        "/classify",
        files=_upload(samples.phantom_png(2)),
        data={"models": ["cnn_tiny", "cnn_clinical"]},
        headers=alice,
    )
    assert r.status_code == 200, r.text
    got = r.json()["classifications"]
    assert [c["model"]["key"] for c in got] == ["cnn_tiny", "cnn_clinical"]
    assert got[1]["label_provenance"]["label_source"] == "clinical"

    row_count = await env.count(ModelResult, analysis_id=r.json()["id"])
    assert row_count == 2
    assert await env.count(AuditEvent, action="inference.classify", target=r.json()["id"]) == 1


async def test_formats_by_content_not_name(env: Env, alice: dict) -> None:
    for data, name, fmt in [
        (samples.dicom(), "scan.png", "dicom"),
        (samples.dicom(frames=3), "multi.bin", "dicom"),
        (samples.nifti_gz(), "volume.dcm", "nifti"),
        (samples.npy(samples.phantom(4).astype("uint16") * 200), "a.jpg", "npy"),
    ]:
        r = await env.client.post("/classify", files=_upload(data, name), headers=alice)
        assert r.status_code == 200, (name, r.text)
        assert r.json()["image"]["format"] == fmt
    r = await env.client.post(
        "/classify", files=_upload(samples.dicom(frames=3)), data={"frame": "2"}, headers=alice
    )
    assert r.status_code == 200 and r.json()["image"]["frame"] == 2


async def test_segment(env: Env, alice: dict) -> None:
    r = await env.client.post("/segment", files=_upload(samples.phantom_png()), headers=alice)
    assert r.status_code == 200, r.text
    body = r.json()
    _common(body)
    seg = body["segmentation"]
    assert seg["model"]["key"] == "seg_tiny"
    assert 0.0 <= seg["probability_mean"] <= seg["probability_max"] <= 1.0
    assert 0.0 <= seg["mask_fraction"] <= 1.0
    if seg["roi"] is not None:
        assert 0 <= seg["roi"]["x1"] < seg["roi"]["x2"] <= 256
    await _get_png(env, seg["mask_url"], alice)
    await _get_png(env, seg["overlay_url"], alice)
    await _get_png(env, body["image_url"], alice)


async def test_explain(env: Env, alice: dict) -> None:
    r = await env.client.post(
        "/explain",
        files=_upload(samples.phantom_png()),
        data={"model": "cnn_tiny", "head": "stage", "method": "gradcam++", "focus": "box"},
        headers=alice,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    _common(body)
    ex = body["explanation"]
    assert ex["head"] == "stage" and ex["method"] == "gradcam++" and ex["focus"] == "box"
    assert ex["class_label"] in ["Normal", "Early", "Moderate", "Advanced"]
    assert -1.0 <= ex["faithfulness"]["score"] <= 1.0
    assert ex["faithfulness"]["interpretation"]
    assert ex["roi"] is not None
    for url in (ex["heatmap_url"], ex["overlay_url"], ex["focused_overlay_url"]):
        await _get_png(env, url, alice)

    r = await env.client.post(
        "/explain",
        files=_upload(samples.phantom_png()),
        data={"class_index": "1", "faithfulness": "false"},
        headers=alice,
    )
    assert r.status_code == 200, r.text
    ex = r.json()["explanation"]
    assert ex["class_index"] == 1 and ex["class_label"] == "positive"
    assert ex["faithfulness"] is None
    assert ex["focus"] in ("segmentation", "box")  # box when the random mask finds no ROI


async def test_full_analysis(env: Env, alice: dict) -> None:
    r = await env.client.post(
        "/analyses",
        files=_upload(samples.phantom_png(5), "patient.png"),
        data={"models": ["cnn_tiny", "cnn_clinical"]},
        headers=alice,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    _common(body)
    assert body["kind"] == "analysis"
    assert body["segmentation"]["model"]["key"] == "seg_tiny"
    assert [c["model"]["key"] for c in body["classifications"]] == ["cnn_tiny", "cnn_clinical"]
    assert [e["model"]["key"] for e in body["explanations"]] == ["cnn_tiny", "cnn_clinical"]
    for e in body["explanations"]:
        await _get_png(env, e["overlay_url"], alice)
        assert e["faithfulness"] is not None
    assert len({e["overlay_url"] for e in body["explanations"]}) == 2

    # History returns exactly what was returned.
    r = await env.client.get(f"/history/{body['id']}", headers=alice)
    assert r.status_code == 200
    assert r.json() == body
    assert await env.count(Analysis, id=body["id"]) == 1
    assert await env.count(ModelResult, analysis_id=body["id"]) == 3
    first = body["classifications"][0]
    page = (await env.client.get("/history", params={"limit": 1}, headers=alice)).json()
    item = page["items"][0]
    assert item["id"] == body["id"] and item["filename"] == "patient.png"
    assert item["as_status"] == first["as_status"] and item["stage"] == first["stage"]
    assert item["models"] == ["seg_tiny", "cnn_tiny", "cnn_clinical"]


async def test_an_explained_analysis_classifies_from_its_heatmap_pass(
    env: Env, alice: dict
) -> None:
    """The Grad-CAM pass runs the whole classifier, so an analysis with heatmaps does not run
    it a second time to classify: no classify call, and the same answer /classify gives."""
    runner = env.runtime.runner
    assert runner is not None
    png = samples.phantom_png(23)

    def classify_requests() -> int:
        return int(runner.stats()["batchers"].get("cnn_tiny:classify", {"requests": 0})["requests"])

    before = classify_requests()
    r = await env.client.post(
        "/analyses",
        files=_upload(png, "a.png"),
        data={"models": "cnn_tiny", "method": "gradcam", "faithfulness": "false"},
        headers=alice,
    )
    assert r.status_code == 200, r.text
    analysed = r.json()
    assert analysed["explanations"][0]["method"] == "gradcam"
    assert classify_requests() == before
    assert "segment_classify_explain" in analysed["timings_ms"]
    r = await env.client.post(
        "/classify", files=_upload(png, "a.png"), data={"models": "cnn_tiny"}, headers=alice
    )
    assert r.status_code == 200, r.text
    assert classify_requests() == before + 1
    alone = r.json()["classifications"][0]
    together = analysed["classifications"][0]
    for key in ("as_probabilities", "stage_probabilities"):
        for name, p in alone[key].items():
            assert together[key][name] == pytest.approx(p, abs=1e-5), (key, name)
    assert together["as_status"] == alone["as_status"] and together["stage"] == alone["stage"]
    # Without heatmaps the classifier runs on its own, as before.
    r = await env.client.post(
        "/analyses", files=_upload(png, "a.png"), data={"models": "cnn_tiny", "explain": "false"},
        headers=alice,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert classify_requests() == before + 2
    assert r.json()["classifications"][0]["as_probabilities"] == alone["as_probabilities"]


async def test_models_endpoints(env: Env, alice: dict) -> None:
    r = await env.client.get("/models", headers=alice)
    assert r.status_code == 200
    models = {m["key"]: m for m in r.json()}
    assert set(models) == {"seg_tiny", "cnn_tiny", "cnn_clinical"}
    assert models["cnn_tiny"]["default"] and not models["cnn_clinical"]["default"]
    assert models["seg_tiny"]["default"] and models["seg_tiny"]["task"] == "segmentation"
    assert models["cnn_tiny"]["parameters"] > 0 and models["cnn_tiny"]["flops"] > 0
    assert models["cnn_clinical"]["label_provenance"]["label_source"] == "clinical"
    r = await env.client.get("/models/cnn_tiny", headers=alice)
    assert r.status_code == 200
    card = r.json()
    assert card["gradcam_layer"] and card["weights"]["sha256"]
    assert card["readme"].startswith("# cnn_tiny")
    assert card["plots"] == [
        {"name": "confusion_binary.png", "url": "/models/cnn_tiny/plots/confusion_binary.png"}
    ]
    await _get_png(env, card["plots"][0]["url"], alice)
    r = await env.client.get("/models/cnn_tiny/plots/..%2Fmanifest.json", headers=alice)
    assert r.status_code == 404
    r = await env.client.get("/models/nope", headers=alice)
    assert r.status_code == 404 and r.json()["code"] == "unknown_model"


async def test_health(env: Env) -> None:
    assert (await env.client.get("/health/live")).json() == {"status": "ok"}
    r = await env.client.get("/health/ready")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["database"] is True
    assert body["models_loaded"] == 3


async def test_run_analysis_is_reusable_by_jobs(env: Env, alice: dict) -> None:
    """The use case behind POST /analyses, called directly the way a job worker does."""
    import uuid

    import pytest
    from sqlalchemy.exc import DBAPIError

    from backend.repositories.users import get_user_by_email
    from backend.services.analysis import AnalysisContext, AnalysisOptions, Upload, run_analysis
    from backend.services.auth import Principal

    store = env.runtime.store
    aid = uuid.uuid4()
    # Files without a row (a crash between rename and commit) are replaced, not an error.
    store.dir_for(aid).mkdir(parents=True)
    (store.dir_for(aid) / "stale.png").write_bytes(b"old")
    async with env.runtime.sessionmaker() as session:
        user = await get_user_by_email(session, "alice@example.org")
        assert user is not None
        ctx = AnalysisContext.from_runtime(env.runtime, session)
        result = await run_analysis(
            ctx,
            Principal(user),
            Upload(samples.phantom_png(7), "job-item.png"),
            AnalysisOptions(explain=False),
            analysis_id=aid,
            job_id="job-123",
        )
    assert result.id == aid and result.explanations == []
    assert "stale.png" not in store.names(aid) and "input.png" in store.names(aid)
    assert await env.count(Analysis, id=str(aid), job_id="job-123") == 1
    # A second delivery of the same item fails in the store and leaves the first intact.
    async with env.runtime.sessionmaker() as session:
        ctx = AnalysisContext.from_runtime(env.runtime, session)
        with pytest.raises((OSError, DBAPIError)):
            await run_analysis(
                ctx, Principal(user), Upload(samples.phantom_png(7)), analysis_id=aid
            )
    assert await env.count(Analysis, id=str(aid)) == 1 and "input.png" in store.names(aid)
    assert store.leftovers() == []
    r = await env.client.get(f"/history/{aid}", headers=alice)
    assert r.status_code == 200 and r.json()["id"] == str(aid)


async def test_limits_are_the_settings_and_public(env: Env) -> None:
    """The web app reads the upload limits from the server instead of copying them."""
    r = await env.client.get("/health/limits")
    assert r.status_code == 200
    limits = r.json()
    assert limits["max_upload_bytes"] == env.settings.max_upload_bytes
    assert limits["max_models_per_request"] == env.settings.max_models_per_request
    assert limits["job_max_items"] == env.settings.job_max_items
    assert limits["min_password_length"] == 8


async def test_vocabulary_reaches_the_schema_as_named_enums(env: Env) -> None:
    from ml.vocab import CAM_METHODS, FOCUS_MODES, STAGE_NAMES

    schemas = (await env.client.get("/openapi.json")).json()["components"]["schemas"]
    assert tuple(schemas["Stage"]["enum"]) == STAGE_NAMES
    assert tuple(schemas["CamMethod"]["enum"]) == CAM_METHODS
    assert tuple(schemas["Focus"]["enum"]) == FOCUS_MODES
    assert schemas["AsStatus"]["enum"] == ["negative", "positive"]
