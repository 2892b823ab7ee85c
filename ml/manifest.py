"""The bundle manifest, typed: one definition to write, read and validate ``manifest.json``.

``ml`` writes and loads bundles with it; the service describes its models with the same
classes. The parts every consumer reads (task, input, outputs, label provenance, weights,
metrics) are typed; the training record keeps its per-epoch logs free-form.

``schema_version`` says which shape a file has. Version 1 (no ``schema_version`` key, written
before this module existed) is upgraded in memory when read; a newer version than this code
knows is refused with a clear message. ``python -m ml.manifest upgrade models/`` rewrites
version-1 files in place (the weights, and so their hashes, are untouched).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import sys
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ml import RESEARCH_USE_NOTICE
from ml.vocab import AS_STATUS_NAMES, STAGE_NAMES, CamMethod, Task

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 2
MANIFEST = "manifest.json"
WEIGHTS = "model.weights.h5"

INTENDED_USE = (
    "Research on explainable deep learning for ankylosing spondylitis on sagittal spine MRI. "
    + RESEARCH_USE_NOTICE
)
LABEL_DESCRIPTIONS = {
    "feature_rule_v2": (
        "AS status and stage were assigned by a feature-based labelling rule (v2) fitted on four "
        "image statistics, not by clinicians: the model learns that rule, not the disease."
    ),
    "feature_rule_v1": (
        "AS status and stage were assigned by the design's global feature-rule thresholds (v1) "
        "on image statistics, not by clinicians: the model learns that rule, not the disease."
    ),
    "clinical": (
        "AS status and stage come from the data owner's CSV (clinical labels); their meaning and "
        "quality are those of that source."
    ),
    "mixed": "Labels come from more than one source (see the dataset's label_source column).",
}
MASK_DESCRIPTIONS = {
    "expert": "Target masks are expert manual segmentations (vertebral bodies or discs).",
    "roi": "Target masks are lumbosacral region boxes derived from annotated level points.",
    "mixed": (
        "Target masks are expert manual segmentations where a slice has them, otherwise "
        "lumbosacral region boxes derived from annotated level points."
    ),
}


class ManifestError(ValueError):
    """A manifest that cannot be read as any known schema version."""


class _Open(BaseModel):
    """A record whose known fields are typed and whose other fields are kept as they are."""

    model_config = ConfigDict(extra="allow")


class InputSpec(BaseModel):
    """What the model takes: one grayscale image in [0, 1] after the one preprocessing."""

    model_config = ConfigDict(extra="forbid")

    shape: list[int] = Field(description="(height, width, channels)")
    dtype: str = "float32"
    range: tuple[float, float] = (0.0, 1.0)
    preprocessing: dict[str, Any] = Field(description="ml.preprocessing.PREPROCESSING_SPEC")

    @property
    def size(self) -> int:
        return int(self.shape[0])


class MaskOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = 0.5


class Outputs(BaseModel):
    """Class names per classifier head, or the mask threshold of a segmenter."""

    model_config = ConfigDict(extra="forbid")

    binary_output: list[str] | None = None
    stage_output: list[str] | None = None
    mask: MaskOutput | None = None


class LabelProvenance(BaseModel):
    """Where a model's training labels came from; always research-use-only."""

    model_config = ConfigDict(extra="forbid")

    label_source: str = Field(description="feature_rule_v2 | feature_rule_v1 | clinical | ...")
    description: str = ""
    rule_version: str | None = None
    research_use_only: Literal[True] = True
    mask_kind: str | None = None
    mask_description: str | None = None


class WeightsInfo(BaseModel):
    """The weights file, its hash, storage and how it was initialised before training."""

    model_config = ConfigDict(extra="forbid")

    file: str = WEIGHTS
    sha256: str | None = None
    storage_dtype: Literal["float16", "float32"] | None = None
    bytes: int | None = None
    imagenet: bool = False
    init: str = "none"
    backbone: str | None = None
    float16_metric_change: float | None = None


