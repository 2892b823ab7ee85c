"""Results in hospital formats: DICOM SEG, SR, parametric maps and secondary captures (valid per
dciodvfy, read back with highdicom, the SEG decoding to the study's own mask, each capture showing
the web app's picture) and FHIR R4 bundles (validated)."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from study_helpers import StudyEnv, parts, wait_study

from ml.data.synthetic_series import dicom_series, enhanced_mr, nifti_volume, phantom_series

DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def series() -> Any:
    return phantom_series(16, 128, seed=21)


def dciodvfy(body: bytes, tmp: Path) -> str:
    """Run dicom3tools' validator; fail on any error (it exits 1 on errors)."""
    if DCIODVFY is None:
        pytest.skip("dciodvfy (Debian's dicom3tools) is not installed; make test installs it")
    path = tmp / "object.dcm"
    path.write_bytes(body)
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    report = run.stdout + run.stderr
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert run.returncode == 0 and not errors, report
    return report


async def _study(env: StudyEnv, files: list[tuple[str, bytes]], **fields: Any) -> dict:
    r = await env.client.post("/studies", headers=env.alice, **parts(files, **fields))
    assert r.status_code == 202, r.text
    study = await wait_study(env.client, r.json()["id"], env.alice)
    assert study["status"] == "done", study
    return study


async def _get(env: StudyEnv, path: str, status: int = 200) -> Any:
    r = await env.client.get(path, headers=env.alice)
    assert r.status_code == status, r.text
    return r


def _png_rgb(body: bytes) -> np.ndarray:
    import cv2

    return cv2.cvtColor(
        cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )


def to_bytes(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _mask(study_mask: bytes) -> np.ndarray:
    import nibabel as nib

    img = nib.Nifti1Image.from_bytes(gzip.decompress(study_mask))
    return np.transpose(np.asarray(img.dataobj) > 0, (2, 1, 0))  # (slice, row, col)


async def test_study_as_dicom_objects(senv: StudyEnv, series: Any, tmp_path: Path) -> None:
    import highdicom as hd
    import pydicom

    files = dicom_series(series, seed=21)
    study = await _study(senv, files, allow_out_of_domain=True)
    sid = study["id"]
    r = await _get(senv, f"/studies/{sid}/dicom")
    assert r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        objects = {name: zf.read(name) for name in zf.namelist()}
    assert {"seg.dcm", "sr.dcm"} <= set(objects) and any(n.startswith("pm-") for n in objects)
    for body in objects.values():
        dciodvfy(body, tmp_path)
        ds = pydicom.dcmread(io.BytesIO(body))
        assert "research use only" in ds.SeriesDescription.lower()
        assert ds.ContributingEquipmentSequence[0].Manufacturer == "spondyscan"

    # The SEG references the source series and decodes to the study's own mask.
    seg = hd.seg.segread(io.BytesIO(objects["seg.dcm"]))
    source_uids = [pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID for _, d in files]
    source_series = pydicom.dcmread(io.BytesIO(files[0][1])).SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source_series
    mask = _mask((await _get(senv, f"/studies/{sid}/mask.nii.gz")).content)
    by_uid = {s["sop_instance_uid"]: s["index"] for s in study["result"]["slices"]}
    referenced = [
        uid for uid in source_uids if mask[by_uid[uid]].any()
    ]  # the SEG omits empty frames
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=referenced, segment_numbers=[1]
    )
    for uid, frame in zip(referenced, pixels[..., 0], strict=True):
        assert np.array_equal(frame > 0, mask[by_uid[uid]]), uid

    # The SR: unverified, research labels in their own coding scheme, references the SEG.
    sr = pydicom.dcmread(io.BytesIO(objects["sr.dcm"]))
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99SPONDYSCAN"
    text = str(sr.ContentSequence)
    assert "AS status (research label)" in text and "Probability of AS positive" in text
    assert seg.SOPInstanceUID in str(sr.CurrentRequestedProcedureEvidenceSequence)

    # A parametric map per model: Grad-CAM, quantity DCM 130403.
    pm = pydicom.dcmread(io.BytesIO(next(v for k, v in objects.items() if k.startswith("pm-"))))
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeValue == "130403"
    key = [s for s in study["result"]["slices"] if s["key"]]
    assert pm.NumberOfFrames == len(key)

    # Secondary captures for viewers without SEG or parametric-map support: per model and key
    # slice, the picture the web app shows under a burnt-in banner, referencing its source.
    captures = [pydicom.dcmread(io.BytesIO(v)) for k, v in objects.items() if k.startswith("sc-")]
    pictures = [(s, h) for s in key for h in s["heatmaps"]]
    assert len(captures) == len(pictures) > 0
    assert len({c.SeriesInstanceUID for c in captures}) == 1
    by_source = {
        (c.SourceImageSequence[0].ReferencedSOPInstanceUID, c.DerivationDescription): c
        for c in captures
    }
    for s, heat in pictures:
        sc = by_source[
            (s["sop_instance_uid"], f"Heatmap of {heat['model']} over the analysed slice")
        ]
        assert sc.StudyInstanceUID == seg.StudyInstanceUID and sc.BurnedInAnnotation == "NO"
        assert "research use only" in sc.ImageComments
        assert hd.imread(io.BytesIO(to_bytes(sc))).get_frame(1).shape == sc.pixel_array.shape
        shown = _png_rgb((await _get(senv, heat["overlay_url"])).content)
        # Enlarged (nearest neighbour) to a legible width, at the source's proportions (square
        # here), under the banner's two lines.
        pixels = sc.pixel_array
        k = pixels.shape[1] // shown.shape[1]
        banner = pixels.shape[0] - shown.shape[0] * k
        assert k >= 2 and pixels.shape[1] >= 512 and banner >= 40
        assert pixels[:banner].max() > 0  # the banner's text
        assert np.array_equal(pixels[banner::k, ::k], shown)

    # Each object alone, and the same UIDs on every export (a PACS keeps one copy).
    seg_again = pydicom.dcmread(io.BytesIO((await _get(senv, f"/studies/{sid}/seg.dcm")).content))
    assert seg_again.SOPInstanceUID == seg.SOPInstanceUID
    sr_alone = (await _get(senv, f"/studies/{sid}/sr.dcm")).content
    assert pydicom.dcmread(io.BytesIO(sr_alone)).SOPInstanceUID == sr.SOPInstanceUID


