"""The raw heatmap file: the values the DICOM parametric maps are made from, read back exactly."""

from __future__ import annotations

import io
import zipfile

import numpy as np

from backend.services.rendering import raw_heatmap


def test_raw_heatmap_reads_back_as_the_float16_values() -> None:
    heat = np.random.default_rng(0).random((300, 260)).astype(np.float32)
    data = raw_heatmap(heat)
    with np.load(io.BytesIO(data)) as npz:
        assert list(npz.keys()) == ["heat"]
        np.testing.assert_array_equal(npz["heat"], heat.astype(np.float16))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert [i.compress_type for i in zf.infolist()] == [zipfile.ZIP_DEFLATED]