class Metrics(_Open):
    """Measured on one split; classification and segmentation fill their own fields."""

    split: str | None = None
    dataset: str | None = None
    dataset_hash: str | None = None
    label_source: str | None = None
    evaluated: str | None = None
    n: int | None = None
    binary_accuracy: float | None = None
    binary_roc_auc: float | None = None
    binary_macro_f1: float | None = None
    stage_accuracy: float | None = None
    stage_macro_f1: float | None = None
    stage_weighted_f1: float | None = None
    early_recall: float | None = None
    binary: dict[str, Any] | None = None
    stage: dict[str, Any] | None = None
    threshold: float | None = None
    iou: float | None = None
    dice: float | None = None
    iou_median: float | None = None
    iou_pooled: float | None = None
    dice_pooled: float | None = None
    per_source: dict[str, dict[str, Any]] = Field(default_factory=dict)


class TrainingRecord(_Open):
    """How the weights were made (the config, stages, time, machine); logs stay free-form."""

    config_path: str | None = None
    config: dict[str, Any] | None = None
    epochs_run: int | None = None
    stages: list[dict[str, Any]] = Field(default_factory=list)
    seconds: float | None = None
    machine: dict[str, Any] | None = None
    seed: int | None = None


class DatasetRecord(_Open):
    hash: str | None = None
    dir: str | None = None
    split: str | None = None
    label_source: str | None = None


class MethodFaithfulness(BaseModel):
    """One explanation method's measured faithfulness: means over the benchmark's slices and
    their 95% confidence intervals (``(low, high)``)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(description="slices measured")
    score: float = Field(description="mean faithfulness score (vs random deletion), in [-1, 1]")
    score_ci: tuple[float, float]
    deletion_auc: float = Field(description="mean deletion AUC (lower is more faithful)")
    deletion_auc_ci: tuple[float, float]
    insertion_auc: float = Field(description="mean insertion AUC (higher is more faithful)")
    insertion_auc_ci: tuple[float, float]
    empty_fraction: float = Field(description="share of slices whose map was all zero")
    seconds_per_slice: float | None = Field(
        default=None, description="map + faithfulness test, per slice, on the benchmark machine"
    )


class ExplanationBenchmark(BaseModel):
    """Which explanation method a classifier uses by default, and the measurements behind it
    (written by ``spondyscan evaluate --faithfulness``)."""

    model_config = ConfigDict(extra="forbid")

    default_method: CamMethod = Field(description="the measured best method, used by default")
    criterion: str = "highest mean faithfulness score"
    measured: dict[CamMethod, MethodFaithfulness]
    split: str
    dataset_hash: str | None = None
    slices: list[str] = Field(description="image ids of the benchmark slices")
    subjects: int = Field(description="distinct subjects among the slices")
    head: str = "binary_output"
    explained_class: str = "predicted"
    steps: int
    n_random: int
    baseline: str = "blur"
    ci: str = "95% percentile bootstrap over subjects"
    evaluated: str | None = None

    @model_validator(mode="after")
    def _default_is_measured(self) -> ExplanationBenchmark:
        if self.default_method not in self.measured:
            raise ValueError(f"default_method {self.default_method} was not measured")
        return self


class HeadCalibration(BaseModel):
    """Temperature scaling of one head: the fitted T and what it did on the test split."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(gt=0, description="log-probabilities are divided by this")
    ece_before: float = Field(description="expected calibration error on the test split, raw")
    ece_after: float = Field(description="expected calibration error on the test split, scaled")
    nll_before: float
    nll_after: float


class LevelDice(BaseModel):
    """One vertebral level's Dice on the test split, with its 95 % interval over subjects."""

    model_config = ConfigDict(extra="forbid")

    dice: float
    ci95: list[float]
    n: int


class LevelsRecord(BaseModel):
    """Segmenters: how well the bodies named from the column's geometry match the true levels."""

    model_config = ConfigDict(extra="forbid")

    naming: str = "geometry: counted up from the lowest segmented body (L5)"
    per_level: dict[str, LevelDice]
    all_levels_named: float = Field(description="share of slices with every level Dice > 0.5")
    slices: int
    subjects: int
    sources: dict[str, int] = Field(default_factory=dict)
    evaluated: str | None = None


