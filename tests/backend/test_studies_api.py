"""Whole series through the API: DICOM series (per-slice and Enhanced MR), zip and NIfTI in;
geometry-ordered slices, one 3D mask on the input grid, key slices, per-model aggregates,
the applicability domain, progress, owners only, cancel and delete, and every refusal with
its code and nothing stored."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from api_helpers import DatabaseUrls, signup_and_login
from jobs_helpers import wait_job
from sqlalchemy import func, select
from study_helpers import StudyEnv, parts, shipped_models, study_settings, wait_study

from backend.models import Analysis, Job, Study
from backend.services.job_intake import job_inputs
from ml.data.synthetic_series import (
    AXIAL_IOP,
    dicom_series,
    enhanced_mr,
    nifti_volume,
    phantom_series,
)

# Timing-sensitive (windows, waits, processes started or killed): `make test` runs it alone.
pytestmark = pytest.mark.serial

N_SLICES = 20


@pytest.fixture(scope="module")
def series() -> Any:
    return phantom_series(N_SLICES, 128, seed=4)


async def _submit(env: StudyEnv, files: list[tuple[str, bytes]], **fields: Any) -> dict:
    r = await env.client.post("/studies", headers=env.alice, **parts(files, **fields))
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["location"] == f"/studies/{body['id']}"
    assert body["status"] in ("queued", "running", "done")
    return body


async def _done(env: StudyEnv, files: list[tuple[str, bytes]], **fields: Any) -> dict:
    created = await _submit(env, files, **fields)
    study = await wait_study(env.client, created["id"], env.alice)
    assert study["status"] == "done", study
    return study


def _nifti(body: bytes) -> Any:
    import nibabel as nib

    return nib.Nifti1Image.from_bytes(gzip.decompress(body))


async def test_dicom_series_in_one_answer_out(senv: StudyEnv, series: Any) -> None:
    files = dicom_series(series, seed=1, compressed=True)
    study = await _done(senv, files, allow_out_of_domain=True)
    assert study["progress"]["percent"] == 100.0 and study["progress"]["slices_total"] == N_SLICES
    assert study["research_use_only"] is True and "not a diagnosis" in study["notice"]
    result = study["result"]
    assert result["kind"] == "study" and result["input"]["format"] == "dicom"
    slices = result["slices"]
    assert [s["index"] for s in slices] == list(range(N_SLICES))
    # Ordered by geometry, not by file name or instance number (the files were shuffled).
    positions = [s["position_mm"] for s in slices]
    assert positions == sorted(positions) and positions[0] == 0.0
    assert np.allclose(np.diff(positions), 1.0)
    # Key slices: the middle of the column, never the soft-tissue-only lateral slices.
    key = result["segmentation"]["key_slices"]
    truth = series.mask.reshape(N_SLICES, -1).mean(axis=1)
    assert key and all(truth[i] > 0 for i in key), (key, truth)
    assert all(s["key"] == (s["index"] in key) for s in slices)
    # Every key slice classified by the default model; the aggregate says how they agree.
    (agg,) = result["models"]
    assert agg["model"]["key"] == "harmonized_ordinal" and agg["slices"] == len(key)
    assert 0.0 <= agg["status_agreement"] <= 1.0 and agg["p_positive_max"] >= agg["p_positive_mean"]
    assert agg["label_provenance"]["label_source"]
    for s in slices:
        if s["key"]:
            assert [c["model"] for c in s["classifications"]] == ["harmonized_ordinal"]
            assert [h["model"] for h in s["heatmaps"]] == ["harmonized_ordinal"]
        assert s["domain"] is not None and s["image_url"]
    # The study-level headline is in the list and in history (kind study).
    r = await senv.client.get("/studies", headers=senv.alice, params={"status": "done"})
    listed = {s["id"]: s for s in r.json()["items"]}
    assert listed[study["id"]]["as_status"] == agg["as_status"]
    r = await senv.client.get("/history", headers=senv.alice, params={"kind": "study"})
    assert study["id"] in {h["id"] for h in r.json()["items"]}
    # Pictures: a slice, its mask layer, a heatmap layer.
    some = next(s for s in slices if s["key"])
    for url in (some["image_url"], some["mask_url"], some["heatmaps"][0]["heatmap_url"]):
        r = await senv.client.get(url, headers=senv.alice)
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG", url


async def test_mask_is_on_the_input_grid(senv: StudyEnv, series: Any) -> None:
    from ml.series import scan_dicom

    files = dicom_series(series, seed=2)
    study = await _done(senv, files, explain=False)
    r = await senv.client.get(study["mask_url"], headers=senv.alice)
    assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
    img = _nifti(r.content)
    assert img.shape == (128, 128, N_SLICES)
    assert np.allclose(img.affine, scan_dicom(files).affine(), atol=1e-4)
    mask = np.asarray(img.dataobj) > 0
    assert study["result"]["segmentation"]["voxels"] == int(mask.sum())
    # Voxel (col, row, slice): each slice of the volume is the mask the API shows for it.
    for s in study["result"]["slices"]:
        assert bool(mask[:, :, s["index"]].any()) == (s["mask_url"] is not None), s["index"]


async def test_enhanced_mr_and_nifti_give_the_same_study(senv: StudyEnv, series: Any) -> None:
    a = await _done(senv, [("enhanced.dcm", enhanced_mr(series))], explain=False)
    b = await _done(senv, [("volume.nii.gz", nifti_volume(series))], explain=False)
    assert a["input"]["format"] == "dicom-multiframe" and b["input"]["format"] == "nifti"
    assert a["result"]["segmentation"]["key_slices"] == b["result"]["segmentation"]["key_slices"]
    ma = np.asarray(
        _nifti((await senv.client.get(a["mask_url"], headers=senv.alice)).content).dataobj
    )
    nb = _nifti((await senv.client.get(b["mask_url"], headers=senv.alice)).content)
    # The NIfTI's mask is on the NIfTI's own grid and affine.
    assert nb.shape == (128, 128, N_SLICES)
    assert np.allclose(nb.affine, _nifti(nifti_volume(series)).affine)
    assert np.array_equal(ma, np.asarray(nb.dataobj))


async def test_out_of_domain_outputs_are_withheld_by_default(senv: StudyEnv, series: Any) -> None:
    # The synthetic phantoms are unlike the real training slices: flagged, and the classifier
    # outputs are not presented unless asked for.
    study = await _done(senv, dicom_series(series, seed=3), explain=False)
    result = study["result"]
    assert result["domain"]["in_domain"] is False and result["domain"]["reasons"]
    assert result["withheld"] is True and result["models"] == []
    assert all(s["classifications"] == [] for s in result["slices"])
    assert result["segmentation"]["key_slices"]  # the mask is still made
    assert study["in_domain"] is False


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


async def test_zip_with_bad_members_skips_and_lists_them(senv: StudyEnv, series: Any) -> None:
    files = dicom_series(series, seed=5)
    members = {f"SERIES/{name}": data for name, data in files}
    cut_name, cut = files[3]
    members[f"SERIES/{cut_name}"] = cut[: len(cut) - 500]  # truncated
    members["SERIES/copy.dcm"] = files[4][1]  # duplicate SOP instance UID
    members["SERIES/notes.txt"] = b"not dicom"
    members["__MACOSX/._IM0001.dcm"] = b"junk"
    study = await _done(senv, [("series.zip", _zip(members))], explain=False)
    skipped = {s["name"]: s["code"] for s in study["input"]["skipped"]}
    assert skipped == {cut_name: "truncated", "notes.txt": "corrupt_image"}
    assert len(study["input"]["duplicates"]) == 1
    assert study["result"]["input"]["slices"] == N_SLICES - 1


async def _refused(
    env: StudyEnv, files: list[tuple[str, bytes]], status: int, code: str, **fields: Any
) -> dict:
    async def rows() -> tuple[int, int]:
        return (
            await env.scalar(select(func.count(Study.id))),
            await env.scalar(select(func.count(Job.id))),
        )

    def inputs() -> set[str]:
        root = job_inputs(env.settings).root
        return {p.name for p in root.iterdir() if not p.name.startswith(".")}

    # Let earlier studies' jobs close first (a job drops its inputs as it closes).
    deadline = asyncio.get_running_loop().time() + 30
    while await env.scalar(select(func.count(Job.id)).where(Job.finished_at.is_(None))):
        assert asyncio.get_running_loop().time() < deadline, "an earlier job did not close"
        await asyncio.sleep(0.1)
    before, inputs_before = await rows(), inputs()
    r = await env.client.post("/studies", headers=env.alice, **parts(files, **fields))
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and body["message"].endswith("."), body
    # Nothing half-stored: no rows, no inputs, nothing in staging.
    assert await rows() == before
    assert inputs() == inputs_before
    assert list(job_inputs(env.settings).staging_dir.iterdir()) == []
    return body


def _with(files: list[tuple[str, bytes]], k: int, **changes: Any) -> list[tuple[str, bytes]]:
    import pydicom

    out = list(files)
    ds = pydicom.dcmread(io.BytesIO(out[k][1]))
    for key, value in changes.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    out[k] = (out[k][0], buf.getvalue())
    return out


async def test_refusals_have_codes_and_store_nothing(senv: StudyEnv, series: Any) -> None:
    files = dicom_series(series, seed=6)
    await _refused(senv, _with(files, 2, PatientID="SOMEONE-ELSE"), 422, "mixed_patients")
    await _refused(senv, dicom_series(series, seed=7, modality="CT"), 422, "unsupported_modality")
    axial = dicom_series(series, seed=8, orientation=AXIAL_IOP)
    await _refused(senv, axial, 422, "not_sagittal")
    await _refused(senv, files[:2], 422, "too_few_slices")
    moved = _with(files, 1, ImagePositionPatient=[float(v) for v in _position(files[0][1])])
    await _refused(senv, moved, 422, "inconsistent_geometry")
    tilted = _with(files, 1, ImageOrientationPatient=[0.0, 1.0, 0.0, 0.0, 0.5, -0.866])
    await _refused(senv, tilted, 422, "inconsistent_geometry")
    limit = senv.settings.study_max_instances
    many = [(f"x{i}.dcm", files[i % len(files)][1]) for i in range(limit + 1)]
    await _refused(senv, many, 413, "too_many_instances")
    evil = _zip({"ok/IM1.dcm": files[0][1], "../../etc/evil.dcm": files[1][1]})
    await _refused(senv, [("series.zip", evil)], 422, "unsafe_archive_name")
    await _refused(senv, [("a.png", b"\x89PNG\r\n\x1a\n" + b"0" * 100)], 422, "no_images")
    await _refused(senv, files, 400, "unknown_model", models=["nope"])


def _position(data: bytes) -> list[float]:
    import pydicom

    return list(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).ImagePositionPatient)


async def test_a_study_with_several_series_analyses_the_sagittal_one(
    senv: StudyEnv, series: Any
) -> None:
    sagittal = dicom_series(series, seed=9)
    import pydicom

    study_uid = pydicom.dcmread(io.BytesIO(sagittal[0][1])).StudyInstanceUID
    axial = dicom_series(series, seed=10, orientation=AXIAL_IOP)
    axial = [(f"AX{n}", d) for n, d in axial]
    for k in range(len(axial)):
        axial = _with(axial, k, StudyInstanceUID=study_uid)
    study = await _done(senv, sagittal + axial, explain=False)
    assert study["input"]["slices"] == N_SLICES and study["input"]["sagittal"] is True
    assert [o["sagittal"] for o in study["input"]["other_series"]] == [False]


async def test_owner_only_and_delete(senv: StudyEnv, series: Any) -> None:
    study = await _done(senv, dicom_series(series, seed=11), explain=False)
    sid = study["id"]
    for path in (f"/studies/{sid}", f"/studies/{sid}/mask.nii.gz"):
        r = await senv.client.get(path, headers=senv.bob)
        assert r.status_code == 404 and r.json()["code"] == "study_not_found"
    r = await senv.client.delete(f"/studies/{sid}", headers=senv.bob)
    assert r.status_code == 404
    r = await senv.client.get("/studies", headers=senv.bob)
    assert sid not in {s["id"] for s in r.json()["items"]}
    r = await senv.client.delete(f"/studies/{sid}", headers=senv.alice)
    assert r.status_code == 204
    assert (await senv.client.get(f"/studies/{sid}", headers=senv.alice)).status_code == 404
    assert (
        await senv.scalar(select(func.count(Analysis.id)).where(Analysis.id == uuid.UUID(sid))) == 0
    )
    assert not senv.runtime.store.exists(uuid.UUID(sid))


async def test_inputs_are_deleted_once_stored(senv: StudyEnv, series: Any) -> None:
    study = await _done(senv, dicom_series(series, seed=12), explain=False)
    # The study is reported done first; its job closes and drops the inputs just after.
    await wait_job(senv.client, study["job_id"], senv.alice)
    assert not job_inputs(senv.settings).exists(uuid.UUID(study["job_id"]))


async def test_patient_data_stays_out_of_results_and_lists(
    senv: StudyEnv, series: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    study = await _done(senv, dicom_series(series, seed=13), explain=False)
    listed = (await senv.client.get("/studies", headers=senv.alice)).text
    history = (await senv.client.get("/history", headers=senv.alice)).text
    for text in (json.dumps(study), listed, history, caplog.text):
        for value in ("DOE^JANE", "PAT-0001", "19700101"):
            assert value not in text
    # Only the study row keeps what an output object (DICOM SEG/SR) must carry.
    row = await senv.scalar(select(Study).where(Study.id == uuid.UUID(study["id"])))
    assert row.source["patient"]["PatientID"] == "PAT-0001"
    assert row.source["deidentified"] is False


async def test_progress_is_visible_while_it_runs(senv: StudyEnv, series: Any) -> None:
    created = await _submit(senv, dicom_series(series, seed=14))
    seen: set[str] = set()
    for _ in range(600):
        r = await senv.client.get(f"/studies/{created['id']}", headers=senv.alice)
        body = r.json()
        if body["progress"]["phase"]:
            seen.add(body["progress"]["phase"])
        if body["status"] in ("done", "failed"):
            break
        await asyncio.sleep(0.05)
    assert body["status"] == "done"
    assert seen & {"decode", "domain", "segment", "classify", "explain", "store"}, seen


async def test_a_study_that_keeps_killing_its_worker_fails_with_the_reason(
    senv: StudyEnv, series: Any
) -> None:
    """Its worker died job_max_attempts times: the next claim fails the item without running
    it, and the study says failed with worker_lost (not running for ever)."""
    from sqlalchemy import update

    from backend.db.base import utcnow
    from backend.models import JobItem
    from backend.services import job_processing

    created = await _done(senv, dicom_series(series, seed=17))
    study_id = uuid.UUID(created["id"])
    runtime = senv.runtime
    async with runtime.sessionmaker() as session:
        job_id = await session.scalar(select(Study.job_id).where(Study.id == study_id))
        assert job_id is not None
        # What the last killed worker left: the study open, its item running under a lapsed
        # lease, with one death short of the limit already counted.
        await session.execute(
            update(Study).where(Study.id == study_id).values(status="running", finished_at=None)
        )
        await session.execute(update(Job).where(Job.id == job_id).values(finished_at=None))
        await session.execute(
            update(JobItem)
            .where(JobItem.job_id == job_id)
            .values(
                status="running",
                worker="dead",
                lease_until=utcnow().replace(year=2000),
                lost=senv.settings.job_max_attempts - 1,
            )
        )
        await session.commit()
    out = await job_processing.process_item(runtime, job_id, 0, "next-worker")
    assert out.status == "failed" and out.detail == "worker_lost"
    body = (await senv.client.get(f"/studies/{study_id}", headers=senv.alice)).json()
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "worker_lost"
    assert f"{senv.settings.job_max_attempts} times" in body["error"]["message"]
    async with runtime.sessionmaker() as session:
        item = await session.scalar(select(JobItem).where(JobItem.job_id == job_id))
        assert item is not None and item.worker == "next-worker" and item.status == "failed"
        job = await session.get(Job, job_id)
        assert job is not None and job.finished_at is not None


async def test_cancel_a_queued_study(
    databases: DatabaseUrls, tmp_path_factory: pytest.TempPathFactory, series: Any
) -> None:
    from backend.main import create_app

    models = shipped_models(tmp_path_factory.mktemp("cancel-models"))
    url = await databases.new("sqlite")
    settings = study_settings(tmp_path_factory.mktemp("cancel"), url, models, job_concurrency=1)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            alice = await signup_and_login(client, "carol@example.org")
            env = StudyEnv(app, client, settings, alice, alice)
            first = await _submit(env, dicom_series(series, seed=15))
            second = await _submit(env, dicom_series(series, seed=16))
            r = await client.post(f"/studies/{second['id']}/cancel", headers=alice)
            assert r.status_code == 200
            assert r.json()["status"] in ("cancelled", "running")
            done = await wait_study(client, second["id"], alice)
            assert done["status"] == "cancelled" and done["result"] is None
            assert (await wait_study(client, first["id"], alice))["status"] == "done"
            assert not app.state.runtime.store.exists(uuid.UUID(second["id"]))


async def test_deidentify_and_retention(
    databases: DatabaseUrls, tmp_path_factory: pytest.TempPathFactory, series: Any
) -> None:
    import pydicom

    from backend.db.base import utcnow
    from backend.main import create_app
    from backend.services.housekeeping import expire_study_inputs

    models = shipped_models(tmp_path_factory.mktemp("deid-models"))
    url = await databases.new("sqlite")
    settings = study_settings(
        tmp_path_factory.mktemp("deid"),
        url,
        models,
        deidentify=True,
        study_input_retention_seconds=3600,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            alice = await signup_and_login(client, "dave@example.org")
            env = StudyEnv(app, client, settings, alice, alice)
            files = dicom_series(series, seed=17)
            original = pydicom.dcmread(io.BytesIO(files[0][1]))
            study = await _done(env, files, explain=False)
            job_id = uuid.UUID(study["job_id"])
            folder = job_inputs(settings).dir_for(job_id)
            kept = sorted(p for p in folder.iterdir() if p.suffix == ".bin")
            assert len(kept) == N_SLICES  # kept for the retention period
            ds = pydicom.dcmread(kept[0])
            assert str(ds.PatientName) == "" and ds.PatientID.startswith("ANON-")
            assert "PatientBirthDate" not in ds or ds.PatientBirthDate == ""
            assert ds.PatientIdentityRemoved == "YES"
            assert ds.StudyInstanceUID == original.StudyInstanceUID  # UIDs kept
            row = await env.scalar(select(Study).where(Study.id == uuid.UUID(study["id"])))
            assert row.source["deidentified"] is True
            assert "DOE^JANE" not in json.dumps(row.source)
            # Not yet expired; then expired.
            async with app.state.runtime.sessionmaker() as session:
                assert await expire_study_inputs(session, settings) == 0
                assert folder.is_dir()
            # The study answers "done" while its job is being closed: on a busy machine the job's
            # finish can land a moment later, so look again (fresh sessions) until it has.
            later, removed = utcnow() + timedelta(hours=2), 0
            deadline = asyncio.get_running_loop().time() + 30
            while not removed and asyncio.get_running_loop().time() < deadline:
                async with app.state.runtime.sessionmaker() as session:
                    removed = await expire_study_inputs(session, settings, now=later)
                if not removed:
                    await asyncio.sleep(0.2)
            assert removed == 1
            assert not folder.exists()


def test_shipped_models_dir_is_complete(tmp_path: Path) -> None:
    d = shipped_models(tmp_path)
    assert (d / "domain_reference.npz").is_file()


async def test_deleting_the_history_entry_deletes_the_study(senv: StudyEnv, series: Any) -> None:
    study = await _done(senv, dicom_series(series, seed=18), explain=False)
    r = await senv.client.delete(f"/history/{study['id']}", headers=senv.alice)
    assert r.status_code == 204
    r = await senv.client.get(f"/studies/{study['id']}", headers=senv.alice)
    assert r.status_code == 404
    assert (
        await senv.scalar(select(func.count(Study.id)).where(Study.id == uuid.UUID(study["id"])))
        == 0
    )
