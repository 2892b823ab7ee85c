"""The one preprocessing function: any size, bit depth or colour -> (256, 256) float32 in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest

from ml.preprocessing import (
    IMAGE_SIZE,
    PREPROCESSING_SPEC,
    preprocess,
    preprocess_batch,
    scale_to_unit,
    to_grayscale,
)

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "pixels",
    [
        RNG.integers(0, 256, (256, 256), dtype=np.uint8),
        RNG.integers(0, 4096, (512, 384), dtype=np.uint16),  # 12-bit MR in 16-bit words
        RNG.integers(-1024, 3000, (100, 80), dtype=np.int16),  # signed (CT-like)
        RNG.normal(0, 1, (64, 64)).astype(np.float32),
        RNG.normal(0, 1, (64, 64)),  # float64
        RNG.integers(0, 256, (300, 200, 3), dtype=np.uint8),  # RGB
        RNG.integers(0, 256, (50, 70, 4), dtype=np.uint8),  # RGBA
        RNG.integers(0, 256, (40, 40, 1), dtype=np.uint8),
        RNG.random((32, 32)) > 0.5,  # bool
        np.full((10, 10), 7, np.uint16),  # constant
        np.array([[5]], np.uint8),  # one pixel
        np.array([[np.nan, 1.0], [np.inf, 2.0]]),
    ],
    ids=["u8", "u16", "i16", "f32", "f64", "rgb", "rgba", "hw1", "bool", "const", "1px", "nan"],
)
def test_any_input_gives_the_model_input(pixels):
    out = preprocess(pixels)
    assert out.shape == (IMAGE_SIZE, IMAGE_SIZE) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


def test_uint8_keeps_absolute_brightness():
    img = np.full((256, 256), 51, np.uint8)
    np.testing.assert_allclose(preprocess(img), 0.2, atol=1e-7)
    # The written dataset PNG (round(x * 255)) gives back the uint8 slice exactly.
    src = RNG.integers(0, 256, (256, 256), dtype=np.uint8)
    np.testing.assert_array_equal(np.rint(preprocess(src) * 255).astype(np.uint8), src)


def test_other_dtypes_use_a_percentile_window():
    img = np.linspace(0, 1000, 256 * 256).reshape(256, 256)
    img[0, 0] = 1e9  # one outlier must not squash the rest
    out = preprocess(img)
    assert out[128, 128] == pytest.approx(0.5, abs=0.02)
    assert out[0, 0] == 1.0
    assert scale_to_unit(np.full((4, 4), 3.0)).max() == 0.0


def test_grayscale_and_resize():
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 1] = 200
    gray = to_grayscale(rgb)
    assert gray.dtype == np.uint8 and gray[0, 0] == round(0.587 * 200)
    with pytest.raises(ValueError):
        to_grayscale(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError):
        preprocess(np.zeros((0, 5)))
    small = preprocess(np.tile(np.array([[0, 255]], np.uint8), (2, 1)), size=64)
    assert small.shape == (64, 64) and small[:, 0].mean() < small[:, -1].mean()


def test_batch_and_spec():
    batch = preprocess_batch([RNG.random((30, 40)), RNG.integers(0, 255, (300, 300), np.uint8)])
    assert batch.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 1) and batch.dtype == np.float32
    assert PREPROCESSING_SPEC["size"] == [IMAGE_SIZE, IMAGE_SIZE]
    assert PREPROCESSING_SPEC["range"] == [0.0, 1.0] and PREPROCESSING_SPEC["channels"] == 1


def _scale_to_unit_v1(gray: np.ndarray) -> np.ndarray:
    """scale_to_unit as first released, for images far from the float64 limits."""
    values = np.asarray(gray).astype(np.float64)
    finite = np.isfinite(values)
    values = np.where(finite, values, 0.0)
    lo, hi = np.percentile(values[finite], [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    return ((np.clip(values, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def test_values_near_the_float64_limit_do_not_overflow():
    top = np.finfo(np.float64).max
    np.testing.assert_array_equal(scale_to_unit(np.array([[-top, 0.0, top]])), [[0.0, 0.5, 1.0]])
    img = np.zeros((16, 16))
    img[0, 0], img[1, 1] = -1e308, 1e308  # the percentiles are 0: min and max are the window
    img[4:8, 4:8] = RNG.random((4, 4))
    out = preprocess(img)
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() > 0.4  # the 1e308 pixel still shows, nothing became NaN -> 0


@pytest.mark.parametrize(
    "pixels",
    [
        RNG.integers(0, 4096, (512, 384), dtype=np.uint16),
        RNG.integers(0, 65536, (200, 300), dtype=np.uint16),
        RNG.integers(-1024, 3000, (100, 80), dtype=np.int16),
        RNG.normal(0, 1, (64, 64)).astype(np.float32),
        RNG.normal(0, 1e300, (64, 64)),
        np.array([[np.nan, 1.0], [np.inf, 2.0]]),
    ],
    ids=["u12", "u16", "i16", "f32", "f64-huge", "nan"],
)
def test_scaling_of_ordinary_images_is_unchanged(pixels):
    """Training data went through the first version: its output must stay bit-identical."""
    np.testing.assert_array_equal(scale_to_unit(pixels), _scale_to_unit_v1(pixels))
