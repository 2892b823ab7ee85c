"""Every decoder refuses bombs and malformed files with its code, allocating almost nothing."""

from __future__ import annotations

import tracemalloc

import pytest

from ml.io import ImageError, inflate, read_image
from tests.hostile import corpus, nifti_gzip_stream_bomb

LIMITS = {"max_pixels": 40_000_000, "max_frames": 2_000, "max_decoded_bytes": 64 * 1024**2}
CORPUS = corpus(max_decoded_mib=64)


@pytest.mark.parametrize("item", CORPUS, ids=[h.name for h in CORPUS])
def test_hostile_input_is_refused_with_bounded_memory(item):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with pytest.raises(ImageError) as info:
            read_image(item.data, **LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == item.code, info.value.message
    # The largest of these declares gigabytes; refusing one may hold a few MiB at most.
    assert peak < 80 * 1024**2, f"{item.name}: peak {peak / 2**20:.0f} MiB"


def test_inflate_stops_at_the_limit():
    bomb = nifti_gzip_stream_bomb(100)
    assert len(bomb) < 1024**2
    with pytest.raises(ImageError) as info:
        inflate(bomb, 8 * 1024**2)
    assert info.value.code == "too_large"
    assert len(inflate(bomb, 8 * 1024**2, head=352)) == 352
