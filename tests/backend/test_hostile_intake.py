"""Hostile uploads at intake: malformed zips, malformed series, NIfTI volumes that would decode
to more than the limit and STOW-RS bodies of countless parts are refused with a 4xx code and a
sentence (or a damaged member fails alone), never a 500, and nothing is left staged."""

from __future__ import annotations

import gzip
import io
import struct
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from api_helpers import DatabaseUrls, make_settings, signup_and_login
from jobs_helpers import DEAD_BROKER, wait_job

from backend.core.config import Settings
from backend.core.errors import AppError
from backend.services.job_intake import IncomingFile, job_inputs, stage_files
from backend.services.study_intake import stage_study
from backend.storage.job_inputs import JobInputStore, StagedInputs
from ml.data.synthetic_series import dicom_series, enhanced_mr, phantom_series

N = 4
SIZE = 32
DATE = (2024, 1, 1, 0, 0, 0)
LOCAL, CENTRAL, END = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"


@pytest.fixture(scope="module")
def phantom() -> Any:
    return phantom_series(N, SIZE, seed=5)


@pytest.fixture(scope="module")
def files(phantom: Any) -> list[tuple[str, bytes]]:
    return dicom_series(phantom, seed=6)


def _settings(tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"study_max_instances": 20, "job_max_items": 20}
    values.update(overrides)
    return make_settings(tmp, "sqlite+aiosqlite:///unused.db", tmp / "models", **values)


def _staged(tmp: Path) -> StagedInputs:
    return JobInputStore(tmp / "inputs").stage(uuid.uuid4())


def _study(tmp: Path, uploads: list[tuple[str, bytes]], **overrides: Any) -> Any:
    incoming = [IncomingFile(name, io.BytesIO(data)) for name, data in uploads]
    return stage_study(_staged(tmp), incoming, _settings(tmp, **overrides))


def _job(tmp: Path, uploads: list[tuple[str, bytes]]) -> Any:
    incoming = [IncomingFile(name, io.BytesIO(data)) for name, data in uploads]
    return stage_files(_staged(tmp), incoming, _settings(tmp))


def _refused(call: Callable[[], Any], status: int, code: str) -> None:
    with pytest.raises(AppError) as info:
        call()
    err = info.value
    assert (err.status_code, err.code) == (status, code), err.message
    assert err.message.endswith("."), err.message


# ----------------------------------------------------------------------------- zips


def _zip(members: dict[str, bytes], lzma_names: tuple[str, ...] = ()) -> bytearray:
    """A zip with fixed dates (the same bytes every time)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=DATE)
            info.compress_type = zipfile.ZIP_LZMA if name in lzma_names else zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return bytearray(buf.getvalue())


def _header(d: bytearray, signature: bytes, name: bytes) -> int:
    """Where the local or central header of a member starts."""
    length_at, name_at = (26, 30) if signature == LOCAL else (28, 46)
    at = d.find(signature)
    while at >= 0:
        length = struct.unpack_from("<H", d, at + length_at)[0]
        if d[at + name_at : at + name_at + length] == name:
            return at
        at = d.find(signature, at + 4)
    raise AssertionError(f"no header for {name!r}")


def _series_zip(files: list[tuple[str, bytes]], **extra: bytes) -> dict[str, bytes]:
    return {**{f"S/{name}": data for name, data in files}, **extra}


def future_version(files: list[tuple[str, bytes]]) -> bytes:
    """The central directory asks for zip version 8.6 (NotImplementedError on opening)."""
    d = _zip(_series_zip(files))
    struct.pack_into("<H", d, d.find(CENTRAL) + 6, 86)
    return bytes(d)


def bad_utf8_name(files: list[tuple[str, bytes]]) -> bytes:
    """A central-directory name flagged UTF-8 that is not (UnicodeDecodeError on opening)."""
    d = _zip(_series_zip(files, **{"S/XXXX.dcm": files[0][1]}))
    d = bytearray(d.replace(b"S/XXXX.dcm", b"S/\xff\xfeXX.dcm"))
    d[_header(d, CENTRAL, b"S/\xff\xfeXX.dcm") + 9] |= 0x08
    return bytes(d)


def negative_offsets(files: list[tuple[str, bytes]]) -> bytes:
    """The end record puts the central directory 1 MiB past its place: every member's offset
    comes out negative (ValueError: negative seek value, on extraction)."""
    d = _zip(_series_zip(files))
    end = d.rfind(END)
    offset = struct.unpack_from("<I", d, end + 16)[0]
    struct.pack_into("<I", d, end + 16, offset + 0x100000)
    return bytes(d)


def bad_local_name(files: list[tuple[str, bytes]]) -> bytes:
    """One member's local header flags its name UTF-8 and it is not (UnicodeDecodeError)."""
    d = _zip(_series_zip(files, **{"S/bad.dcm": files[0][1]}))
    at = _header(d, LOCAL, b"S/bad.dcm")
    d[at + 7] |= 0x08
    d[at + 30 + 2] = 0xFF
    return bytes(d)


