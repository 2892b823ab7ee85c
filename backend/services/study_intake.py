"""Study intake: stage a series' files, check their headers, keep only the series analysed.

Runs before any row exists (synchronously, on the decode pool): the files are streamed into a
job staging folder under the per-file and per-study limits, DICOM headers are read one file at a
time (:func:`ml.series.scan_dicom`) or the NIfTI header checked, and an upload that cannot be a
study is refused with its code here (422 ``mixed_patients``, ``not_sagittal``,
``unsupported_modality``, ``inconsistent_geometry``, ``too_few_slices``; 413 ``too_many_instances``,
``study_too_large``; 422 ``unsafe_archive_name``). Files of other series, duplicates and
unreadable files are removed from the staging folder and listed in the study's input summary.

With ``deidentify`` set, every DICOM file is rewritten with the basic profile as it arrives.
"""

from __future__ import annotations

import io
import json
import logging
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from backend.core.config import Settings
from backend.core.errors import AppError, BadInput
from backend.core.text import clean_name
from backend.services.job_intake import ARCHIVE_ERRORS, MEMBER_ERRORS, IncomingFile
from backend.storage.job_inputs import StagedInputs, TooLarge
from ml.fsutil import write_atomic
from ml.series import unsafe_name

log = logging.getLogger(__name__)

MANIFEST = "study.json"
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass
class StagedStudy:
    """What the intake kept and learnt: the files (staged names), the input summary the API
    shows, and the source attributes output objects need."""

    format: str  # dicom | dicom-multiframe | nifti
    files: list[tuple[str, str]]  # (display name, staged name), in upload order
    slices: int
    kept_bytes: int
    summary: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)


def _short(name: str | None) -> str:
    """A file's own name (no folders, which may name the patient; no control characters), at
    most 64 characters."""
    if not name:
        return "unnamed"
    return clean_name(re.split(r"[\\/]", str(name))[-1], 64) or "unnamed"


def _is_zip(stream: IO[bytes]) -> bool:
    stream.seek(0)
    head = stream.read(4)
    stream.seek(0)
    return head == _ZIP_MAGIC and zipfile.is_zipfile(stream)


class _Intake:
    def __init__(self, staged: StagedInputs, settings: Settings) -> None:
        self.staged = staged
        self.settings = settings
        self.files: list[tuple[str, str]] = []
        self.skipped: list[dict[str, str]] = []
        self.total = 0

    def _count(self, n: int) -> None:
        limit = self.settings.study_max_instances
        if n > limit:
            raise AppError(
                f"A study can hold at most {limit} files; this upload has {n}.",
                code="too_many_instances",
                status_code=413,
            )

    def add(self, name: str, stream: IO[bytes]) -> None:
        index = len(self.files) + len(self.skipped)
        try:
            staged_name, _, size = self.staged.add_stream(
                index, stream, self.settings.max_upload_bytes
            )
        except TooLarge:
            self.skipped.append({"name": name, "code": "too_large", "reason": "file too large"})
            return
        self.total += size
        if self.total > self.settings.study_max_bytes:
            raise AppError(
                f"The files of one study may total at most "
                f"{self.settings.study_max_bytes // 1024**2} MiB.",
                code="study_too_large",
                status_code=413,
            )
        if size == 0:
            (self.staged.dir / staged_name).unlink(missing_ok=True)
            self.skipped.append({"name": name, "code": "empty_image", "reason": "0 bytes"})
            return
        self.files.append((name, staged_name))

    def add_zip(self, stream: IO[bytes]) -> None:
        try:
            archive = zipfile.ZipFile(stream)
            infos = archive.infolist()
        except ARCHIVE_ERRORS as exc:
            raise BadInput("The zip archive cannot be read.", code="bad_archive") from exc
        for info in infos:
            if unsafe_name(info.filename) or stat.S_ISLNK(info.external_attr >> 16):
                raise BadInput(
                    "The zip archive has an entry with an unsafe name (absolute, '..', or a "
                    "link); nothing was stored.",
                    code="unsafe_archive_name",
                    status_code=422,
                )
        members = [
            i
            for i in infos
            if not i.is_dir()
            and "__MACOSX/" not in i.filename
            and not PurePosixPath(i.filename).name.startswith(".")
            and PurePosixPath(i.filename).name.upper() != "DICOMDIR"
        ]
        self._count(len(members))
        for info in members:
            name = _short(info.filename)
            if info.flag_bits & 0x1:
                self.skipped.append(
                    {"name": name, "code": "unsupported_format", "reason": "encrypted"}
                )
                continue
            try:
                with archive.open(info) as member:
                    self.add(name, member)
            except MEMBER_ERRORS:
                self.skipped.append(
                    {"name": name, "code": "corrupt_archive", "reason": "cannot be extracted"}
                )
        if not members:
            raise BadInput("The zip archive holds no files.", code="no_files")


