"""Training: configs, data pipeline pieces, and tiny end-to-end runs on synthetic phantoms."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from ml.bundle import load_bundle, read_manifest  # noqa: E402
from ml.cli import main as cli_main  # noqa: E402
from ml.data.splits import validation_split  # noqa: E402
from ml.losses import SparseFocalLoss, balanced_class_weights, get_loss  # noqa: E402
from ml.training import train_all  # noqa: E402
from ml.training.config import CONFIG_DIR, ConfigError, load_config, stages  # noqa: E402
from ml.training.data import (  # noqa: E402
    BatchSequence,
    augment_pair,
    oversample_indices,
)
from ml.training.optim import MultiplierAdam  # noqa: E402

HERE = Path(__file__).parent
TINY_SEG = HERE / "configs" / "tiny_seg.yaml"
TINY_CLS = HERE / "configs" / "tiny_cls.yaml"
DESIGN_KEYS = {"attention_unet", "unet_best", "cnn_classifier", "classifier_best",
               "hybrid_cnn_transformer"}  # fmt: skip


# --------------------------------------------------------------------------- configs


def test_shipped_configs_load_and_build_plans():
    keys = train_all.shipped_configs()
    assert set(keys) >= DESIGN_KEYS
    assert {"attention_unet_lite", "cnn_classifier_balanced", "hybrid_v3"} <= set(keys)
    for key in keys:
        cfg = load_config(CONFIG_DIR / f"{key}.yaml")
        assert cfg["key"] == key
        plan = stages(cfg)
        assert plan[-1]["input_size"] == 256
    # unet_best comes out of the attention_unet run, not a second training.
    assert "unet_best" not in [k for k, _ in train_all.plan(keys)]


def test_a_warm_started_config_runs_after_the_bundle_it_starts_from():
    order = [
        key for key, _ in train_all.plan(["attention_unet_lite_refined", "attention_unet_lite"])
    ]
    assert order == ["attention_unet_lite", "attention_unet_lite_refined"]


def test_design_hyperparameters():
    unet = load_config("attention_unet")
    assert unet["training"]["loss"] == "bce"
    assert [(s["input_size"], s["epochs"], s["batch_size"]) for s in stages(unet)] == [
        (256, 50, 16)
    ]  # the design's schedule
    assert unet["training"]["early_stopping"]["patience"] == 10
    cnn = load_config("cnn_classifier")
    t = cnn["training"]
    assert (t["epochs"], t["batch_size"]) == (100, 32)
    assert t["early_stopping"] == {"monitor": "val_binary_output_accuracy", "patience": 20,
                                   "restore_best_weights": False}  # fmt: skip
    assert t["reduce_lr"]["patience"] == 7 and t["reduce_lr"]["factor"] == 0.5
    assert t["loss_weights"] == {"binary_output": 1.0, "stage_output": 0.5}
    for key in ("classifier_best", "hybrid_cnn_transformer"):
        t = load_config(key)["training"]
        assert (t["epochs"], t["batch_size"], t["early_stopping"]["patience"]) == (50, 16, 15)


def test_epoch_caps_per_stage():
    from ml.training.cli import epoch_caps

    cfg = load_config("attention_unet")
    cfg["training"]["schedule"] = [{"input_size": 128, "epochs": 30}, {"epochs": 5}]
    assert [s["input_size"] for s in stages(cfg)] == [128, 256]
    assert [s["epochs"] for s in stages(cfg, 4)] == [4, 4]
    assert [s["epochs"] for s in stages(cfg, [7, 1])] == [7, 1]
    assert [s["epochs"] for s in stages(cfg, [100, 100])] == [30, 5]  # caps never extend
    with pytest.raises(ConfigError, match="one per stage"):
        stages(cfg, [3])
    assert epoch_caps("8") == 8 and epoch_caps("7,1") == [7, 1]
    for bad in ("x", "3,0"):
        with pytest.raises(Exception, match="epoch"):
            epoch_caps(bad)


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: x\narchitecture: simple_cnn\ntraining: {epoks: 3}\n")
    with pytest.raises(ConfigError, match="unknown key 'epoks'"):
        load_config(bad)
    bad.write_text("key: x\narchitecture: resnet\n")
    with pytest.raises(ConfigError, match="architecture must be one of"):
        load_config(bad)


# --------------------------------------------------------------------------- pieces


def test_validation_split_is_subject_disjoint():
    subjects = np.repeat([f"s{i}" for i in range(10)], 3)
    fit, val = validation_split(subjects, 0.2, seed=1)
    assert len(fit) + len(val) == 30 and len(val) == 6
    assert not set(subjects[fit]) & set(subjects[val])


def test_oversampling_balances_and_keeps_originals():
    labels = np.array([0] * 20 + [1] * 2 + [2] * 5)
    idx = oversample_indices(labels, 1.0, np.random.default_rng(0))
    assert set(range(len(labels))) <= set(idx.tolist())
    counts = np.bincount(labels[idx])
    assert counts.min() == counts.max() == 20


def test_augmentation_moves_image_and_mask_together():
    rng = np.random.default_rng(0)
    image = np.zeros((64, 64, 1), np.float32)
    image[20:40, 25:45] = 1.0
    mask = (image > 0.5).astype(np.float32)
    spec = {"shift": 0.1, "rotate": 10, "scale": 0.1, "p": 1.0}
    img2, mask2 = augment_pair(image, mask, rng, spec)
    assert not np.array_equal(img2, image)
    agree = np.mean((img2 > 0.5) == (mask2 > 0.5))
    assert agree > 0.98
    assert set(np.unique(mask2)) <= {0.0, 1.0}


def test_batches_are_whole_and_reproducible():
    x = np.random.default_rng(0).random((10, 8, 8, 1)).astype(np.float32)
    y = {"binary_output": np.arange(10) % 2, "stage_output": np.arange(10) % 4}
    a = BatchSequence(x, y, 4, seed=3, augment={"shift": 0.1, "p": 1.0})
    b = BatchSequence(x, y, 4, seed=3, augment={"shift": 0.1, "p": 1.0})
    assert len(a) == 3 and all(len(a[i][0]) == 4 for i in range(3))
    np.testing.assert_array_equal(a[1][0], b[1][0])


def test_losses():
    y = np.array([0, 1, 3])
    p = np.array([[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.1, 0.1, 0.1, 0.7]], np.float32)
    ce = keras.losses.SparseCategoricalCrossentropy()(y, p)
    assert np.isclose(float(SparseFocalLoss(gamma=0.0)(y, p)), float(ce), atol=1e-6)
    assert float(SparseFocalLoss(gamma=2.0)(y, p)) < float(ce)
    weights = balanced_class_weights(np.array([0] * 8 + [1] * 2), 4)
    assert weights[1] > weights[0] and weights[2] == weights[3]
    mask = np.zeros((1, 8, 8, 1), np.float32)
    mask[0, 2:6, 2:6] = 1
    assert float(get_loss("dice_bce")(mask, mask * 0.999 + 0.0005)) < 0.05
    assert float(get_loss("dice")(mask, 1 - mask)) > 0.9


def test_boundary_term_weighs_errors_at_the_outline():
    from ml.losses import DiceBCELoss, boundary_band

    mask = np.zeros((1, 16, 16, 1), np.float32)
    mask[0, 4:12, 4:12] = 1
    band = keras.ops.convert_to_numpy(boundary_band(mask, 3))[0, ..., 0]
    # A ring one pixel either side of the square's edge; interior and far background are 0.
    assert band[4, 4] == 1 and band[3, 8] == 1 and band[8, 8] == 0 and band[0, 0] == 0
    assert band.sum() == 10 * 10 - 6 * 6  # the 8x8 square dilated by 3x3 minus it eroded
    good = mask * 0.98 + 0.01
    edge, interior = good.copy(), good.copy()
    edge[0, 4, 4:8] = 0.01  # four wrong pixels on the outline
    interior[0, 7:9, 7:9] = 0.01  # four wrong pixels in the middle
    plain = get_loss("dice_bce")
    aware = get_loss({"name": "dice_bce", "boundary_weight": 1.0, "boundary_width": 3})
    assert np.isclose(float(plain(mask, edge)), float(plain(mask, interior)), rtol=1e-4)
    assert float(aware(mask, edge)) > float(aware(mask, interior)) + 0.05
    restored = DiceBCELoss.from_config(aware.get_config())
    assert restored.boundary_weight == 1.0 and restored.boundary_width == 3
    with pytest.raises(ValueError, match="odd"):
        DiceBCELoss(boundary_weight=1.0, boundary_width=4)


def test_lovasz_term_is_one_minus_iou_on_hard_masks_and_descends_towards_the_target():
    from ml.losses import DiceBCELoss, lovasz_per_image

    rng = np.random.default_rng(3)
    truth = (rng.random((4, 12, 12, 1)) > 0.6).astype(np.float32)
    guess = (rng.random((4, 12, 12, 1)) > 0.5).astype(np.float32)
    guess[0] = truth[0]  # one exact prediction: IoU 1, loss 0
    inter = (truth * guess).sum(axis=(1, 2, 3))
    union = np.maximum(truth, guess).sum(axis=(1, 2, 3))
    got = keras.ops.convert_to_numpy(lovasz_per_image(truth, guess))
    np.testing.assert_allclose(got, 1.0 - inter / union, atol=1e-6)
    assert got[0] == 0.0

    # On soft predictions it is a surrogate that a gradient step moves towards the target.
    tf = pytest.importorskip("tensorflow")
    soft = tf.constant(rng.random((4, 12, 12, 1)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(soft)
        total = tf.reduce_sum(lovasz_per_image(truth, soft))
    before, grad = float(total), tape.gradient(total, soft).numpy()
    assert np.abs(grad).sum() > 0
    stepped = np.clip(soft.numpy() - 0.05 * np.sign(grad), 0, 1)
    assert float(keras.ops.sum(lovasz_per_image(truth, stepped))) < before

    plain = get_loss("dice_bce")
    with_lovasz = get_loss({"name": "dice_bce", "lovasz_weight": 0.5})
    mask, pred = truth[1:2], guess[1:2] * 0.98 + 0.01
    extra = float(with_lovasz(mask, pred)) - float(plain(mask, pred))
    expected = 0.5 * float(lovasz_per_image(mask, pred)[0])
    assert expected > 0.1 and np.isclose(extra, expected, rtol=1e-4)
    assert DiceBCELoss.from_config(with_lovasz.get_config()).lovasz_weight == 0.5


def test_gain_augmentation_scales_intensity_only():
    image = np.full((32, 32, 1), 0.4, np.float32)
    mask = np.zeros((32, 32, 1), np.float32)
    mask[8:24, 8:24] = 1
    seen = []
    for seed in range(20):
        img2, mask2 = augment_pair(image, mask, np.random.default_rng(seed), {"gain": 0.5})
        np.testing.assert_array_equal(mask2, mask)
        assert np.ptp(img2) < 1e-6  # one factor for the whole image
        seen.append(float(img2.mean()) / 0.4)
    assert min(seen) >= np.exp(-0.5) - 1e-4 and max(seen) <= np.exp(0.5) + 1e-4
    assert min(seen) < 0.8 and max(seen) > 1.25  # darker and brighter scanners both occur


def test_multiplier_adam_scales_the_backbone_rate():
    a = keras.Variable(np.ones(3, np.float32), name="a")
    b = keras.Variable(np.ones(3, np.float32), name="b")
    opt = MultiplierAdam(lr_multipliers={b.path: 0.01}, learning_rate=0.1)
    opt.apply([np.ones(3, np.float32), np.ones(3, np.float32)], [a, b])
    step_a = 1 - float(keras.ops.convert_to_numpy(a)[0])
    step_b = 1 - float(keras.ops.convert_to_numpy(b)[0])
    assert np.isclose(step_a, 0.1, rtol=1e-3) and np.isclose(step_b, 0.001, rtol=1e-3)


def test_next_stage_continues_the_optimizer_state():
    from ml.models import build_model
    from ml.training.loop import carry_optimizer_state

    cfg = {"base_filters": 4}
    small = build_model("attention_unet_lite", {**cfg, "input_size": 32})
    small.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1), dtype=np.float32)
    small.fit(x, (x > 0.5).astype(np.float32), batch_size=2, epochs=1, verbose=0)
    big = build_model("attention_unet_lite", {**cfg, "input_size": 64})
    big.set_weights(small.get_weights())
    big.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    carried = carry_optimizer_state(small.optimizer, big.optimizer, big.trainable_variables)
    old = [keras.ops.convert_to_numpy(v) for v in small.optimizer.variables]
    new = [keras.ops.convert_to_numpy(v) for v in big.optimizer.variables]
    assert carried == len(new) - 1  # all but the learning rate
    assert int(new[0]) == 2  # two steps taken in the first stage
    assert float(big.optimizer.learning_rate) == pytest.approx(1e-3)  # the stage's own rate
    moments = [(a, b) for a, b in zip(old[2:], new[2:], strict=True)]
    assert any(np.abs(a).max() > 0 for a, _ in moments)
    assert all(np.array_equal(a, b) for a, b in moments)
    # Nothing to carry into the first stage, and mismatched variables are refused.
    assert carry_optimizer_state(None, big.optimizer, big.trainable_variables) == 0
    other = build_model("attention_unet_lite", {"base_filters": 8, "input_size": 32})
    other.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    assert carry_optimizer_state(small.optimizer, other.optimizer, other.trainable_variables) == 0


# --------------------------------------------------------------------------- end to end


def _metrics_equal(a: dict, b: dict, keys) -> None:
    for k in keys:
        assert a[k] == pytest.approx(b[k], abs=1e-6), k


def test_segmentation_trains_end_to_end(synthetic_dataset, tmp_path):
    from ml.evaluation.evaluate import evaluate_bundle
    from ml.training.loop import train

    models = tmp_path / "models"
    result = train(TINY_SEG, synthetic_dataset, models_dir=models, run_dir=tmp_path / "run",
                   verbose=0)  # fmt: skip
    path = models / "tiny_seg"
    assert result.bundle_dir == path and result.derived == [models / "tiny_seg_best"]
    m = read_manifest(path).model_dump()
    assert m["task"] == "segmentation" and m["parameters"] == load_bundle(path).model.count_params()
    assert [s["input_size"] for s in m["training"]["stages"]] == [32, 64]
    assert [s["optimizer_state"] for s in m["training"]["stages"]] == ["fresh", "continued"]
    assert m["training"]["machine"]["backend"] == keras.backend.backend()
    assert m["training"]["epochs_run"] == 2
    assert m["dataset"]["split"] == "subject" and len(m["dataset"]["hash"]) == 64
    assert m["label_provenance"]["mask_kind"] == "expert"
    assert m["weights"]["storage_dtype"] in ("float16", "float32")
    for name in ("README.md", "REPORT.md", "plots/curves.png", "training_log.csv",
                 "metrics_per_image.csv"):  # fmt: skip
        assert (path / name).is_file(), name
    assert "Research use only" in (path / "README.md").read_text()
    assert 0.0 <= m["metrics"]["iou"] <= 1.0
    again = evaluate_bundle(path, synthetic_dataset)
    _metrics_equal(again, m["metrics"], ("iou", "dice", "iou_pooled", "dice_pooled"))
    assert load_bundle(path).manifest.metrics.iou == pytest.approx(m["metrics"]["iou"])


def test_classifier_trains_via_cli_and_evaluate_reproduces(synthetic_dataset, tmp_path, capsys):
    out = tmp_path / "models" / "tiny_cls"
    code = cli_main(["train", "--config", str(TINY_CLS), "--dataset", str(synthetic_dataset),
                     "--out", str(out), "--run-dir", str(tmp_path / "run")])  # fmt: skip
    assert code == 0
    assert "Research use only" in capsys.readouterr().out
    m = read_manifest(out).model_dump()
    assert m["gradcam_layer"] == "top_activation"
    assert m["attention_layers"] == ["transformer1", "transformer2"]
    assert m["training"]["final_weights"] == "best"
    assert (out / "plots" / "confusion_stage.png").is_file()
    rows = list(csv.DictReader((out / "training_log.csv").open()))
    assert {"loss", "val_loss", "val_binary_output_accuracy", "learning_rate"} <= set(rows[0])
    code = cli_main(["evaluate", "--model", str(out), "--dataset", str(synthetic_dataset)])
    assert code == 0
    again = read_manifest(out).model_dump()["metrics"]
    _metrics_equal(again, m["metrics"], ("binary_accuracy", "stage_accuracy", "stage_macro_f1"))
    assert again["binary"]["confusion_matrix"] == m["metrics"]["binary"]["confusion_matrix"]
    load_bundle(out)  # the rewritten manifest still matches the weights


@pytest.fixture(scope="module")
def clinical_dataset(synthetic_source, tmp_path_factory):
    from ml.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("clinical")
    labels = root / "labels.csv"
    with open(synthetic_source / "slices.csv", newline="") as fh:
        slices = list(csv.DictReader(fh))
    with open(labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "source", "AS_status", "stage"])
        for i, r in enumerate(slices):
            status = int(r["subject_id"][-1]) % 2
            stem = Path(r["filename"]).stem
            writer.writerow([stem, r["source"], status, 1 + i % 3 if status else 0])
    out = root / "dataset"
    prepare_dataset("lumbar-mri", synthetic_source, out, labels_csv=labels)
    return out


def test_clinical_labels_carry_provenance(clinical_dataset, tmp_path):
    from ml.predict import predict_bundle
    from ml.training.loop import train

    cfg = load_config(TINY_CLS)
    cfg["key"] = "tiny_clinical"
    result = train(cfg, clinical_dataset, models_dir=tmp_path, run_dir=tmp_path / "run",
                   epochs=1, verbose=0)  # fmt: skip
    m = read_manifest(result.bundle_dir).model_dump()
    assert m["label_provenance"]["label_source"] == "clinical"
    assert m["label_provenance"]["rule_version"] is None
    assert m["dataset"]["label_source"] == "clinical"
    assert m["metrics"]["label_source"] == "clinical"
    assert "clinical" in (result.bundle_dir / "README.md").read_text()
    assert not (result.bundle_dir / "label_rule.json").exists()
    bundle = load_bundle(result.bundle_dir)
    x = np.random.default_rng(0).random((2, 64, 64, 1)).astype(np.float32)
    out = predict_bundle(bundle, x)
    assert out["label_provenance"]["label_source"] == "clinical"
    assert [p["label_source"] for p in out["predictions"]] == ["clinical", "clinical"]


def test_train_all_lists_and_picks_defaults(tmp_path, capsys):
    from ml.bundle import make_random_bundle, update_manifest

    assert train_all.main(["--dataset", str(tmp_path), "--list"]) == 0
    listed = capsys.readouterr().out
    assert "attention_unet: attention_unet (+ unet_best)" in listed
    a = make_random_bundle(tmp_path, "a", "simple_cnn", default=True)
    b = make_random_bundle(tmp_path, "b", "simple_cnn")
    s = make_random_bundle(tmp_path, "s", "attention_unet_lite")
    update_manifest(a, {"metrics": {"binary_accuracy": 0.9, "stage_macro_f1": 0.3}})
    update_manifest(b, {"metrics": {"binary_accuracy": 0.8, "stage_macro_f1": 0.7}})
    update_manifest(s, {"metrics": {"iou": 0.5}})
    chosen = train_all.select_defaults(tmp_path)
    assert chosen == {"classification": "b", "segmentation": "s"}
    assert [read_manifest(p).default for p in (a, b, s)] == [False, True, True]
    assert json.loads((b / "manifest.json").read_text())["default"] is True


def test_ordinal_cnn_trains_on_cached_measurements(synthetic_dataset, tmp_path, monkeypatch):
    from ml.evaluation.evaluate import evaluate_bundle
    from ml.training import loop

    calls = []
    real = loop.precompute

    def counting(model, names, images):
        calls.append((names, len(images)))
        return real(model, names, images)

    monkeypatch.setattr(loop, "precompute", counting)
    models = tmp_path / "models"
    loop.train(HERE / "configs" / "tiny_ordinal.yaml", synthetic_dataset, models_dir=models,
               run_dir=tmp_path / "run", verbose=0)  # fmt: skip
    # Measured once for the fit images and once for the validation images, not per step.
    assert [c[0] for c in calls] == [("rule_features", "statistics", "quantiles")] * 2
    path = models / "tiny_ordinal"
    m = read_manifest(path).model_dump()
    assert m["training"]["epochs_run"] == 2 and m["gradcam_layer"] == "conv4"
    # The best-epoch weights, saved from the cached-input view, load into the image-only model.
    assert len(load_bundle(path).model.inputs) == 1
    again = evaluate_bundle(path, synthetic_dataset)
    _metrics_equal(again, m["metrics"], ("binary_accuracy", "stage_accuracy", "stage_macro_f1"))
    # The rule that labelled the training data ships with the model that learnt it.
    from ml.bundle import read_label_rule
    from ml.data.labels import load_rule

    shipped = read_label_rule(path, read_manifest(path))
    assert shipped == load_rule(synthetic_dataset / "label_rule.json")


def test_cached_inputs_refuse_augmentation():
    x = np.zeros((4, 8, 8, 1), np.float32)
    y = {"binary_output": np.zeros(4, np.int32), "stage_output": np.zeros(4, np.int32)}
    with pytest.raises(ValueError, match="augmentation"):
        BatchSequence(x, y, 2, augment={"shift": 0.1}, extra_inputs=[np.zeros((4, 3))])
    seq = BatchSequence(x, y, 2, extra_inputs=[np.arange(4.0)[:, None]], shuffle=False)
    (images, extra), _ = seq[1]
    assert images.shape == (2, 8, 8, 1) and extra[:, 0].tolist() == [2.0, 3.0]


def test_training_continues_from_init_weights(synthetic_dataset, tmp_path):
    from ml.training.loop import train

    first = train(TINY_SEG, synthetic_dataset, models_dir=tmp_path / "a", run_dir=tmp_path / "r1",
                  epochs=1, verbose=0)  # fmt: skip
    start = tmp_path / "start.weights.h5"
    load_bundle(first.bundle_dir).model.save_weights(start)
    second = train(TINY_SEG, synthetic_dataset, models_dir=tmp_path / "b",
                   run_dir=tmp_path / "r2", epochs=1, verbose=0, init_weights=start)  # fmt: skip
    assert second.manifest.training is not None and first.manifest.training is not None
    record = second.manifest.training.model_dump()["init_weights"]
    assert record["file"] == "start.weights.h5" and len(record["sha256"]) == 64
    assert "init_weights" not in first.manifest.training.model_dump(exclude_none=True)


def test_training_starts_from_another_bundles_layers(synthetic_dataset, tmp_path):
    from ml.bundle import make_random_bundle
    from ml.training.loop import train
    from ml.training.warm_start import transfer_layers

    first = train(TINY_SEG, synthetic_dataset, models_dir=tmp_path / "a", run_dir=tmp_path / "r1",
                  epochs=1, verbose=0)  # fmt: skip
    cfg = load_config(TINY_SEG)
    cfg.update(key="tiny_refined", model={**cfg["model"], "internal_scale": 2, "refine_filters": 4})
    cfg["training"].update(schedule=None, init_from=str(first.bundle_dir))
    cfg["bundle"]["derived"] = []

    # Every layer of the lite U-Net carries over by name; the refinement is new.
    from ml.models import build_model

    fresh = build_model("attention_unet_lite", {**cfg["model"], "input_size": 64})
    shared, new = transfer_layers(first.bundle_dir, fresh)
    assert new == ["refine_conv1", "refine_conv2", "refine_delta"] and "mask" in shared
    source = load_bundle(first.bundle_dir).model
    for name in shared:
        for mine, theirs in zip(
            fresh.get_layer(name).get_weights(), source.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(mine, theirs)

    second = train(cfg, synthetic_dataset, models_dir=tmp_path / "b", run_dir=tmp_path / "r2",
                   epochs=1, verbose=0)  # fmt: skip
    assert second.manifest.training is not None
    record = second.manifest.training.model_dump()["init_from"]
    assert record["bundle"] == "tiny_seg" and record["weights"]["sha256"] == (
        first.manifest.weights.sha256
    )

    # A bundle with nothing in common is refused, not silently ignored.
    other = make_random_bundle(tmp_path, "cls", "simple_cnn", cfg={"input_size": 64})
    with pytest.raises(ValueError, match="no layer"):
        transfer_layers(other, build_model("attention_unet_lite", cfg["model"]))


def test_time_limit_stops_after_the_epoch_in_progress(synthetic_dataset, tmp_path, capsys):
    out = tmp_path / "models" / "tiny_seg"
    code = cli_main(["train", "--config", str(TINY_SEG), "--dataset", str(synthetic_dataset),
                     "--out", str(out), "--run-dir", str(tmp_path / "run"),
                     "--time-limit", "0.001"])  # fmt: skip
    assert code == 0
    m = read_manifest(out).model_dump()
    t = m["training"]
    assert t["time_limit_s"] == pytest.approx(0.001) and t["stopped_by_time_limit"] is True
    assert t["epochs_run"] == 1  # the first epoch finishes; the 64 px stage is skipped
    assert t["stages"][0]["epochs_run"] == 1 and t["stages"][1]["skipped"] == "time limit"
    assert "1 epochs" in capsys.readouterr().out
    assert cli_main(["train", "--config", str(TINY_SEG), "--dataset", str(synthetic_dataset),
                     "--out", str(tmp_path / "x"), "--time-limit", "-5"]) != 0  # fmt: skip
    assert not (tmp_path / "x").exists()