def bad_lzma(files: list[tuple[str, bytes]]) -> bytes:
    """One LZMA member whose data is corrupt (lzma.LZMAError on extraction)."""
    d = _zip(_series_zip(files, **{"S/bad.dcm": files[0][1]}), lzma_names=("S/bad.dcm",))
    data = _header(d, LOCAL, b"S/bad.dcm") + 30 + len(b"S/bad.dcm")
    for i in range(data + 10, data + 20):
        d[i] ^= 0xFF
    return bytes(d)


WHOLE = {"future_version": future_version, "bad_utf8_name": bad_utf8_name}
ONE_MEMBER = {"bad_local_name": bad_local_name, "bad_lzma": bad_lzma}


@pytest.mark.parametrize("make", list(WHOLE.values()), ids=list(WHOLE))
def test_an_unreadable_archive_is_bad_archive(
    tmp_path: Path, files: list[tuple[str, bytes]], make: Any
) -> None:
    archive = [("series.zip", make(files))]
    _refused(lambda: _job(tmp_path, archive), 400, "bad_archive")
    _refused(lambda: _study(tmp_path, archive), 400, "bad_archive")


@pytest.mark.parametrize("make", list(ONE_MEMBER.values()), ids=list(ONE_MEMBER))
def test_a_damaged_member_fails_alone(
    tmp_path: Path, files: list[tuple[str, bytes]], make: Any
) -> None:
    archive = [("series.zip", make(files))]
    items = _job(tmp_path / "job", archive)
    errors = {item.filename: item.error and item.error[0] for item in items}
    assert errors.pop("S/bad.dcm") == "corrupt_archive"
    assert set(errors.values()) == {None} and len(errors) == N
    study = _study(tmp_path / "study", archive)
    assert study.summary["skipped"] == [
        {"name": "bad.dcm", "code": "corrupt_archive", "reason": "cannot be extracted"}
    ]
    assert study.slices == N


def test_every_member_at_a_negative_offset(tmp_path: Path, files: list[tuple[str, bytes]]) -> None:
    archive = [("series.zip", negative_offsets(files))]
    items = _job(tmp_path, archive)
    assert [item.error and item.error[0] for item in items] == ["corrupt_archive"] * N
    _refused(lambda: _study(tmp_path, archive), 400, "no_images")


# ----------------------------------------------------------------------------- series


def _replace_element(data: bytes, tag: bytes, element: bytes) -> bytes:
    """Swap one explicit-VR element (a short-length VR) for other raw bytes."""
    at = data.index(tag)
    length = struct.unpack_from("<H", data, at + 6)[0]
    return data[:at] + element + data[at + 8 + length :]


def test_a_malformed_header_in_one_file_is_skipped(
    tmp_path: Path, files: list[tuple[str, bytes]]
) -> None:
    name, data = files[-1]
    # Rows (0028,0010) 3 bytes long for VR US.
    broken = _replace_element(data, b"\x28\x00\x10\x00US", b"\x28\x00\x10\x00US\x03\x00 \x00\x00")
    study = _study(tmp_path, [*files[:-1], (name, broken)])
    skipped = {s["name"]: s["code"] for s in study.summary["skipped"]}
    assert skipped == {name: "corrupt_image"} and study.slices == N - 1


def test_an_unexpected_reader_error_is_a_422(
    tmp_path: Path, files: list[tuple[str, bytes]]
) -> None:
    name, data = files[-1]
    # ImagePositionPatient (0020,0032) as 7 bytes of VR FD: pydicom fails reading it.
    broken = _replace_element(data, b"\x20\x00\x32\x00DS", b"\x20\x00\x32\x00FD\x07\x00" + bytes(7))
    _refused(lambda: _study(tmp_path, [*files[:-1], (name, broken)]), 422, "corrupt_image")


@pytest.mark.parametrize("what", ["empty_per_frame", "empty_plane_position"])
def test_broken_multiframe_geometry_is_a_422(tmp_path: Path, phantom: Any, what: str) -> None:
    import pydicom
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(io.BytesIO(enhanced_mr(phantom, seed=7)))
    if what == "empty_per_frame":
        ds.PerFrameFunctionalGroupsSequence = Sequence([])
    else:
        ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence = Sequence([])
    buf = io.BytesIO()
    ds.save_as(buf)
    _refused(lambda: _study(tmp_path, [("mf.dcm", buf.getvalue())]), 422, "inconsistent_geometry")


def _nifti(arr: np.ndarray, slope: float | None = None) -> bytes:
    import nibabel as nib

    raw = bytearray(nib.Nifti1Image(arr, np.eye(4)).to_bytes())
    if slope is not None:
        struct.pack_into("<ff", raw, 112, slope, 0.0)  # scl_slope, scl_inter
    return gzip.compress(bytes(raw), mtime=0)


