"""Custom layers serialize: get_config/from_config and a .keras save/load give identical outputs."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from ml.layers import (  # noqa: E402
    AttentionGate,
    ClassToken,
    PositionEmbedding,
    SelectToken,
    TransformerBlock,
)


def _model(with_extras: bool) -> keras.Model:
    """Every custom layer in one small graph; ``with_extras`` turns on their second outputs."""
    skip = keras.Input((8, 8, 4), name="skip")
    gating = keras.Input((8, 8, 6), name="gating")
    gate = AttentionGate(3, return_coefficients=with_extras, name="gate")
    gated = gate([skip, gating])
    outputs = list(gated) if with_extras else [gated]
    x = outputs[0]
    tokens = keras.layers.Reshape((16, 16), name="to_tokens")(
        keras.layers.Conv2D(16, 2, strides=2, name="embed")(x)
    )
    tokens = PositionEmbedding(initializer_stddev=0.5, name="positions")(
        ClassToken(name="cls")(tokens)
    )
    block = TransformerBlock(
        num_heads=2, key_dim=4, ff_dim=8, return_attention=with_extras, epsilon=1e-5, name="block"
    )
    encoded = block(tokens)
    if with_extras:
        encoded, scores = encoded
        outputs.append(scores)
    outputs.insert(0, SelectToken(index=1, name="select")(encoded))
    return keras.Model([skip, gating], outputs, name="layers_roundtrip")


def _randomize(model: keras.Model, seed: int) -> None:
    # Class tokens start at zero and gates near 0.5: random weights make any mix-up visible.
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in model.get_weights()])


def _inputs(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(2, 8, 8, 4)).astype("float32"),
        rng.normal(size=(2, 8, 8, 6)).astype("float32"),
    ]


def _outputs(model: keras.Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    out = model(inputs, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


@pytest.mark.parametrize("with_extras", [False, True], ids=["plain", "with-extra-outputs"])
def test_layers_round_trip_through_config_and_keras_file(tmp_path, with_extras):
    model = _model(with_extras)
    _randomize(model, seed=1)
    x = _inputs(seed=2)
    expected = _outputs(model, x)
    assert len(expected) == (4 if with_extras else 2)

    # Each layer's config rebuilds an equal layer.
    for layer in model.layers:
        if type(layer).__module__.startswith("ml.layers"):
            clone = type(layer).from_config(layer.get_config())
            assert clone.get_config() == layer.get_config(), layer.name

    # Whole model from its config (the registered names resolve), weights copied over.
    config = model.get_config()
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    for got, want in zip(_outputs(rebuilt, x), expected, strict=True):
        np.testing.assert_array_equal(got, want)

    # And through a .keras file, without passing custom_objects.
    path = tmp_path / "layers.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for got, want in zip(_outputs(loaded, x), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    names = {type(layer).__name__ for layer in loaded.layers}
    assert {"AttentionGate", "ClassToken", "PositionEmbedding", "SelectToken"} <= names
    assert "TransformerBlock" in names
    block = loaded.get_layer("block")
    assert (block.num_heads, block.key_dim, block.ff_dim, block.epsilon) == (2, 4, 8, 1e-5)
    assert block.return_attention is with_extras
    assert loaded.get_layer("gate").return_coefficients is with_extras
    assert loaded.get_layer("select").index == 1
    assert loaded.get_layer("positions").initializer_stddev == 0.5
