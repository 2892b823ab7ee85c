"""The artifact store: start-up sweeps only abandoned staging/trash entries (other replicas
share the store), and a result's files are staged all at once or refused whole."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from backend.core.config import Settings
from backend.runtime import start_runtime
from backend.storage.artifacts import SWEEP_AGE_S, ArtifactStore


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_start_up_keeps_in_flight_entries_and_removes_abandoned_ones(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    # Another replica's upload in progress, and its deletion waiting for the database commit.
    in_flight = store.stage(uuid.uuid4())
    in_flight.add_all({"input.png": b"png"})
    kept = uuid.uuid4()
    store.stage(kept).commit()
    _age(store.dir_for(kept), 2 * SWEEP_AGE_S)  # an old analysis, deleted just now
    trashed = store.move_to_trash(kept)
    assert trashed is not None
    # What a crashed process left behind hours ago.
    stale_stage = store.staging_dir / "crashed.abc"
    stale_stage.mkdir()
    (stale_stage / "input.png").write_bytes(b"png")
    stale_trash = store.trash_dir / "crashed.def"
    stale_trash.mkdir()
    stale_file = store.staging_dir / "loose.tmp"
    stale_file.write_bytes(b"x")
    for p in (stale_stage, stale_trash, stale_file):
        _age(p, SWEEP_AGE_S + 60)

    settings = Settings(
        environment="test",
        secret_key="s" * 32,
        data_dir=tmp_path,
        models_dir=tmp_path / "no-models",
        warm_models=False,
    )
    runtime = await start_runtime(settings, load_models=False)
    try:
        assert in_flight.dir.is_dir() and trashed.is_dir()
        assert not stale_stage.exists() and not stale_trash.exists() and not stale_file.exists()
        # The in-flight owners can still finish their work.
        in_flight.commit()
        store.purge(trashed)
        assert runtime.store.leftovers() == []
    finally:
        await runtime.close()


def test_a_retried_job_item_discards_its_dead_attempts_staging_only(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    item = uuid.uuid4()
    dead = store.stage(item)  # a worker killed mid-write: never committed, never discarded
    dead.add_all({"input.png": b"half"})
    other = store.stage(uuid.uuid4())  # someone else's upload in flight
    other.add_all({"input.png": b"png"})
    assert store.discard_staged(item) == 1
    assert not dead.dir.exists() and other.dir.is_dir()
    retry = store.stage(item)  # the next attempt stages and commits as usual
    retry.add_all({"input.png": b"png"})
    retry.commit()
    assert store.names(item) == ["input.png"]
    assert store.leftovers() == [other.dir]
    assert store.discard_staged(item) == 0


def test_add_all_stages_every_file_or_refuses_before_writing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    aid = uuid.uuid4()
    staged = store.stage(aid)
    with pytest.raises(ValueError, match="invalid artifact name"):
        staged.add_all({"input.png": b"a", "../escape.png": b"b"})
    assert not any(staged.dir.iterdir()), "a refused set left files behind"
    files = {"input.png": b"png" * 1000, "mask.png": b"m", "raw-x-binary.npz": b"z" * 10}
    staged.add_all(files)
    with pytest.raises(FileExistsError):  # never overwrites what is staged already
        staged.add_all({"mask.png": b"again"})
    final = staged.commit()
    assert final == store.dir_for(aid) and not staged.dir.exists()
    assert {p.name: p.read_bytes() for p in final.iterdir()} == files
    assert sorted(store.names(aid)) == sorted(files)