async def test_study_as_fhir(senv: StudyEnv, series: Any) -> None:
    import pydicom
    from fhir.resources.R4B.bundle import Bundle

    files = dicom_series(series, seed=22)
    study = await _study(senv, files, allow_out_of_domain=True, explain=False)
    r = await _get(senv, f"/studies/{study['id']}/fhir")
    assert r.headers["content-type"].startswith("application/fhir+json")
    bundle = r.json()
    Bundle.model_validate(bundle)  # every resource validates against FHIR R4(B)
    by_type: dict[str, list[dict]] = {}
    for entry in bundle["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    (report,) = by_type["DiagnosticReport"]
    assert report["status"] == "preliminary" and "Research use only" in report["conclusion"]
    models = study["result"]["models"]
    assert len(by_type["Observation"]) == 2 * len(models) == len(report["result"])
    assert all(o["status"] == "preliminary" for o in by_type["Observation"])
    assert any("feature_rule" in o["note"][0]["text"] for o in by_type["Observation"])
    (imaging,) = by_type["ImagingStudy"]
    uid = pydicom.dcmread(io.BytesIO(files[0][1])).StudyInstanceUID
    assert imaging["identifier"][0]["value"] == f"urn:oid:{uid}"


async def test_enhanced_mr_study_exports_a_seg(senv: StudyEnv, series: Any, tmp_path: Path) -> None:
    import highdicom as hd

    study = await _study(
        senv, [("enhanced.dcm", enhanced_mr(series, seed=23))], allow_out_of_domain=True
    )
    body = (await _get(senv, f"/studies/{study['id']}/seg.dcm")).content
    dciodvfy(body, tmp_path)
    seg = hd.seg.segread(io.BytesIO(body))
    assert seg.NumberOfFrames >= 1


async def test_inputs_without_dicom_source(senv: StudyEnv, series: Any) -> None:
    study = await _study(senv, [("volume.nii.gz", nifti_volume(series))], explain=False)
    for path in ("dicom", "seg.dcm", "sr.dcm"):
        r = await _get(senv, f"/studies/{study['id']}/{path}", 409)
        assert r.json()["code"] == "no_dicom_source"
    bundle = (await _get(senv, f"/studies/{study['id']}/fhir")).json()
    assert "ImagingStudy" not in {e["resource"]["resourceType"] for e in bundle["entry"]}
    # A PNG slice's analysis: FHIR yes, DICOM objects no.
    import api_samples as samples

    r = await senv.client.post(
        "/analyses", headers=senv.alice, **parts([("s.png", samples.phantom_png(3))], "file")
    )
    aid = r.json()["id"]
    assert (await _get(senv, f"/analyses/{aid}/seg.dcm", 409)).json()["code"] == "no_dicom_source"
    await _get(senv, f"/analyses/{aid}/fhir")


def _middle_slice(series: Any, **changes: Any) -> tuple[str, bytes]:
    """The middle slice of a phantom series (the segmenter finds the column there), edited."""
    import pydicom

    files = dicom_series(series, seed=24)
    middle = sorted(files, key=lambda f: pydicom.dcmread(io.BytesIO(f[1])).ImagePositionPatient[0])
    name, body = middle[len(middle) // 2]
    if not changes:
        return name, body
    ds = pydicom.dcmread(io.BytesIO(body))
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    return name, to_bytes(ds)


async def _slice_objects(
    env: StudyEnv, name: str, body: bytes, tmp_path: Path, **fields: Any
) -> tuple[dict, dict[str, Any]]:
    """Analyse one DICOM slice and export it: (the analysis, member name -> object), each valid."""
    import pydicom

    r = await env.client.post(
        "/analyses",
        headers=env.alice,
        **parts([(name, body)], "file", allow_out_of_domain=True, **fields),
    )
    assert r.status_code == 200, r.text
    analysis = r.json()
    r = await env.client.get(f"/analyses/{analysis['id']}/dicom", headers=env.alice)
    if r.status_code == 409:
        assert r.json()["code"] == "empty_mask"  # nothing segmented on this phantom slice
        pytest.skip("the segmenter found nothing on this phantom slice")
    assert r.status_code == 200, r.text
    objects = {}
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        for member in zf.namelist():
            dciodvfy(zf.read(member), tmp_path)
            objects[member] = pydicom.dcmread(io.BytesIO(zf.read(member)))
    return analysis, objects


async def test_dicom_slice_analysis_exports(senv: StudyEnv, series: Any, tmp_path: Path) -> None:
    import pydicom

    name, body = _middle_slice(series)
    analysis, objects = await _slice_objects(senv, name, body, tmp_path)
    seg = objects["seg.dcm"]
    captures = [ds for member, ds in objects.items() if "sc-" in member]
    source = pydicom.dcmread(io.BytesIO(body))
    frame = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert frame.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)
    explained = [e for e in analysis["explanations"] if e["head"] == "binary"]
    assert len(captures) == len(explained) > 0
    for capture in captures:
        assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert capture.PatientID == source.PatientID
        assert capture.PatientOrientation == ["P", "F"]  # sagittal: rows run back, columns down
        assert capture.BurnedInAnnotation == "NO"  # the banner does not identify the patient


@pytest.mark.parametrize(
    ("method", "label", "code"),
    [("gradcam", "GRADCAM", "130403"), ("occlusion", "OCCLUSION", "OCCLUSION")],
)
async def test_parametric_maps_name_the_method_that_made_them(
    senv: StudyEnv, series: Any, tmp_path: Path, method: str, label: str, code: str
) -> None:
    name, body = _middle_slice(series)
    analysis, objects = await _slice_objects(senv, name, body, tmp_path, method=method)
    explained = [e for e in analysis["explanations"] if e["head"] == "binary"]
    assert explained and {e["method"] for e in explained} == {method}
    maps = [ds for member, ds in objects.items() if member.startswith("pm-")]
    assert len(maps) == len(explained)
    for pm in maps:
        mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        concept = mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0]
        assert (concept.CodeValue, mapping.LUTLabel, pm.ContentLabel) == (code, label, label)
        if method == "gradcam":
            assert concept.CodingSchemeDesignator == "DCM" and "Grad-CAM" in pm.SeriesDescription
        else:
            # Not a DICOM concept: our scheme, named in the object itself.
            assert concept.CodingSchemeDesignator == "99SPONDYSCAN"
            assert pm.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == (
                "99SPONDYSCAN"
            )
            assert "Occlusion" in pm.SeriesDescription and "Grad-CAM" not in pm.SeriesDescription


