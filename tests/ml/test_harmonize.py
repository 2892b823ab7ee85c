"""Site harmonisation: scanner fingerprint, source recogniser, per-source ranks, and the
site-harmonised ordinal CNN trained end to end on two synthetic sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from ml.bundle import load_bundle, read_manifest  # noqa: E402
from ml.data.labels import midrank  # noqa: E402
from ml.layers import ScannerFingerprint, SiteRanks, SourceRecognizer  # noqa: E402

HERE = Path(__file__).parent


def test_fingerprint_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.random((3, 32, 32, 1)).astype(np.float32)
    x[0, :10] = 0.0  # a black band: background share and top border
    got = np.asarray(ScannerFingerprint(border=4)(x))
    img = x[..., 0].astype(np.float64)
    lap = img[:, :-2, 1:-1] + img[:, 2:, 1:-1] + img[:, 1:-1, :-2] + img[:, 1:-1, 2:]
    lap -= 4 * img[:, 1:-1, 1:-1]
    flat = img.reshape(3, -1)
    want = np.stack(
        [
            (flat <= 0).mean(1),
            np.abs(lap).mean((1, 2)),
            np.quantile(flat, 0.99, axis=1),
            np.quantile(flat, 0.999, axis=1),
            img[:, :4].mean((1, 2)),
            img[:, -4:].mean((1, 2)),
            img[:, :, :4].mean((1, 2)),
            img[:, :, -4:].mean((1, 2)),
        ],
        axis=1,
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert got[0, 0] == pytest.approx(10 / 32) and got[0, 4] == 0.0


def _three_sources(n: int = 30):
    rng = np.random.default_rng(1)
    centres = {"a": [0, 0], "b": [6, 0], "c": [0, 6]}
    names = [name for name in centres for _ in range(n)]
    x = np.array([centres[s] for s in names], np.float64) + rng.normal(0, 1, (3 * n, 2))
    return x.astype(np.float32), names


def test_recognizer_learns_the_sources_and_ignores_unused_slots():
    x, names = _three_sources()
    layer = SourceRecognizer(max_sources=5)
    assert layer.adapt(x, names) == ["a", "b", "c"]
    probs = np.asarray(layer(x))
    assert probs.shape == (90, 5)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert probs[:, 3:].max() < 1e-6  # unused slots get no weight
    assert np.mean(probs.argmax(1) == np.repeat([0, 1, 2], 30)) > 0.95
    far = np.asarray(layer(np.array([[6.0, 0.0], [0.0, 6.0]], np.float32)))
    assert far[0, 1] > 0.9 and far[1, 2] > 0.9
    two = SourceRecognizer(max_sources=3)
    two.adapt(x[:60], names[:60])  # the binary case
    assert np.mean(np.asarray(two(x[:60])).argmax(1) == np.repeat([0, 1], 30)) > 0.95
    one = SourceRecognizer(max_sources=2)
    one.adapt(x[:30], names[:30])
    np.testing.assert_allclose(np.asarray(one(x[:4]))[:, 0], 1.0)
    with pytest.raises(ValueError, match="slots"):
        SourceRecognizer(max_sources=2).adapt(x, names)


def test_site_ranks_are_midranks_within_the_source():
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(0, 1, (20, 3)), rng.normal(5, 2, (12, 3))])
    values = values.astype(np.float32)  # the layer stores and compares float32
    values[3] = values[4]  # a tie
    sources = ["p"] * 20 + ["q"] * 12
    layer = SiteRanks(max_sources=4, max_refs=64)
    assert layer.adapt([values, np.zeros((32, 4))], sources) == ["p", "q"]
    queries = rng.normal(2, 3, (7, 3)).astype(np.float32)
    queries[0] = values[3]  # exactly on a tied reference value
    for slot, ref in ((0, values[:20]), (1, values[20:])):
        onehot = np.zeros((7, 4), np.float32)
        onehot[:, slot] = 1.0
        got = np.asarray(layer([queries, onehot]))
        want = np.stack([midrank(np.sort(ref[:, k]), queries[:, k]) for k in range(3)], axis=1)
        np.testing.assert_allclose(got, want, atol=1e-6)
    mixed = np.zeros((7, 4), np.float32)
    mixed[:, :2] = [0.25, 0.75]
    both = [np.asarray(layer([queries, np.eye(4, dtype=np.float32)[[s] * 7]])) for s in (0, 1)]
    np.testing.assert_allclose(
        np.asarray(layer([queries, mixed])), 0.25 * both[0] + 0.75 * both[1], atol=1e-6
    )
    # More slices than slots: evenly spaced order statistics stand in for them.
    small = SiteRanks(max_sources=2, max_refs=8)
    small.adapt(values[:20], sources[:20])
    got = np.asarray(small([values[:20].astype(np.float32), np.eye(2, dtype=np.float32)[[0] * 20]]))
    exact = np.stack([midrank(np.sort(values[:20, k]), values[:20, k]) for k in range(3)], 1)
    assert np.abs(got - exact).max() < 0.15


def test_harmonized_ordinal_trains_adapts_and_reloads(synthetic_dataset, tmp_path):
    from ml.evaluation.evaluate import evaluate_bundle
    from ml.models import build_model, spec
    from ml.training.loop import train

    models = tmp_path / "models"
    train(HERE / "configs" / "tiny_harmonized.yaml", synthetic_dataset, models_dir=models,
          run_dir=tmp_path / "run", verbose=0)  # fmt: skip
    path = models / "tiny_harmonized"
    m = read_manifest(path).model_dump()
    adapted = m["training"]["stages"][0]["adapted"]
    # Adapted on the whole training split (fit + validation images), with its source names.
    n_train = m["dataset"]["n_train"]
    for name in ("source_recognizer", "site_ranks"):
        assert adapted[name] == {"images": n_train, "sources": ["synth_t1", "synth_t2"]}
    assert m["gradcam_layer"] == "conv4" == spec("harmonized_ordinal").gradcam_layer_for()
    model = load_bundle(path).model
    ranks = model.get_layer("site_ranks")
    valid = keras.ops.convert_to_numpy(ranks.valid)
    assert valid[:2].sum() == n_train and valid[2:].sum() == 0
    # The recogniser tells the two synthetic scanners apart on the held-out test images.
    from ml.data.dataset import load_split, resize_images

    test = load_split(synthetic_dataset, "test")
    probe = keras.Model(model.inputs, model.get_layer("source_recognizer").output)
    probs = probe.predict(resize_images(test.images, 64), verbose=0)
    truth = np.array([["synth_t1", "synth_t2"].index(s) for s in test.sources])
    assert np.mean(probs.argmax(1) == truth) >= 0.9
    # The adapted (frozen) values survive the bundle: re-evaluation reproduces the manifest.
    again = evaluate_bundle(path, synthetic_dataset)
    for key in ("binary_accuracy", "stage_accuracy", "stage_macro_f1"):
        assert again[key] == pytest.approx(m["metrics"][key], abs=1e-6), key
    tiny = {"input_size": 64, "filters": [4, 4, 8, 8], "appearance_units": 4, "dense_units": [8]}
    fresh = build_model("harmonized_ordinal", tiny)
    assert not keras.ops.convert_to_numpy(fresh.get_layer("site_ranks").valid).any()
