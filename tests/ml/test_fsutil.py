"""ml.fsutil.write_atomic: whole file or old file, never a half-written one or a stray temp."""

from __future__ import annotations

import os

import pytest

from ml import fsutil


def test_write_atomic_creates_replaces_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "out.json"
    fsutil.write_atomic(target, b"one")
    fsutil.write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        fsutil.write_atomic(target, b"three")
    assert target.read_bytes() == b"two"  # the old contents survive a failed write
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]
