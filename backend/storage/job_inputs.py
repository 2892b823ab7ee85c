"""Stored input files of batch jobs, one folder per job, readable by every worker by path.

A job's files are written into a private staging folder and renamed into place in one step
before the job's rows are committed, so a worker that sees an item also finds its file. The
folder lives inside the artifact store (``<artifacts>/.jobs``, hidden from the per-analysis
helpers) so API replicas and workers that share the artifact directory share the inputs too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO

from backend.storage.owners import abandoned_here, owner_tag

_CHUNK = 1024 * 1024


class TooLarge(Exception):
    """The file is larger than the limit it was written under."""


class StagedInputs:
    """Input files of one new job, invisible to workers until :meth:`commit`."""

    def __init__(self, store: JobInputStore, job_id: uuid.UUID) -> None:
        self.store = store
        self.job_id = job_id
        self.dir = Path(tempfile.mkdtemp(prefix=f"{job_id}.{owner_tag()}.", dir=store.staging_dir))
        self.committed = False

    @staticmethod
    def name_for(index: int) -> str:
        return f"{index:06d}.bin"

    def add_stream(self, index: int, source: IO[bytes], limit: int) -> tuple[str, str, int]:
        """Copy a stream to the item's file; returns (name, sha256, size).

        Raises TooLarge (and keeps nothing) once more than ``limit`` bytes have been read, so a
        huge or lying upload never fills the disk.
        """
        name = self.name_for(index)
        path = self.dir / name
        digest = hashlib.sha256()
        size = 0
        try:
            with open(path, "wb") as out:
                while chunk := source.read(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(f"more than {limit} bytes")
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return name, digest.hexdigest(), size

    def commit(self) -> Path:
        """Flush the files and move the folder to its final place in one rename."""
        for path in self.dir.iterdir():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        final = self.store.dir_for(self.job_id)
        os.replace(self.dir, final)
        self.committed = True
        return final

    def discard(self) -> None:
        if self.committed:
            self.store.delete(self.job_id)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


class JobInputStore:
    """``root/<job id>/<index>.bin``; ``root/.staging`` holds jobs still being uploaded."""

    def __init__(self, root: Path, *, study_retention_s: float = 0.0) -> None:
        self.root = Path(root)
        self.staging_dir = self.root / ".staging"
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        # A finished study's uploaded series is kept this long (0: deleted when it finishes).
        self.study_retention_s = study_retention_s

    @classmethod
    def for_artifacts(cls, artifacts_dir: Path, *, study_retention_s: float = 0.0) -> JobInputStore:
        return cls(Path(artifacts_dir) / ".jobs", study_retention_s=study_retention_s)

    def job_ids(self) -> list[uuid.UUID]:
        """Jobs with stored inputs."""
        out = []
        for child in self.root.iterdir():
            try:
                out.append(uuid.UUID(child.name))
            except ValueError:
                continue
        return out

    def dir_for(self, job_id: uuid.UUID) -> Path:
        return self.root / str(job_id)

    def stage(self, job_id: uuid.UUID) -> StagedInputs:
        return StagedInputs(self, job_id)

    def read(self, job_id: uuid.UUID, name: str) -> bytes | None:
        """The bytes of one stored input, or None when it is gone."""
        if "/" in name or name.startswith("."):
            return None
        try:
            return (self.dir_for(job_id) / name).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, job_id: uuid.UUID) -> None:
        """Remove a job's inputs (rename first, so a half-deleted folder is never visible)."""
        folder = self.dir_for(job_id)
        if not folder.is_dir():
            return
        doomed = self.staging_dir / f"{job_id}.{owner_tag()}.deleting-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(folder, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def exists(self, job_id: uuid.UUID) -> bool:
        return self.dir_for(job_id).is_dir()

    def sweep(self, max_age_s: float = 24 * 3600) -> int:
        """Remove staging folders left by a crash mid-upload: those of dead processes on this
        machine at once, any older than ``max_age_s``.

        Not the young ones of live processes: they may be uploading right now.
        """
        import time

        removed = 0
        cutoff = time.time() - max_age_s
        for child in self.staging_dir.iterdir():
            try:
                if child.stat().st_mtime < cutoff or abandoned_here(child):
                    shutil.rmtree(child, ignore_errors=True)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
