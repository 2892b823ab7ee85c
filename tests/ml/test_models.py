"""Model builders: exact parameter counts, named layers, FLOPs, attention outputs."""

from __future__ import annotations

import re

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from ml.models import ARCHITECTURES, SPECS, build_model, count_flops, spec  # noqa: E402
from ml.models.backbone import backbone_layers  # noqa: E402

DESIGN_COUNTS = {
    "attention_unet": 7_869_572,
    "simple_cnn": 16_870_790,
    "hybrid_v2": 4_838_319,
    # Not fixed by the design ("~5.2 M"); this is the count of our reading of it.
    "hybrid_v1": 5_271_983,
}
AUTO_NAME = re.compile(r"^(conv2d|batch_normalization|activation|rescaling|normalization)(_\d+)?$")


@pytest.fixture(scope="module")
def full_models():
    return {a: build_model(a) for a in ARCHITECTURES}


@pytest.mark.parametrize("architecture", sorted(DESIGN_COUNTS))
def test_design_parameter_counts(full_models, architecture):
    assert full_models[architecture].count_params() == DESIGN_COUNTS[architecture]


def test_every_layer_named_and_unique(full_models):
    for architecture, model in full_models.items():
        names = [layer.name for layer in model.layers]
        assert len(names) == len(set(names)), architecture
        assert not [n for n in names if AUTO_NAME.match(n)], architecture


def test_names_stable_across_builds():
    a = [layer.name for layer in build_model("hybrid_v2").layers]
    b = [layer.name for layer in build_model("hybrid_v2").layers]
    assert a == b


def test_lite_unet_has_ten_times_fewer_flops(full_models):
    design = count_flops(full_models["attention_unet"])
    lite = count_flops(full_models["attention_unet_lite"])
    assert design / lite >= 10
    # 2 x multiply-adds of the convolutions dominate: about 86 GFLOPs at 256x256.
    assert 80e9 < design < 95e9


def test_classifier_contract(full_models):
    for architecture in ("simple_cnn", "hybrid_v1", "hybrid_v2", "hybrid_v3"):
        model = full_models[architecture]
        assert model.output_names == ["binary_output", "stage_output"]
        assert model.inputs[0].shape[1:] == (256, 256, 1)
        assert model.get_layer(spec(architecture).gradcam_layer_for()) is not None
    assert spec("simple_cnn").gradcam_layer_for() == "conv3"


def test_segmenter_contract(full_models):
    for architecture in ("attention_unet", "attention_unet_lite"):
        model = full_models[architecture]
        assert tuple(model.outputs[0].shape[1:]) == (256, 256, 1)
        assert model.get_layer("dec1_attention").output[1].shape[1:] == (256, 256, 1)


def test_unet_fully_convolutional_weights_transfer():
    small = build_model("attention_unet_lite", {"input_size": 32, "base_filters": 4})
    large = build_model("attention_unet_lite", {"input_size": 64, "base_filters": 4})
    large.set_weights(small.get_weights())
    x = np.random.default_rng(0).random((1, 64, 64, 1)).astype("float32")
    assert large.predict_on_batch(x).shape == (1, 64, 64, 1)


def test_hybrid_v3_exposes_spatial_attention():
    cfg = dict(SPECS["hybrid_v3"].tiny)
    model = build_model("hybrid_v3", cfg)
    names = spec("hybrid_v3").attention_layers_for(cfg)
    assert names == ["transformer1", "transformer2"]
    probe = keras.Model(model.inputs, [model.get_layer(n).output[1] for n in names])
    x = np.random.default_rng(0).random((2, 64, 64, 1)).astype("float32")
    scores = probe.predict_on_batch(x)
    # 64 / 32 = 2x2 spatial tokens plus the class token; rows are softmax distributions.
    assert scores[0].shape == (2, 4, 5, 5)
    np.testing.assert_allclose(np.asarray(scores[0]).sum(-1), 1.0, atol=1e-5)


def test_backbone_freeze_and_layers():
    cfg = {**SPECS["hybrid_v2"].tiny, "backbone_trainable": False}
    model = build_model("hybrid_v2", cfg)
    frozen = backbone_layers(model)
    assert frozen[-1].name == "top_activation"
    assert all(not layer.trainable for layer in frozen)
    assert model.get_layer("gray_adapter").trainable


def test_local_backbone_weights_file(tmp_path):
    reference = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(64, 64, 3)
    )
    path = tmp_path / "efficientnetb0_notop.weights.h5"
    reference.save_weights(path)
    model = build_model("hybrid_v2", {"input_size": 64, "backbone_weights": str(path)})
    np.testing.assert_array_equal(
        model.get_layer("top_conv").get_weights()[0],
        reference.get_layer("top_conv").get_weights()[0],
    )


def test_unknown_architecture_and_keys():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet")
    with pytest.raises(ValueError, match="unknown model config keys"):
        build_model("simple_cnn", {"filterz": 3})


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_spec_describes_its_model(architecture):
    """One spec per architecture: its tiny config builds, and every layer it names exists."""
    s = SPECS[architecture]
    assert s.name == architecture and s.task in ("segmentation", "classification")
    model = s.build(dict(s.tiny))
    names = {layer.name for layer in model.layers}
    if s.task == "classification":
        assert s.gradcam_layer_for(s.tiny) in names
        assert model.output_names == ["binary_output", "stage_output"]
    else:
        assert s.gradcam_layer_for(s.tiny) is None
    for layer in (*s.adapted, *s.precomputable, *s.attention_layers_for(s.tiny)):
        assert layer in names, (architecture, layer)
    assert s.weights_init(s.tiny)["imagenet"] is False
    with pytest.raises(ValueError, match="unknown model config keys"):
        s.config({"no_such_key": 1})


def test_simple_cnn_gradcam_layer_follows_its_depth():
    assert spec("simple_cnn").gradcam_layer_for({"filters": [4, 8]}) == "conv2"