def test_nifti_rgb_is_unsupported_format(tmp_path: Path) -> None:
    rgb = np.zeros((N, 16, 16), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    _refused(lambda: _study(tmp_path, [("v.nii.gz", _nifti(rgb))]), 422, "unsupported_format")


def test_nifti_that_would_decode_past_the_limit_is_refused_first(tmp_path: Path) -> None:
    limit = 24 * 1024  # bytes of decoded voxels
    small = np.arange(N * 32 * 32, dtype=np.uint8).reshape(N, 32, 32)  # 4096 voxels
    big = np.zeros((N, 64, 64), dtype=np.uint8)  # 16 KiB on disk, 64 KiB as float32

    assert _study(tmp_path / "a", [("v.nii.gz", _nifti(small))], max_decoded_bytes=limit).slices
    _refused(
        lambda: _study(tmp_path / "b", [("v.nii.gz", _nifti(big))], max_decoded_bytes=limit),
        413,
        "too_large",
    )
    # Scaled voxels are loaded as float64: 8 bytes each.
    _refused(
        lambda: _study(
            tmp_path / "c", [("v.nii.gz", _nifti(small, slope=2.0))], max_decoded_bytes=limit
        ),
        413,
        "too_large",
    )


def test_an_unexpected_nifti_reader_error_is_a_422(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ml.series

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(ml.series, "load_nifti", boom)
    small = np.zeros((N, 16, 16), dtype=np.uint8)
    _refused(lambda: _study(tmp_path, [("v.nii.gz", _nifti(small))]), 422, "corrupt_image")


# ----------------------------------------------------------------------------- API


@dataclass
class HostileEnv:
    app: Any
    client: httpx.AsyncClient
    settings: Settings
    alice: dict[str, str]


@pytest.fixture(scope="module")
async def henv(
    databases: DatabaseUrls, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HostileEnv]:
    from backend.main import create_app

    url = await databases.new("sqlite")
    settings = make_settings(
        tmp_path_factory.mktemp("hostile"),
        url,
        models_dir,
        job_backend="embedded",
        broker_url=DEAD_BROKER,
        job_max_items=20,
        study_max_instances=20,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            alice = await signup_and_login(client, "alice@example.org")
            yield HostileEnv(app, client, settings, alice)


def _nothing_staged(env: HostileEnv) -> None:
    assert list(job_inputs(env.settings).staging_dir.iterdir()) == []


async def test_api_malformed_zips_are_4xx(henv: HostileEnv, files: list[tuple[str, bytes]]) -> None:
    for make in WHOLE.values():
        upload = [("files", ("series.zip", make(files), "application/zip"))]
        for route in ("/jobs", "/studies"):
            r = await henv.client.post(route, files=upload, headers=henv.alice)
            assert r.status_code == 400 and r.json()["code"] == "bad_archive", (route, r.text)
            _nothing_staged(henv)
    upload = [("files", ("series.zip", negative_offsets(files), "application/zip"))]
    r = await henv.client.post("/jobs", files=upload, headers=henv.alice)
    assert r.status_code == 202, r.text
    job = await wait_job(henv.client, r.json()["id"], henv.alice)
    assert [i["error"]["code"] for i in job["items"]] == ["corrupt_archive"] * N


async def test_api_malformed_series_is_422(henv: HostileEnv, phantom: Any) -> None:
    import pydicom
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(io.BytesIO(enhanced_mr(phantom, seed=8)))
    ds.PerFrameFunctionalGroupsSequence = Sequence([])
    buf = io.BytesIO()
    ds.save_as(buf)
    upload = [("files", ("mf.dcm", buf.getvalue(), "application/octet-stream"))]
    r = await henv.client.post("/studies", files=upload, headers=henv.alice)
    assert r.status_code == 422 and r.json()["code"] == "inconsistent_geometry", r.text
    _nothing_staged(henv)


async def test_stow_counts_parts_before_reading_any(
    henv: HostileEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.services import dicomweb

    read: list[bytes] = []
    real = dicomweb._uids

    def uids(payload: bytes) -> Any:
        read.append(payload)
        return real(payload)

    monkeypatch.setattr(dicomweb, "_uids", uids)
    limit = henv.settings.study_max_instances
    body = b"--b\r\nA:\r\n\r\nx\r\n" * (limit + 1) + b"--b--\r\n"
    content_type = 'multipart/related; type="application/dicom"; boundary=b'
    r = await henv.client.post(
        "/dicomweb/studies", content=body, headers={**henv.alice, "Content-Type": content_type}
    )
    assert r.status_code == 413 and r.json()["code"] == "too_many_instances", r.text
    assert r.json()["message"].endswith(".")
    assert read == []  # refused before any part was read
    _nothing_staged(henv)