def _is_nifti(path: Path) -> bool:
    from ml.io import sniff_format

    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head[:2] == b"\x1f\x8b":
        try:
            return sniff_format(path.read_bytes()) == "nifti"
        except ValueError:
            return False
    try:
        return sniff_format(head) == "nifti"
    except ValueError:
        return False


def _series_error(exc: Exception) -> AppError:
    code = getattr(exc, "code", "bad_series")
    message = getattr(exc, "message", str(exc))
    return AppError(message, code=code, status_code=413 if code == "too_large" else 422)


def _unreadable(exc: Exception, what: str) -> AppError:
    log.warning("study intake: unexpected error reading %s", what, exc_info=exc)
    return AppError(
        f"The {what} could not be read (a malformed file).", code="corrupt_image", status_code=422
    )


def _too_many_voxels(voxels: int, bytes_per_voxel: int, settings: Settings) -> None:
    if voxels * bytes_per_voxel > settings.max_decoded_bytes:
        raise AppError(
            f"The series holds {voxels / 1e6:.0f} million voxels; at most "
            f"{settings.max_decoded_bytes // bytes_per_voxel / 1e6:.0f} million can be analysed "
            "at once.",
            code="too_large",
            status_code=413,
        )


def _nifti_voxels(data: bytes, settings: Settings) -> tuple[int, int]:
    """The voxels a NIfTI file declares and the bytes each takes once loaded (4 as float32,
    8 when scl_slope/scl_inter scale them), from its header alone."""
    import nibabel as nib

    from ml.io import ImageError, inflate

    header = (
        inflate(data, settings.max_decoded_bytes, head=540) if data[:2] == b"\x1f\x8b" else data
    )
    klass = nib.Nifti2Header if int.from_bytes(header[:4], "little") == 540 else nib.Nifti1Header
    try:
        hdr = klass.from_fileobj(io.BytesIO(header[:540]), check=False)
        shape = hdr.get_data_shape()
        slope, inter = hdr.get_slope_inter()
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad headers
        raise ImageError("corrupt_image", "The NIfTI header could not be read.") from exc
    voxels = 1
    for dim in shape:
        voxels *= max(1, int(dim))
    scaled = slope not in (None, 1.0) or inter not in (None, 0.0)
    return voxels, 8 if scaled else 4


def _nifti(intake: _Intake, settings: Settings) -> StagedStudy:
    from ml.io import ImageError
    from ml.series import load_nifti

    name, staged_name = intake.files[0]
    path = intake.staged.dir / staged_name
    data = path.read_bytes()
    try:
        _too_many_voxels(*_nifti_voxels(data, settings), settings)
        series = load_nifti(
            data,
            max_pixels=settings.max_pixels,
            max_decoded_bytes=settings.max_decoded_bytes,
        )
    except ImageError as exc:
        raise _series_error(exc) from exc
    except AppError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything else a hostile file makes the readers raise
        raise _unreadable(exc, "NIfTI volume") from exc
    summary = {**series.summary(), "skipped": intake.skipped, "files": 1}
    return StagedStudy(
        format="nifti",
        files=intake.files,
        slices=len(series.slices),
        kept_bytes=path.stat().st_size,
        summary=summary,
        source={},
    )


