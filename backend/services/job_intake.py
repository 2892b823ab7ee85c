"""Job intake: copy a job's uploaded files (or the members of one zip) into its staging folder.

Files that are too large or empty become failed items at once; the job as a whole is refused
only when it has too many items or bytes. Nothing here touches the database: the caller commits
the staging folder, then the rows.
"""

from __future__ import annotations

import lzma
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from backend.core.config import Settings
from backend.core.errors import AppError, BadInput
from backend.core.text import clean_name
from backend.storage.job_inputs import JobInputStore, StagedInputs, TooLarge

_ZIP_MAGIC = b"PK\x03\x04"
# What a damaged archive raises on opening, and a damaged member on extraction.
ARCHIVE_ERRORS = (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError)
MEMBER_ERRORS = (*ARCHIVE_ERRORS, zlib.error, lzma.LZMAError, RuntimeError)


@dataclass
class IncomingFile:
    """One uploaded file: a name the client gave (never trusted for format) and a binary stream."""

    filename: str | None
    stream: IO[bytes]


@dataclass
class StagedItem:
    """One item as staged: its stored input, or the error that fails it at once."""

    index: int
    filename: str | None
    input_name: str | None = None
    sha256: str | None = None
    size: int = 0
    error: tuple[str, str] | None = None


def job_inputs(settings: Settings) -> JobInputStore:
    """The store of the files jobs were given (beside the artifacts)."""
    return JobInputStore.for_artifacts(
        settings.artifacts_dir, study_retention_s=settings.study_input_retention_seconds
    )


def _is_zip(stream: IO[bytes]) -> bool:
    stream.seek(0)
    head = stream.read(4)
    stream.seek(0)
    return head == _ZIP_MAGIC and zipfile.is_zipfile(stream)


def _zip_members(archive: zipfile.ZipFile) -> Iterator[zipfile.ZipInfo]:
    for info in archive.infolist():
        base = info.filename.rsplit("/", 1)[-1]
        if info.is_dir() or not base or base.startswith(".") or "__MACOSX/" in info.filename:
            continue
        yield info


class _Intake:
    """Staging state of one job: the items so far and the bytes they hold."""

    def __init__(self, staged: StagedInputs, settings: Settings) -> None:
        self.staged = staged
        self.settings = settings
        self.limit = settings.max_upload_bytes
        self.total_bytes = 0
        self.items: list[StagedItem] = []

    def too_many(self) -> AppError:
        return AppError(
            f"A job can hold at most {self.settings.job_max_items} files.",
            code="too_many_items",
            status_code=413,
        )

    def too_large(self) -> tuple[str, str]:
        return ("too_large", f"The file is larger than the {self.limit // 1024**2} MiB limit.")

    def new_item(self, filename: str | None) -> StagedItem:
        item = StagedItem(index=len(self.items), filename=clean_name(filename))
        self.items.append(item)
        return item

    def add(self, item: StagedItem, stream: IO[bytes]) -> None:
        try:
            item.input_name, item.sha256, item.size = self.staged.add_stream(
                item.index, stream, self.limit
            )
        except TooLarge:
            item.error, item.size = self.too_large(), self.limit + 1
            return
        self.total_bytes += item.size
        if self.total_bytes > self.settings.job_max_bytes:
            raise AppError(
                f"The files of one job may total at most "
                f"{self.settings.job_max_bytes // 1024**2} MiB.",
                code="job_too_large",
                status_code=413,
            )
        if item.size == 0:
            item.error = ("empty_image", "The file is empty (0 bytes).")

    def add_zip(self, stream: IO[bytes]) -> None:
        try:
            archive = zipfile.ZipFile(stream)
            members = list(_zip_members(archive))
        except ARCHIVE_ERRORS as exc:
            raise BadInput("The zip archive cannot be read.", code="bad_archive") from exc
        if len(members) > self.settings.job_max_items:
            raise self.too_many()
        for info in members:
            item = self.new_item(info.filename)
            if info.flag_bits & 0x1:
                item.error = ("unsupported_format", "Encrypted archive members cannot be read.")
            elif info.file_size > self.limit:
                item.error, item.size = self.too_large(), info.file_size
            else:
                try:
                    with archive.open(info) as member:
                        self.add(item, member)
                except MEMBER_ERRORS:
                    item.error = ("corrupt_archive", "This archive member cannot be extracted.")
        if not self.items:
            raise BadInput("The zip archive holds no files.", code="no_files")


def stage_files(
    staged: StagedInputs, files: list[IncomingFile], settings: Settings
) -> list[StagedItem]:
    """Copy every file (or every member of one zip) into the staging folder."""
    intake = _Intake(staged, settings)
    if len(files) == 1 and _is_zip(files[0].stream):
        intake.add_zip(files[0].stream)
        return intake.items
    if len(files) > settings.job_max_items:
        raise intake.too_many()
    for incoming in files:
        item = intake.new_item(incoming.filename)
        incoming.stream.seek(0)
        intake.add(item, incoming.stream)
        if item.size == 0:
            # An uploaded file must have content (the schema says so); a zip member with none
            # fails alone instead.
            raise BadInput(
                f"The file {item.filename or item.index!r} is empty (0 bytes).",
                code="empty_image",
            )
    return intake.items