class CVMetric(BaseModel):
    """One metric of a cross-validation: pooled over every fold's held-out slices."""

    model_config = ConfigDict(extra="forbid")

    pooled: float = Field(description="over the held-out predictions of all folds, pooled")
    fold_mean: float | None = Field(default=None, description="mean of the folds' values")
    ci95: tuple[float, float] = Field(description="95 % percentile bootstrap over subjects")


class CVFold(_Open):
    """One fold: its held-out subjects and slices, its metrics, how its model was made."""

    fold: int
    subjects: int = Field(description="held-out subjects")
    n: int = Field(description="held-out slices")
    metrics: dict[str, float | None]
    epochs: int | None = Field(default=None, description="epochs the fold's training ran")
    reused: bool | None = Field(
        default=None, description="its result or bundle came from an earlier run (--resume)"
    )
    seconds: float | None = Field(
        default=None, description="training time of its model (and of its warm-start bundle)"
    )
    init_from: dict[str, Any] | None = Field(
        default=None, description="the fold's own warm-start bundle (a warm-started config)"
    )


class CrossValidation(BaseModel):
    """k-fold cross-validation of the bundle's config (subject-grouped, source-stratified)."""

    model_config = ConfigDict(extra="forbid")

    k: int
    subjects: int
    slices: int
    metrics: dict[str, CVMetric] = Field(
        description="name -> pooled (held-out predictions of all folds), fold_mean, ci95 "
        "(95 % bootstrap over subjects)"
    )
    folds: list[CVFold] = Field(default_factory=list)
    by_source: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="source -> subjects, n (slices) and each metric pooled over its held-out "
        "slices",
    )
    fold_results: str | None = Field(
        default=None,
        description="bundle folder with each fold's provenance and held-out per-slice scores "
        "(foldN.json): the pooled numbers can be recomputed from it",
    )
    epochs_cap: Any = None
    seconds: float | None = None
    note: str = ""
    evaluated: str | None = None


class Calibration(BaseModel):
    """How each head's probabilities are calibrated (applied in serving)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["temperature"] = "temperature"
    fitted_on: str = Field(description="the held-out images T was fitted on")
    evaluated_on: str = "test"
    n_fit: int
    n_eval: int
    bins: int = 10
    binary: HeadCalibration
    stage: HeadCalibration


class Manifest(BaseModel):
    """``models/<key>/manifest.json``: everything known about one bundle."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[2] = SCHEMA_VERSION
    key: str
    display_name: str = ""
    description: str = ""
    task: Task
    version: str = "1.0.0"
    architecture: str
    config: dict[str, Any] = Field(default_factory=dict, description="the builder's config")
    parameters: int | None = None
    flops: int | None = Field(default=None, description="per image, forward pass")
    input: InputSpec
    outputs: Outputs
    label_provenance: LabelProvenance
    training: TrainingRecord | None = None
    dataset: DatasetRecord | None = None
    metrics: Metrics = Field(default_factory=Metrics)
    gradcam_layer: str | None = None
    attention_layers: list[str] = Field(default_factory=list)
    intended_use: str = INTENDED_USE
    weights: WeightsInfo = Field(default_factory=WeightsInfo)
    default: bool = Field(default=False, description="the registry default for its task")
    explanation: ExplanationBenchmark | None = Field(
        default=None, description="measured faithfulness per explanation method (classifiers)"
    )
    calibration: Calibration | None = Field(
        default=None, description="temperature scaling per head, fitted on validation subjects"
    )
    cross_validation: CrossValidation | None = Field(
        default=None, description="k-fold cross-validated metrics of this config"
    )
    levels: LevelsRecord | None = Field(
        default=None, description="segmenters: per-level Dice of the named vertebral bodies"
    )
    created: str | None = None

    def temperature(self, head: str) -> float:
        """The fitted temperature of a head ("binary" or "stage"); 1 when uncalibrated."""
        if self.calibration is None:
            return 1.0
        return float(getattr(self.calibration, head).temperature)

    @property
    def name(self) -> str:
        """The display name, or the key."""
        return self.display_name or self.key

    @property
    def default_method(self) -> CamMethod:
        """The explanation method used when a request names none: the measured best one,
        Grad-CAM for a bundle that was never benchmarked."""
        return self.explanation.default_method if self.explanation else CamMethod.gradcam

    @property
    def status_names(self) -> list[str]:
        return list(self.outputs.binary_output or AS_STATUS_NAMES)

    @property
    def stage_names(self) -> list[str]:
        return list(self.outputs.stage_output or STAGE_NAMES)

    @property
    def mask_threshold(self) -> float:
        return self.outputs.mask.threshold if self.outputs.mask else 0.5

    def class_names(self, head: str) -> list[str]:
        """Class names of ``binary_output``/``stage_output`` (``binary``/``stage`` too)."""
        return self.stage_names if head in ("stage", "stage_output") else self.status_names

    def to_json(self) -> str:
        """Stable, human-readable JSON (the file's text)."""
        data = self.model_dump(mode="json", exclude_none=True)
        return json.dumps(data, indent=2, allow_nan=False) + "\n"