def _dicom(intake: _Intake, settings: Settings, deid_key: bytes | None) -> StagedStudy:
    from ml.io import ImageError
    from ml.series import scan_dicom

    folder = intake.staged.dir
    if deid_key is not None:
        _deidentify(intake, deid_key)
    paths = [(name, folder / staged) for name, staged in intake.files]
    try:
        series = scan_dicom(
            paths,
            max_pixels=settings.max_pixels,
            max_frames=settings.max_frames,
            max_decoded_bytes=settings.max_decoded_bytes,
        )
    except ImageError as exc:
        raise _series_error(exc) from exc
    except Exception as exc:  # noqa: BLE001 - anything else a hostile file makes pydicom raise
        raise _unreadable(exc, "series' DICOM headers") from exc
    _too_many_voxels(series.rows * series.cols * len(series.slices), 4, settings)
    used = {s.source for s in series.slices}
    kept: list[tuple[str, str]] = []
    for index, (name, staged) in enumerate(intake.files):
        if index in used:
            kept.append((name, staged))
        else:
            (folder / staged).unlink(missing_ok=True)
    skipped = intake.skipped + series.skipped
    summary = {
        **series.summary(),
        "skipped": skipped,
        "files": len(intake.files) + len(intake.skipped),
    }
    source = {
        "patient": series.patient,
        "study": series.study,
        "study_uid": series.study_uid,
        "series_uid": series.series_uid,
        "frame_of_reference_uid": series.frame_of_reference_uid,
        "sop_class_uid": series.sop_class_uid,
        "deidentified": deid_key is not None,
    }
    return StagedStudy(
        format=series.format,
        files=kept,
        slices=len(series.slices),
        kept_bytes=sum((folder / s).stat().st_size for _, s in kept),
        summary=summary,
        source=source,
    )


def _deidentify(intake: _Intake, key: bytes) -> None:
    """Rewrite every file with the basic profile; unreadable ones are left for the scan to
    list (it skips them) and removed with the other unused files."""
    from ml.deid import deidentify_bytes

    for _, staged in intake.files:
        path = intake.staged.dir / staged
        try:
            clean = deidentify_bytes(path.read_bytes(), key)
        except Exception:  # noqa: BLE001 - pydicom raises many types; the scan reports it
            continue
        write_atomic(path, clean)


def stage_study(
    staged: StagedInputs,
    files: list[IncomingFile],
    settings: Settings,
    *,
    deid_key: bytes | None = None,
) -> StagedStudy:
    """Stage and check a study upload (blocking: run it on the decode pool).

    Writes ``study.json`` (format and files in order) beside the kept files, for the worker.
    """
    if not files:
        raise BadInput("Upload a series (field 'files'), one zip or one NIfTI.", code="no_files")
    intake = _Intake(staged, settings)
    if len(files) == 1 and _is_zip(files[0].stream):
        intake.add_zip(files[0].stream)
    else:
        intake._count(len(files))
        for incoming in files:
            incoming.stream.seek(0)
            intake.add(_short(incoming.filename), incoming.stream)
    if not intake.files:
        raise BadInput("None of the uploaded files has content.", code="no_images")
    if len(intake.files) == 1 and _is_nifti(staged.dir / intake.files[0][1]):
        study = _nifti(intake, settings)
    else:
        study = _dicom(intake, settings, deid_key)
    manifest = {"format": study.format, "files": study.files}
    write_atomic(staged.dir / MANIFEST, json.dumps(manifest).encode())
    return study


def read_manifest(folder: Path) -> tuple[str, list[tuple[str, Path]]]:
    """The format and (name, path) of each kept file of a staged study, in upload order."""
    manifest = json.loads((folder / MANIFEST).read_text())
    return manifest["format"], [(name, folder / staged) for name, staged in manifest["files"]]
