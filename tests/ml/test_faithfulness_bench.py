"""The faithfulness benchmark: the slice subset, the subject bootstrap, the default's choice,
a complete table on a tiny random model, the manifest record and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml.evaluation import faithfulness_bench as fb
from ml.manifest import ExplanationBenchmark, ManifestError, MethodFaithfulness, parse_manifest


def _rows() -> list[dict[str, str]]:
    rows = []
    for source, subjects in (("a", 3), ("b", 1)):
        for s in range(subjects):
            for k in range(5):
                rows.append(
                    {"source": source, "subject_id": f"{source}{s}", "AS_status": str(k % 2)}
                )
    return rows


def test_slices_are_deterministic_and_balanced() -> None:
    rows = _rows()
    picked = fb.select_slices(rows, 8)
    assert picked == fb.select_slices(rows, 8) and len(set(picked)) == 8
    cells = [(rows[i]["source"], rows[i]["AS_status"]) for i in picked]
    assert {c: cells.count(c) for c in set(cells)} == {
        ("a", "0"): 2, ("a", "1"): 2, ("b", "0"): 2, ("b", "1"): 2,
    }  # fmt: skip
    # Within a cell the subjects take turns before any gives a second slice.
    a0 = [
        rows[i]["subject_id"] for i, cell in zip(picked, cells, strict=True) if cell == ("a", "0")
    ]
    assert len(set(a0)) == 2
    assert sorted(fb.select_slices(rows, 999)) == list(range(len(rows)))


def test_middle_slices_come_first() -> None:
    assert fb._middle_out(5) == [2, 1, 3, 0, 4]


def test_bootstrap_over_subjects() -> None:
    values = [0.0, 0.0, 1.0, 1.0]
    low, high = fb.bootstrap_ci(values, ["s1", "s1", "s2", "s2"], n_boot=500)
    assert 0.0 <= low <= 0.5 <= high <= 1.0
    assert fb.bootstrap_ci(values, ["s"] * 4) == (0.5, 0.5)
    assert fb.bootstrap_ci([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3))
    assert fb.bootstrap_ci([0.0, 1.0], n_boot=200) == fb.bootstrap_ci([0.0, 1.0], n_boot=200)


def _summary(score: float, insertion: float = 0.5) -> MethodFaithfulness:
    return MethodFaithfulness(
        n=2, score=score, score_ci=(score, score), deletion_auc=0.4, deletion_auc_ci=(0.4, 0.4),
        insertion_auc=insertion, insertion_auc_ci=(insertion, insertion), empty_fraction=0.0,
    )  # fmt: skip


def test_default_is_the_highest_mean_score() -> None:
    assert fb.pick_default({"gradcam": _summary(0.1), "rise": _summary(0.3)}) == "rise"
    # Ties: the higher insertion AUC, then the vocabulary's order.
    tie = {"rise": _summary(0.2, 0.5), "occlusion": _summary(0.2, 0.7)}
    assert fb.pick_default(tie) == "occlusion"
    flat = {"rise": _summary(0.0), "gradcam": _summary(0.0), "eigencam": _summary(0.0)}
    assert fb.pick_default(flat) == "gradcam"
    # Differences below the resolution are noise: a flat model keeps the cheap method.
    noise = {"gradcam": _summary(0.0, 0.6561), "occlusion": _summary(0.0003, 0.6563)}
    assert fb.pick_default(noise) == "gradcam"
    with pytest.raises(ValueError):
        fb.pick_default({})


def test_attention_only_for_models_with_attention_layers() -> None:
    from ml.bundle import new_manifest

    plain = new_manifest(key="m", architecture="simple_cnn", cfg={"input_size": 64})
    assert "attention" not in fb.applicable_methods(plain)
    with_attention = plain.model_copy(update={"attention_layers": ["t1"]})
    assert fb.applicable_methods(with_attention)[-1] == "attention"


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("keras")
    from ml.bundle import load_bundle, make_random_bundle

    models = tmp_path_factory.mktemp("bench-models")
    return load_bundle(make_random_bundle(models, "tiny", "simple_cnn", seed=1))


def _images(n: int = 2, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    imgs = []
    for _ in range(n):
        cy, cx = rng.integers(16, size - 16, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 60.0)
        imgs.append(np.clip(0.2 + 0.7 * blob + 0.05 * rng.random((size, size)), 0, 1))
    return np.stack(imgs)[..., None].astype(np.float32)


def test_a_tiny_model_gets_a_complete_table(tiny_bundle) -> None:  # noqa: ANN001
    record = fb.benchmark_bundle(
        tiny_bundle, _images(), ["img_a", "img_b"], ["s1", "s2"], steps=4, n_random=1, n_boot=200
    )
    assert isinstance(record, ExplanationBenchmark)
    assert [str(m) for m in record.measured] == fb.applicable_methods(tiny_bundle.manifest)
    for m in record.measured.values():
        assert m.n == 2 and 0.0 <= m.empty_fraction <= 1.0
        for value, (low, high) in (
            (m.score, m.score_ci), (m.deletion_auc, m.deletion_auc_ci),
            (m.insertion_auc, m.insertion_auc_ci),
        ):  # fmt: skip
            assert np.isfinite(value) and low <= value + 1e-4 and value <= high + 1e-4
        assert -1.0 <= m.score <= 1.0 and 0.0 <= m.deletion_auc <= 1.0
    # The default is the argmax of the mean score (at the benchmark's resolution).
    best = max(round(m.score / fb.RESOLUTION) for m in record.measured.values())
    assert round(record.measured[record.default_method].score / fb.RESOLUTION) == best
    assert record.default_method == fb.pick_default({str(k): v for k, v in record.measured.items()})
    assert record.slices == ["img_a", "img_b"] and record.subjects == 2 and record.steps == 4
    # Round trip through a manifest: the record is part of the schema.
    data = {**tiny_bundle.manifest.model_dump(mode="json"), "explanation": record.model_dump()}
    assert parse_manifest(json.loads(json.dumps(data))).default_method == record.default_method


def test_segmenters_are_refused(tiny_bundle) -> None:  # noqa: ANN001
    seg = type(tiny_bundle)(
        key="s", path=tiny_bundle.path, model=tiny_bundle.model,
        manifest=tiny_bundle.manifest.model_copy(update={"task": "segmentation"}),
    )  # fmt: skip
    with pytest.raises(ValueError, match="classifiers"):
        fb.benchmark_bundle(seg, _images(1), ["a"], ["s"])


def test_manifest_field_is_optional_and_checked(tiny_bundle) -> None:  # noqa: ANN001
    manifest = tiny_bundle.manifest
    assert manifest.explanation is None and manifest.default_method == "gradcam"
    bad = {
        **manifest.model_dump(mode="json"),
        "explanation": {
            "default_method": "rise", "measured": {"gradcam": _summary(0.1).model_dump()},
            "split": "test", "slices": ["a"], "subjects": 1, "steps": 4, "n_random": 1,
        },
    }  # fmt: skip
    with pytest.raises(ManifestError, match="not measured"):
        parse_manifest(bad)


def test_cli_writes_json_manifest_and_card(synthetic_dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("keras")
    from ml.bundle import load_bundle, make_random_bundle
    from ml.cli import main

    models = tmp_path / "models"
    make_random_bundle(models, "tiny", "simple_cnn", seed=2)
    make_random_bundle(models, "seg", "attention_unet_lite", task="segmentation")
    out = tmp_path / "bench.json"
    argv = ["evaluate", "--faithfulness", "--dataset", str(synthetic_dataset), "--models-dir",
            str(models), "--slices", "2", "--steps", "2", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    table = fb.FaithfulnessTable.model_validate_json(out.read_text())
    assert list(table.models) == ["tiny"] and len(table.slices) == 2 and table.steps == 2
    bundle = load_bundle(models / "tiny")  # the hash still verifies
    assert bundle.manifest.explanation == table.models["tiny"]
    assert bundle.manifest.default_method == table.models["tiny"].default_method
    assert "## Explanation methods" in (models / "tiny" / "README.md").read_text()
    assert load_bundle(models / "seg").manifest.explanation is None
    assert main([*argv, "--model", "seg"]) == 2
