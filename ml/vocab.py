"""The project's shared vocabulary, defined once: tasks, label names, heads, CAM methods, focus.

The word lists a client chooses from are string enums: the service uses them in its request and
response schemas, so the API's OpenAPI schema carries them as named enums and the web app's
generated client gets them as constants instead of copying them. The tuples beside them are
derived for code that wants plain strings.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

Task = Literal["segmentation", "classification"]
TASKS: tuple[str, ...] = get_args(Task)


class AsStatus(StrEnum):
    """AS status, as the classifiers' binary head names it."""

    negative = "negative"
    positive = "positive"


class Stage(StrEnum):
    """AS stage, as the classifiers' stage head names it (in order of severity)."""

    Normal = "Normal"
    Early = "Early"
    Moderate = "Moderate"
    Advanced = "Advanced"


class Head(StrEnum):
    """A classifier's two heads, as requests name them."""

    binary = "binary"
    stage = "stage"


class CamMethod(StrEnum):
    """How a heatmap is computed: the Grad-CAM family, attention rollout (models with attention
    layers only), or by perturbing the input (occlusion, RISE) or integrating its gradient."""

    gradcam = "gradcam"
    gradcam_pp = "gradcam++"
    eigencam = "eigencam"
    attention = "attention"
    occlusion = "occlusion"
    rise = "rise"
    integrated_gradients = "integrated_gradients"


class Focus(StrEnum):
    """Where an explanation is focused: nowhere, the design's fixed box, or the segmented ROI."""

    none = "none"
    box = "box"
    segmentation = "segmentation"


AS_STATUS_NAMES: tuple[str, ...] = tuple(s.value for s in AsStatus)
STAGE_NAMES: tuple[str, ...] = tuple(s.value for s in Stage)
HEAD_OUTPUTS: dict[str, str] = {h.value: f"{h.value}_output" for h in Head}
CAM_METHODS: tuple[str, ...] = tuple(m.value for m in CamMethod)
# Maps of a conv layer's activations (and gradients).
GRADCAM_METHODS: tuple[str, ...] = (CamMethod.gradcam, CamMethod.gradcam_pp, CamMethod.eigencam)
# Maps from the input side: perturbations and integrated gradients (any model).
PERTURBATION_METHODS: tuple[str, ...] = (
    CamMethod.occlusion,
    CamMethod.rise,
    CamMethod.integrated_gradients,
)
# The methods every classifier supports.
MODEL_AGNOSTIC_METHODS: tuple[str, ...] = GRADCAM_METHODS + PERTURBATION_METHODS
FOCUS_MODES: tuple[str, ...] = tuple(f.value for f in Focus)
