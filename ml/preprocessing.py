"""The one image -> tensor function, shared by training, evaluation, the CLI and the API.

Every path into a model goes through :func:`preprocess`, so a slice read from a ``.npy`` during
training and the same slice uploaded as PNG to the API give the same tensor.
"""

from __future__ import annotations

import cv2
import numpy as np

IMAGE_SIZE = 256

PREPROCESSING_SPEC = {
    "name": "spondyscan.preprocess/v1",
    "size": [IMAGE_SIZE, IMAGE_SIZE],
    "channels": 1,
    "dtype": "float32",
    "range": [0.0, 1.0],
    "steps": [
        "RGB/RGBA -> luminance (ITU-R 601), alpha dropped",
        "uint8: divide by 255 (keeps absolute brightness, which the feature-rule labels use)",
        "other dtypes: clip to the 0.5-99.5 percentile window, scale to [0, 1]",
        "non-finite values -> 0",
        "resize to 256x256 (area when shrinking, bilinear when enlarging)",
    ],
}


def to_grayscale(pixels: np.ndarray) -> np.ndarray:
    """Collapse a colour image (H, W, 3|4) or a single-channel (H, W, 1) image to (H, W).

    Args:
        pixels: 2D array, or 3D with 1, 3 or 4 channels last.

    Returns:
        A 2D array of the same dtype family (float for colour input).
    """
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[-1] == 1:
        return arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3].astype(np.float64)
        gray = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
        if arr.dtype == np.uint8:
            return np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        return gray
    raise ValueError(f"expected a 2D image or (H, W, 1|3|4), got shape {arr.shape}")


def scale_to_unit(gray: np.ndarray) -> np.ndarray:
    """Map a 2D image of any dtype to float32 in [0, 1] (see PREPROCESSING_SPEC)."""
    arr = np.asarray(gray)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    values = arr.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(arr.shape, dtype=np.float32)
    values = np.where(finite, values, 0.0)
    if max(values.max(), -values.min()) > np.finfo(np.float64).max / 2:
        # Near the float64 limit hi - lo (and the percentile's interpolation) would overflow to
        # inf and make the image NaN; halving every value is exact and leaves the ratios below
        # unchanged. Other images skip this, so their output stays bit-identical.
        values = values * 0.5
    lo, hi = np.percentile(values[finite], [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        # A constant image: keep it constant (0), which models and explanations must tolerate.
        return np.zeros(arr.shape, dtype=np.float32)
    out = (np.clip(values, lo, hi) - lo) / (hi - lo)
    return out.astype(np.float32)


def resize(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Resize a 2D float image to (size, size): area when shrinking, bilinear when enlarging."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def preprocess(pixels: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Turn any 2D slice (any size, bit depth, grey or colour) into the model input.

    Args:
        pixels: raw pixels, (H, W) or (H, W, 1|3|4), any numeric dtype.
        size: output side length.

    Returns:
        float32 array of shape (size, size) with values in [0, 1].
    """
    arr = np.asarray(pixels)
    if arr.size == 0:
        raise ValueError("empty image: no pixels")
    gray = to_grayscale(arr)
    unit = scale_to_unit(gray)
    out = resize(unit, size)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def preprocess_batch(images: list[np.ndarray], size: int = IMAGE_SIZE) -> np.ndarray:
    """Preprocess several slices into one (N, size, size, 1) float32 batch."""
    return np.stack([preprocess(img, size) for img in images])[..., None]