async def test_oblique_slice_and_non_ascii_names(
    senv: StudyEnv, series: Any, tmp_path: Path
) -> None:
    # A slice tilted 30 degrees (oblique planes are routine for the sacroiliac joints), and a
    # patient name outside ASCII in UTF-8: every object keeps the name and is valid.
    name, body = _middle_slice(
        series,
        ImageOrientationPatient=[0.0, 0.866025, 0.5, 0.0, 0.5, -0.866025],
        SpecificCharacterSet="ISO_IR 192",
        PatientName="山田^太郎",
    )
    _, objects = await _slice_objects(senv, name, body, tmp_path)
    assert {"seg.dcm", "sr.dcm"} <= set(objects)
    captures = [ds for member, ds in objects.items() if "sc-" in member]
    assert captures
    for ds in objects.values():
        assert str(ds.PatientName) == "山田^太郎", ds.SOPClassUID
    for capture in captures:
        # Rows run mostly back and partly up, columns mostly down and partly back.
        assert capture.PatientOrientation == ["PH", "FP"]


async def test_a_source_without_geometry_exports_seg_and_sr(
    senv: StudyEnv, series: Any, tmp_path: Path
) -> None:
    # The maps and captures need the image's place and directions; without them, the SEG and
    # SR are still made.
    name, body = _middle_slice(series, ImageOrientationPatient=None, ImagePositionPatient=None)
    _, objects = await _slice_objects(senv, name, body, tmp_path)
    assert set(objects) == {"seg.dcm", "sr.dcm"}


