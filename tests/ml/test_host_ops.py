"""The rule-feature layers' host steps (NumPy sort, OpenCV components) give exactly what the
backend-neutral ops give: the same quantiles, the same gradients, the same Canny edges."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("the host steps run on the TensorFlow backend only", allow_module_level=True)
tf = pytest.importorskip("tensorflow")

from keras import ops  # noqa: E402

import ml.layers.rule_features as rule_features  # noqa: E402
from ml.data.synthetic import make_phantom  # noqa: E402
from ml.layers import IntensityQuantiles, RuleFeatures, ScannerFingerprint  # noqa: E402
from ml.layers.host_ops import connected_to_seeds, host_ops_active, row_quantiles  # noqa: E402


def _phantoms(n: int = 6, size: int = 128) -> np.ndarray:
    """Phantom slices as the models see them: 8-bit grey levels scaled to [0, 1]."""
    imgs = [make_phantom(seed, size, profile=("t1", "t2")[seed % 2]).image for seed in range(n)]
    return (np.rint(np.clip(np.stack(imgs), 0, 1) * 255) / 255).astype(np.float32)[..., None]


def test_the_host_steps_are_on_for_tensorflow():
    assert host_ops_active()
    assert not RuleFeatures().supports_jit  # a graph that calls NumPy cannot be XLA-compiled
    assert not IntensityQuantiles().supports_jit and not ScannerFingerprint().supports_jit


def _quantile_levels(path: str):
    if path == "partition":  # few ranks: picked with np.partition
        return ops.convert_to_tensor([0.99, 0.999])
    return ops.concatenate([ops.linspace(0.05, 0.95, 10), ops.convert_to_tensor([0.99, 0.999])])


@pytest.mark.parametrize("path", ["sort", "partition"])
@pytest.mark.parametrize("ties", [False, True])
def test_row_quantiles_equal_ops_quantile_values_and_gradients(ties, path):
    import ml.layers.host_ops as host_ops

    rng = np.random.default_rng(1)
    x = rng.random((3, 4096)).astype(np.float32)
    if ties:  # 8-bit images: many equal grey levels
        x = (np.rint(x * 255) / 255).astype(np.float32)
    x = tf.constant(x)
    q = _quantile_levels(path)
    assert (host_ops._few_ranks(x, q) is not None) == (path == "partition")
    weights = tf.constant(rng.random((3, int(q.shape[0]))).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = row_quantiles(x, q)
        theirs = ops.transpose(ops.quantile(x, q, axis=1))
        loss_ours = tf.reduce_sum(ours * weights)
        loss_theirs = tf.reduce_sum(theirs * weights)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    g_ours, g_theirs = tape.gradient(loss_ours, x).numpy(), tape.gradient(loss_theirs, x).numpy()
    assert np.count_nonzero(g_ours) > 0
    # The same pixels get the same gradient, also among equal grey levels.
    np.testing.assert_array_equal(g_ours, g_theirs)


def test_row_quantiles_propagate_nan_like_ops_quantile():
    x = np.random.default_rng(2).random((2, 50)).astype(np.float32)
    x[1, 7] = np.nan
    got = row_quantiles(tf.constant(x), ops.convert_to_tensor([0.5])).numpy()[:, 0]
    assert np.isfinite(got[0]) and np.isnan(got[1])


def test_connected_to_seeds_is_hysteresis_by_dilation():
    """The components of the weak map that hold a strong pixel (8-connected) are exactly what
    growing the strong pixels through the weak ones by 3x3 dilation reaches: a diagonal chain,
    a long snake, an island without a seed and a seed at the border."""
    weak = np.zeros((2, 40, 40), np.float32)
    strong = np.zeros_like(weak)
    for i in range(10):  # diagonal chain: 8-connected only
        weak[0, 5 + i, 5 + i] = 1
    strong[0, 5, 5] = 1
    weak[0, 30:33, 30:33] = 1  # island, no seed
    rows = list(range(1, 38, 4))  # a snake through the whole image: rows joined at alternate ends
    for k, r in enumerate(rows):
        weak[1, r, 1:39] = 1
        if k + 1 < len(rows):
            weak[1, r : r + 5, 38 if k % 2 == 0 else 1] = 1
    weak[1, 0, 0] = strong[1, 0, 0] = 1  # a seed in the corner, touching the snake's start
    host = connected_to_seeds(tf.constant(weak), tf.constant(strong)).numpy()
    original = rule_features.host_ops_active
    try:
        rule_features.host_ops_active = lambda: False
        grown = np.asarray(rule_features._hysteresis(weak > 0, strong > 0))
    finally:
        rule_features.host_ops_active = original
    np.testing.assert_array_equal(host, grown)
    assert host[0, 14, 14] == 1 and host[0, 31, 31] == 0
    assert host[1].sum() > 300  # the whole snake was reached


def test_rule_feature_layers_give_the_same_numbers_on_either_path(monkeypatch):
    x = _phantoms()
    fast = [
        np.asarray(layer(x))
        for layer in (RuleFeatures(), IntensityQuantiles(10), ScannerFingerprint())
    ]
    monkeypatch.setattr(rule_features, "host_ops_active", lambda: False)
    monkeypatch.setattr("ml.layers.host_ops.host_ops_active", lambda: False)
    slow = [
        np.asarray(layer(x))
        for layer in (RuleFeatures(), IntensityQuantiles(10), ScannerFingerprint())
    ]
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)
    assert fast[0][:, 3].min() > 0  # the phantoms have Canny edges


def test_partitioned_quantiles_propagate_nan():
    x = np.random.default_rng(3).random((4, 4096)).astype(np.float32)
    x[2, 5] = np.nan
    got = row_quantiles(tf.constant(x), _quantile_levels("partition")).numpy()
    assert np.isnan(got[2]).all() and np.isfinite(np.delete(got, 2, axis=0)).all()


def test_many_quantiles_still_take_one_sort():
    import ml.layers.host_ops as host_ops

    x = tf.zeros((2, 4096))
    assert host_ops._few_ranks(x, ops.linspace(0.05, 0.95, 10)) is None
