"""Named vertebral levels in the segmentation part of a response, and on its overlay."""

from __future__ import annotations

import io
from pathlib import Path

import api_samples as samples
import numpy as np
import pytest
from api_helpers import Env
from PIL import Image

from backend.inference import mappers, overlays
from backend.inference.registry import load_registry
from ml.data.synthetic import make_phantom
from ml.levels import LEVEL_NAMES, name_levels


def test_segmentation_output_names_the_phantom_levels(models_dir: Path) -> None:
    entry = load_registry(models_dir).get("seg_tiny")
    ph = make_phantom(2, 256)
    mask = ph.mask.astype(np.uint8)
    levels = name_levels(mask)
    out = mappers.segmentation(
        entry, mask.astype(np.float32), mask, None, levels=levels, mask_url="m", overlay_url="o"
    )
    assert [lv.name for lv in out.levels] == list(LEVEL_NAMES[:5])
    assert "L5" in out.levels_note
    for lv in out.levels:
        k = {"L1": 1, "L2": 2, "L3": 3, "L4": 4, "L5": 5}[lv.name]
        x, y = (int(round(v)) for v in lv.centroid)
        assert ph.vertebra_labels[y, x] == k  # the name sits on that body
        assert lv.box is not None and lv.box.y1 <= y < lv.box.y2

    plain = overlays.segmentation_overlay(ph.image, mask, None)
    named = overlays.segmentation_overlay(
        ph.image, mask, None, [(lv.name, lv.centroid) for lv in levels.levels]
    )
    a = np.asarray(Image.open(io.BytesIO(plain)))
    b = np.asarray(Image.open(io.BytesIO(named)))
    assert a.shape == b.shape and (a != b).any(axis=-1).sum() > 200  # the names are drawn


async def test_segment_response_carries_levels(env: Env, alice: dict) -> None:
    """The levels in the response are those of the mask it returns (same names, same places)."""
    r = await env.client.post(
        "/segment",
        files={"file": ("x.png", samples.phantom_png(31), "image/png")},
        headers=alice,
    )
    assert r.status_code == 200, r.text
    seg = r.json()["segmentation"]
    png = await env.client.get(seg["mask_url"], headers=alice)
    assert png.status_code == 200
    mask = np.asarray(Image.open(io.BytesIO(png.content))) > 0
    expected = name_levels(mask).levels
    assert expected, "the test segmenter found no body on this phantom: pick another seed"
    assert [lv["name"] for lv in seg["levels"]] == [lv.name for lv in expected]
    for got, want in zip(seg["levels"], expected, strict=True):
        assert got["centroid"] == pytest.approx(want.centroid, abs=0.06)
    assert "L5" in seg["levels_note"]