async def test_exports_are_owner_only_and_wait_for_the_study(senv: StudyEnv, series: Any) -> None:
    study = await _study(senv, dicom_series(series, seed=25), explain=False)
    r = await senv.client.get(f"/studies/{study['id']}/dicom", headers=senv.bob)
    assert r.status_code == 404 and r.json()["code"] == "study_not_found"
    r = await senv.client.get(f"/analyses/{study['id']}/dicom", headers=senv.alice)
    assert r.status_code == 404  # a study is exported under /studies
    # Not done yet: 409 with the state.
    r = await senv.client.post(
        "/studies", headers=senv.alice, **parts(dicom_series(series, seed=26))
    )
    sid = r.json()["id"]
    r = await senv.client.get(f"/studies/{sid}/seg.dcm", headers=senv.alice)
    assert r.status_code in (200, 409)
    if r.status_code == 409:
        assert r.json()["code"] == "study_not_done"
    await wait_study(senv.client, sid, senv.alice)


async def test_stow_rs_in_starts_a_study(senv: StudyEnv, series: Any) -> None:
    import pydicom

    from backend.interop import multipart

    files = dicom_series(series, seed=27)
    body, content_type = multipart.build([d for _, d in files] + [b"not dicom at all"])
    r = await senv.client.post(
        "/dicomweb/studies",
        content=body,
        headers={**senv.alice, "Content-Type": content_type, "Accept": "application/dicom+json"},
    )
    assert r.status_code == 202, r.text  # one part failed
    assert r.headers["content-type"].startswith("application/dicom+json")
    stow = r.json()
    referenced = stow["00081199"]["Value"]
    assert len(referenced) == len(files) and len(stow["00081198"]["Value"]) == 1
    sent = {pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID for _, d in files}
    assert {item["00081155"]["Value"][0] for item in referenced} == sent
    study_url = stow["00081190"]["Value"][0]
    assert r.headers["location"] == study_url and study_url.startswith("/studies/")
    study = await wait_study(senv.client, study_url.rsplit("/", 1)[1], senv.alice)
    assert study["status"] == "done" and study["result"]["input"]["slices"] == len(files)


async def _stow(env: StudyEnv, who: dict[str, str], parts_: list[bytes]) -> tuple[int, dict]:
    from backend.interop import multipart

    body, content_type = multipart.build(parts_)
    r = await env.client.post(
        "/dicomweb/studies", content=body, headers={**who, "Content-Type": content_type}
    )
    assert r.status_code in (200, 202), r.text
    assert r.headers["location"] == r.json()["00081190"]["Value"][0]
    return r.status_code, r.json()


def _answer(stow: dict) -> tuple[set[str], dict[str, int]]:
    """(referenced SOP Instance UIDs, failed SOP Instance UID -> reason)."""
    referenced = {item["00081155"]["Value"][0] for item in stow["00081199"]["Value"]}
    failed = {
        item["00081155"]["Value"][0]: item["00081197"]["Value"][0]
        for item in stow.get("00081198", {}).get("Value", [])
    }
    return referenced, failed


def _sop_uid(part: bytes) -> str:
    import pydicom

    return str(pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True).SOPInstanceUID)


async def _total(env: StudyEnv, who: dict[str, str]) -> int:
    r = await env.client.get("/studies", headers=who)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


