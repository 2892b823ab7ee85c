"""What the Keras backend runs on (recorded in training manifests)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


def accelerator_name() -> str | None:
    """The GPU the Keras backend computes on (e.g. ``NVIDIA H200``), or None on the CPU."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            devices = [d for d in jax.devices() if d.platform != "cpu"]
            return str(devices[0].device_kind) if devices else None
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                return None
            details = tf.config.experimental.get_device_details(gpus[0])
            return str(details.get("device_name") or gpus[0].name)
    except Exception:  # noqa: BLE001 - the record is informative; a probe failure is not fatal
        logging.getLogger(__name__).debug("could not name the accelerator", exc_info=True)
    return None


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """Run float32 matrix products and convolutions at full float32 precision inside.

    JAX on recent NVIDIA GPUs computes them in TF32 by default (10-bit mantissas), which is fine
    for training but makes test metrics differ from a CPU's re-evaluation of the same bundle;
    the TensorFlow and PyTorch CPU paths are already exact, so elsewhere this does nothing.
    """
    import keras

    if keras.backend.backend() != "jax":
        yield
        return
    import jax

    with jax.default_matmul_precision("highest"):
        yield