def label_provenance(
    label_source: str, rule_version: str | None = None, mask_kind: str | None = None
) -> LabelProvenance:
    """The ``label_provenance`` block for a dataset's label source."""
    return LabelProvenance(
        label_source=label_source,
        description=LABEL_DESCRIPTIONS.get(label_source, f"Labels from source {label_source!r}."),
        rule_version=rule_version,
        mask_kind=mask_kind,
        mask_description=MASK_DESCRIPTIONS.get(mask_kind, mask_kind) if mask_kind else None,
    )


def default_outputs(task: str) -> Outputs:
    if task == "classification":
        return Outputs(binary_output=list(AS_STATUS_NAMES), stage_output=list(STAGE_NAMES))
    return Outputs(mask=MaskOutput())


def today() -> str:
    return _dt.date.today().isoformat()


# ----------------------------------------------------------------------------- versions


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 had the same fields without ``schema_version``; null blocks become empty."""
    out = dict(data)
    out["schema_version"] = 2
    if out.get("metrics") is None:
        out["metrics"] = {}
    return out


UPGRADES = {1: _upgrade_v1}


def parse_manifest(data: Any, where: str = "manifest") -> Manifest:
    """Validate a manifest's JSON data (upgrading older schema versions).

    Raises:
        ManifestError: not an object, a newer schema than this code knows, or invalid fields
            (the message names the file and each bad field).
    """
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: not a JSON object")
    version: int = data.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise ManifestError(f"{where}: schema_version must be a positive integer")
    if version > SCHEMA_VERSION:
        raise ManifestError(
            f"{where}: schema_version {version} is newer than this spondyscan understands "
            f"(up to {SCHEMA_VERSION}); upgrade spondyscan to load this bundle"
        )
    while version < SCHEMA_VERSION:
        data = UPGRADES[version](data)
        version += 1
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}" for e in exc.errors()
        )
        raise ManifestError(f"{where}: invalid manifest ({problems})") from exc


def upgrade_files(models_dir: str | Path) -> list[Path]:
    """Rewrite every older-schema ``manifest.json`` under ``models_dir`` in the current schema.

    Returns the files rewritten. The weights are not touched, so their hashes stay valid.
    """
    from ml.fsutil import write_atomic

    changed = []
    for path in sorted(Path(models_dir).glob(f"*/{MANIFEST}")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema_version") == SCHEMA_VERSION:
            continue
        manifest = parse_manifest(data, str(path))
        write_atomic(path, manifest.to_json().encode("utf-8"))
        changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.manifest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="rewrite older manifests in the current schema")
    up.add_argument("models_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        changed = upgrade_files(args.models_dir)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    for path in changed:
        print(f"upgraded {path}")  # noqa: T201
    print(f"{len(changed)} manifest(s) upgraded to schema {SCHEMA_VERSION}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