async def test_a_repeated_stow_names_the_same_study(senv: StudyEnv, series: Any) -> None:
    """A router that resends a series after losing the answer gets the same study and the same
    answer (in any order of the parts), not a second analysis; another user, or the same series
    after its study was deleted, makes a new one."""
    files = [d for _, d in dicom_series(series, seed=31)]
    stranger = dicom_series(series, seed=32)[0][1]  # another series: refused inside the request
    before = await _total(senv, senv.alice)
    status, first = await _stow(senv, senv.alice, [*files, stranger, files[0]])
    assert status == 202
    referenced, failed = _answer(first)
    # The copy of an instance fails; the instance itself is referenced.
    assert len(referenced) == len(files) and len(first["00081198"]["Value"]) == 2
    assert set(failed) == {_sop_uid(stranger), _sop_uid(files[0])}
    url = first["00081190"]["Value"][0]
    await wait_study(senv.client, url.rsplit("/", 1)[1], senv.alice)

    status, again = await _stow(senv, senv.alice, [stranger, *reversed(files), files[0]])
    assert status == 202 and again["00081190"]["Value"][0] == url
    assert _answer(again) == (referenced, failed)
    assert await _total(senv, senv.alice) == before + 1
    # Fewer instances are another request: a new study.
    status, part = await _stow(senv, senv.alice, files[:-1])
    assert status == 200 and part["00081190"]["Value"][0] != url
    await wait_study(senv.client, part["00081190"]["Value"][0].rsplit("/", 1)[1], senv.alice)
    assert await _total(senv, senv.alice) == before + 2

    status, bobs = await _stow(senv, senv.bob, [*files, stranger])
    assert bobs["00081190"]["Value"][0] != url
    await wait_study(senv.client, bobs["00081190"]["Value"][0].rsplit("/", 1)[1], senv.bob)

    r = await senv.client.delete(url, headers=senv.alice)
    assert r.status_code == 204, r.text
    status, after = await _stow(senv, senv.alice, [*files, stranger])
    assert after["00081190"]["Value"][0] != url
    await wait_study(senv.client, after["00081190"]["Value"][0].rsplit("/", 1)[1], senv.alice)


async def test_stow_rs_refusals(senv: StudyEnv, series: Any) -> None:
    from backend.interop import multipart

    r = await senv.client.post(
        "/dicomweb/studies",
        content=b"x",
        headers={**senv.alice, "Content-Type": "application/dicom"},
    )
    assert r.status_code == 400 and r.json()["code"] == "bad_multipart"
    body, content_type = multipart.build([b"{}"], media_type="application/json")
    r = await senv.client.post(
        "/dicomweb/studies", content=body, headers={**senv.alice, "Content-Type": content_type}
    )
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    body, content_type = multipart.build([d for _, d in dicom_series(series, seed=28)])
    r = await senv.client.post(
        "/dicomweb/studies", content=body, headers={"Content-Type": content_type}
    )
    assert r.status_code == 401  # credentials first, as everywhere


async def test_pull_and_push_need_a_dicomweb_server(senv: StudyEnv, series: Any) -> None:
    r = await senv.client.post("/studies/pull", json={"study_uid": "1.2.3"}, headers=senv.alice)
    assert r.status_code == 409 and r.json()["code"] == "dicomweb_not_configured"
    r = await senv.client.post(
        "/studies", headers=senv.alice, **parts(dicom_series(series, seed=29), push=True)
    )
    assert r.status_code == 409 and r.json()["code"] == "dicomweb_not_configured"
    r = await senv.client.post("/studies/pull", json={"study_uid": "1.2.x"}, headers=senv.alice)
    assert r.status_code == 422


def test_captures_keep_the_source_proportions() -> None:
    from pydicom.dataset import Dataset

    from backend.interop.dicom_out import capture_picture, with_banner

    shown = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    tall = Dataset()
    tall.Rows, tall.Columns, tall.PixelSpacing = 320, 160, [1.0, 1.0]  # twice as tall as wide
    assert capture_picture(shown, tall).shape == (1024, 512, 3)
    tall.PixelSpacing = [0.5, 1.0]  # the same number of rows over half the height: square
    square = capture_picture(shown, tall)
    assert square.shape == (512, 512, 3) and np.array_equal(square[::2, ::2], shown)
    labelled = with_banner(square, ["spondyscan model heatmap", "research use only"])
    banner = labelled.shape[0] - 512
    assert (
        banner >= 40 and labelled[:banner].max() > 200 and np.array_equal(labelled[banner:], square)
    )
