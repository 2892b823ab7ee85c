"""Class activation maps (Grad-CAM, Grad-CAM++, Eigen-CAM) for any model, head and class.

One compiled function per (model, layer, head) computes the head's probabilities, the target
layer's activations and the gradients of the explained score with respect to them, for a whole
batch, in a single forward and backward pass. The CAM arithmetic afterwards is plain NumPy.

The target layer may sit at the top level of the model or inside a nested sub-model (the hybrids
wrap EfficientNetB0 either way): the model's graph is re-run with a hook that keeps the target
layer's output, so no second model has to be built and nothing about the model is changed.

Scores explained:
    * classification heads: the class log-odds ``log(p_c / (1 - p_c)) = z_c - logsumexp_{j != c}
      z_j``, computed from the pre-softmax logits ``z`` when the head is a softmax/sigmoid
      ``Dense`` (or a separate softmax activation). The Grad-CAM paper differentiates the raw
      logit ``z_c``, but softmax logits are only defined up to a constant shared by all classes,
      so ``z_c`` alone can fall while ``p_c`` rises (the map then shows evidence *against* the
      class, or nothing); the log-odds is shift-invariant, says what the class probability
      depends on, and unlike ``p_c`` does not saturate (``p_c`` rounds to exactly 1.0 in float32
      for a confident model, and its gradient, hence the map, to zero). Heads whose logits
      cannot be reached are explained through the class probability.
    * segmentation heads ((S, S, 1) sigmoid): the mean foreground probability over the image
      (class 1), or the mean background probability (class 0).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ml.vocab import GRADCAM_METHODS

log = logging.getLogger(__name__)

METHODS = GRADCAM_METHODS
SEGMENTATION_HEAD_ALIASES = ("mask", "segmentation", "seg")
_EPS = 1e-12

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


@dataclass
class CamResult:
    """Everything one batched CAM computation produces.

    Attributes:
        heatmaps: (N, H, W) float32 in [0, 1], image-sized.
        class_index: (N,) int, the class explained (1 = foreground for segmentation heads).
        prob: (N,) float, the explained class probability (mean foreground for segmenters).
        probabilities: (N, K) head probabilities ((N, 2) [background, foreground] for segmenters).
        head: output name explained.
        layer: target layer name.
        method: CAM method.
        score_kind: "log_odds", "probability" or "mean_foreground_probability".
        task: "classification" or "segmentation".
        output: the head's raw output ((N, S, S, 1) probability map for segmenters).
    """

    heatmaps: np.ndarray
    class_index: np.ndarray
    prob: np.ndarray
    probabilities: np.ndarray
    head: str
    layer: str
    method: str
    score_kind: str
    task: str
    output: np.ndarray | None = None


# --------------------------------------------------------------------------- model plumbing


def _graph_of(model: Any) -> Any | None:
    """The functional graph that runs ``model``: itself, or a built Sequential's inner graph."""
    inner = getattr(model, "_functional", None)
    if inner is not None and hasattr(inner, "_run_through_graph"):
        return inner
    if hasattr(model, "_run_through_graph") and hasattr(model, "_nodes_by_depth"):
        return model
    return None


def _sublayers(model: Any) -> list[Any]:
    return list(getattr(model, "layers", []) or [])


def find_layer_path(model: Any, name: str) -> list[Any]:
    """Find a layer by name, looking inside nested sub-models too.

    Args:
        model: a Keras model.
        name: the layer name (``top_conv``), or a path through nested sub-models
            (``efficientnetb0/top_conv``).

    Returns:
        The chain of layers from the outermost sub-model down to the layer itself.

    Raises:
        ValueError: no such layer.
    """
    if "/" in name:
        chain: list[Any] = []
        current = model
        for part in name.split("/"):
            found = next((lyr for lyr in _sublayers(current) if lyr.name == part), None)
            if found is None:
                raise ValueError(f"no layer {part!r} in {current.name!r} (path {name!r})")
            chain.append(found)
            current = found
        return chain
    # Breadth first: a top-level layer wins over a same-named one inside a sub-model.
    queue: list[tuple[Any, list[Any]]] = [(model, [])]
    while queue:
        current, prefix = queue.pop(0)
        for lyr in _sublayers(current):
            if lyr.name == name:
                return [*prefix, lyr]
        for lyr in _sublayers(current):
            if _sublayers(lyr):
                queue.append((lyr, [*prefix, lyr]))
    raise ValueError(f"model {model.name!r} has no layer named {name!r} (nested models searched)")


def find_last_conv_layer(model: Any) -> str:
    """Name of the last layer with a 4D output (a conv feature map), searching nested models.

    Used when no manifest names the Grad-CAM layer. The path syntax ``sub/layer`` is returned
    for layers inside nested models.
    """

    # A segmenter's output layer is itself 4D; its one sigmoid channel explains nothing.
    outputs = {id(t._keras_history[0]) for t in model.outputs}

    def walk(m: Any, prefix: str) -> str | None:
        for lyr in reversed(_sublayers(m)):
            if id(lyr) in outputs:
                continue
            if _sublayers(lyr):
                inner = walk(lyr, f"{prefix}{lyr.name}/")
                if inner:
                    return inner
                continue
            try:
                shape = lyr.output.shape
            except (AttributeError, ValueError):
                continue
            if len(shape) == 4 and "input" not in type(lyr).__name__.lower():
                return f"{prefix}{lyr.name}"
        return None

    found = walk(model, "")
    if not found:
        raise ValueError(f"model {model.name!r} has no layer with a 4D output to explain")
    return found


def output_names(model: Any) -> list[str]:
    """The model's output names in ``model.outputs`` order."""
    names = getattr(model, "output_names", None)
    if names:
        return list(names)
    return [t._keras_history[0].name for t in model.outputs]


def resolve_head(model: Any, head: str | None) -> tuple[int, str, str]:
    """Map a head name or alias to (output index, output name, task).

    ``binary``/``stage`` mean ``binary_output``/``stage_output``; ``None`` or ``mask`` pick the only
    output of a single-output model. The task is "segmentation" for an image-shaped output.
    """
    names = output_names(model)
    if head is None or (head in SEGMENTATION_HEAD_ALIASES and head not in names):
        if head is None or len(names) == 1:
            idx = 0
        else:
            raise ValueError(f"head {head!r} is ambiguous: model outputs are {names}")
    elif head in names:
        idx = names.index(head)
    elif f"{head}_output" in names:
        idx = names.index(f"{head}_output")
    else:
        raise ValueError(f"model has no head {head!r}; its outputs are {names}")
    rank = len(model.outputs[idx].shape)
    task = "segmentation" if rank == 4 else "classification"
    return idx, names[idx], task


def _head_layer(model: Any, idx: int) -> Any:
    return model.outputs[idx]._keras_history[0]


def _logit_fn(layer: Any) -> Callable[[Any], Any] | None:
    """How to compute pre-activation scores from the head layer's input, if we can."""
    import keras

    act_name = getattr(getattr(layer, "activation", None), "__name__", "")
    if isinstance(layer, keras.layers.Dense) and act_name in ("softmax", "sigmoid"):

        def dense_logits(x: Any) -> Any:
            kernel = keras.ops.cast(layer.kernel, x.dtype)
            z = keras.ops.matmul(x, kernel)
            if layer.use_bias:
                z = z + keras.ops.cast(layer.bias, x.dtype)
            return z

        return dense_logits
    if isinstance(layer, keras.layers.Softmax) or (
        isinstance(layer, keras.layers.Activation) and act_name in ("softmax", "sigmoid")
    ):
        return lambda x: x
    return None


def run_with_capture(
    model: Any, inputs: Any, capture: dict[int, str], inside: set[int], store: dict[str, Any]
) -> Any:
    """Run ``model`` in inference mode, keeping some layers' inputs or outputs.

    Args:
        model: a functional (or built Sequential) Keras model.
        inputs: the input tensor(s).
        capture: ``id(layer) -> "out:<key>" | "in:<key>"``: keep that layer's output or first input
            under ``store[key]``.
        inside: ids of nested sub-models that contain a captured layer (they are run through
            their graph too instead of as one opaque call).
        store: filled with the captured tensors.

    Returns:
        The model outputs, structured as the model returns them.
    """
    graph = _graph_of(model)
    if graph is None:
        raise ValueError(
            f"model {getattr(model, 'name', model)!r} is not functional; cannot reach its layers"
        )

    def operation_fn(op: Any) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if "training" in getattr(op, "_call_context_args", ()):
                kwargs["training"] = False
            what = capture.get(id(op))
            if what and what.startswith("in:"):
                store[what[3:]] = args[0]
            if id(op) in inside:
                out = run_with_capture(op, args[0], capture, inside, store)
            else:
                out = op(*args, **kwargs)
            if what and what.startswith("out:"):
                store[what[4:]] = out
            return out

        return call

    return graph._run_through_graph(inputs, operation_fn=operation_fn)


def _signature(model: Any) -> Any:
    import tensorflow as tf

    shape = list(model.inputs[0].shape)
    shape[0] = None
    return tf.TensorSpec(shape, tf.float32, name="images")


def _cached(model: Any, key: tuple, build: Callable[[], Any]) -> Any:
    with _CACHE_LOCK:
        per_model = _CACHE.get(model)
        if per_model is None:
            per_model = {}
            _CACHE[model] = per_model
        fn = per_model.get(key)
        if fn is None:
            fn = build()
            per_model[key] = fn
        return fn


class HeadCamFn:
    """The compiled CAM function of one (model, layer), bound to one head.

    Calling it with ``(images (N,S,S,C) float32, class_index (N,) int32)`` returns a dict:
    ``probabilities`` (N, K), ``class_index`` (N,), ``prob`` (N,), ``activations`` (the target
    layer output), ``gradients`` (same shape; zeros where unconnected or when built without
    gradients) and, for segmentation heads, ``output`` (the (N, S, S, 1) probability map). A
    negative class index means "the predicted class". ``score_kind`` says what was
    differentiated.
    """

    def __init__(self, shared: Any, index: int, head: str, task: str, n_classes: int, kind: str):
        self.shared = shared
        self.index = index
        self.head = head
        self.task = task
        self.n_classes = n_classes
        self.score_kind = kind

    def __call__(self, images: Any, class_index: Any) -> dict[str, Any]:
        ci = np.asarray(class_index, dtype=np.int32)
        if (ci >= self.n_classes).any():
            raise ValueError(
                f"class index {int(ci.max())} out of range for {self.head} "
                f"({self.n_classes} classes)"
            )
        out = self.shared(images, ci, np.int32(self.index))
        res = dict(out["heads"][self.index])
        res["activations"] = out["activations"]
        res["gradients"] = out["gradients"]
        return res


def make_cam_fn(
    model: Any, layer_name: str, output_name: str | None, gradients: bool = True
) -> HeadCamFn:
    """Compiled CAM function for one head (see :class:`HeadCamFn`), cached.

    One ``tf.function`` (fixed input signature, batch of any size) is traced per (model, layer,
    gradients) and serves every head of the model: all heads are computed in the forward pass
    anyway, and the explained head is a tensor argument selecting which score is differentiated,
    so a dual-head classifier costs one trace, not two. The bound per-head wrapper is cached per
    (model, layer, head).
    """
    idx, head, task = resolve_head(model, output_name)
    shared = _cached(
        model,
        ("cam", layer_name, bool(gradients)),
        lambda: _build_cam_fn(model, layer_name, gradients),
    )
    spec = shared.heads[idx]
    return _cached(
        model,
        ("cam_head", layer_name, head, bool(gradients)),
        lambda: HeadCamFn(shared, idx, head, task, spec["n_classes"], spec["score_kind"]),
    )


def _head_specs(model: Any) -> list[dict[str, Any]]:
    """Per output: task, class count, and how to reach its logits."""
    specs = []
    for i, tensor in enumerate(model.outputs):
        task = "segmentation" if len(tensor.shape) == 4 else "classification"
        layer = _head_layer(model, i)
        logit_fn = _logit_fn(layer) if task == "classification" else None
        if task == "segmentation":
            kind, n_classes = "mean_foreground_probability", 2
        else:
            kind = "log_odds" if logit_fn is not None else "probability"
            n_classes = max(2, int(tensor.shape[-1]))
        specs.append(
            {"task": task, "layer": layer, "logit_fn": logit_fn, "score_kind": kind,
             "n_classes": n_classes}
        )  # fmt: skip
    return specs


def _build_cam_fn(model: Any, layer_name: str, gradients: bool) -> Callable:
    import keras
    import tensorflow as tf

    path = find_layer_path(model, layer_name)
    specs = _head_specs(model)
    capture = {id(path[-1]): "out:activations"}
    for i, spec in enumerate(specs):
        if spec["logit_fn"] is not None:
            capture[id(spec["layer"])] = f"in:head_input{i}"
    inside = {id(lyr) for lyr in path[:-1]}
    model_ref = weakref.ref(model)  # the cache must not keep the model alive

    def head_terms(i: int, out: Any, store: dict[str, Any], class_index: Any):
        spec = specs[i]
        if spec["task"] == "segmentation":
            fg = tf.reduce_mean(tf.reshape(out, [tf.shape(out)[0], -1]), axis=1)
            probs = tf.stack([1.0 - fg, fg], axis=1)
            ci = tf.where(class_index < 0, tf.ones_like(class_index), tf.minimum(class_index, 1))
            return probs, ci, tf.where(ci == 1, fg, 1.0 - fg)
        probs = out
        scores = probs
        if spec["logit_fn"] is not None:
            scores = tf.cast(spec["logit_fn"](store[f"head_input{i}"]), tf.float32)
        if probs.shape[-1] == 1:
            # One sigmoid unit: class 1 is the unit, class 0 its complement; the logit is
            # already the log-odds of class 1.
            probs = tf.concat([1.0 - probs, probs], axis=1)
            flip = -scores if spec["logit_fn"] is not None else 1.0 - scores
            scores = tf.concat([flip, scores], axis=1)
        elif spec["logit_fn"] is not None:
            # Softmax logits -> each class's log-odds (see the module docstring).
            eye = tf.eye(probs.shape[-1], dtype=tf.bool)[None]
            others = tf.where(eye, -np.inf, scores[:, None, :])
            scores = scores - tf.reduce_logsumexp(others, axis=2)
        # Other heads may have fewer classes than the requested index: clamp (unused there).
        k = int(probs.shape[-1])
        predicted = tf.argmax(probs, axis=1, output_type=tf.int32)
        ci = tf.where(class_index < 0, predicted, tf.minimum(class_index, k - 1))
        return probs, ci, tf.gather(scores, ci, axis=1, batch_dims=1)

    @tf.function(
        input_signature=[
            _signature(model),
            tf.TensorSpec([None], tf.int32, name="class_index"),
            tf.TensorSpec([], tf.int32, name="head_index"),
        ],
        reduce_retracing=True,
    )
    def fn(images: Any, class_index: Any, head_index: Any) -> dict[str, Any]:
        store: dict[str, Any] = {}
        heads = []
        scores = []
        with tf.GradientTape() as tape:
            outputs = keras.tree.flatten(
                run_with_capture(model_ref(), images, capture, inside, store)
            )
            for i in range(len(specs)):
                out = tf.cast(outputs[i], tf.float32)
                probs, ci, score = head_terms(i, out, store, class_index)
                head = {
                    "probabilities": probs,
                    "class_index": ci,
                    "prob": tf.gather(probs, ci, axis=1, batch_dims=1),
                }
                if specs[i]["task"] == "segmentation":
                    head["output"] = out
                heads.append(head)
                scores.append(score)
            # Only the selected head's score is differentiated.
            total = tf.reduce_sum(tf.gather(tf.stack(scores), head_index))
            acts = store["activations"]
            if isinstance(acts, (tuple, list)):
                # A layer with several outputs (a Transformer block returning its attention
                # weights too): the first is the feature map / token sequence.
                acts = acts[0]
        if gradients:
            grads = tape.gradient(total, acts, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        else:
            grads = tf.zeros_like(acts)
        return {
            "heads": heads,
            "activations": tf.cast(acts, tf.float32),
            "gradients": tf.cast(grads, tf.float32),
        }

    fn.heads = specs
    return fn


# --------------------------------------------------------------------------- CAM arithmetic


def _as_grid(arr: np.ndarray) -> np.ndarray:
    """(N, h, w, C) feature maps; token sequences (N, T, D) become a square grid (CLS dropped)."""
    if arr.ndim == 4:
        return arr
    if arr.ndim == 3:
        n, t, d = arr.shape
        for drop in (0, 1):
            g = int(round(np.sqrt(t - drop)))
            if g * g == t - drop:
                return arr[:, drop:, :].reshape(n, g, g, d)
    raise ValueError(f"cannot map target layer output of shape {arr.shape} onto the image")


def _gradcam_weights(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    return grads.mean(axis=(1, 2))


def _gradcampp_weights(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    # Closed form of Chattopadhay et al. for an exponential score: higher derivatives are
    # powers of the first, so one backward pass is enough.
    g2 = grads**2
    g3 = g2 * grads
    sum_acts = acts.sum(axis=(1, 2), keepdims=True)
    denom = 2.0 * g2 + sum_acts * g3
    alpha = np.where(np.abs(denom) > _EPS, g2 / np.where(np.abs(denom) > _EPS, denom, 1.0), 0.0)
    return (alpha * np.maximum(grads, 0.0)).sum(axis=(1, 2))


def _eigencam(acts: np.ndarray) -> np.ndarray:
    """First principal component of the (h*w, C) activations, sign set by activation energy."""
    n, h, w, c = acts.shape
    a = acts.reshape(n, h * w, c).astype(np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    if h * w <= c:
        gram = a @ a.transpose(0, 2, 1)
        vals, vecs = np.linalg.eigh(gram)
        proj = vecs[:, :, -1] * np.sqrt(np.maximum(vals[:, -1:], 0.0))
    else:
        cov = a.transpose(0, 2, 1) @ a
        _, vecs = np.linalg.eigh(cov)
        proj = np.einsum("npc,nc->np", a, vecs[:, :, -1])
    # An eigenvector's sign is arbitrary: point it towards where the layer is most active.
    energy = acts.reshape(n, h * w, c).sum(axis=2)
    energy = energy - energy.mean(axis=1, keepdims=True)
    sign = np.where((proj * energy).sum(axis=1) < 0, -1.0, 1.0)
    return (proj * sign[:, None]).reshape(n, h, w)


def normalize_maps(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """ReLU, resize bilinearly to ``size`` (H, W), divide by the maximum: (N, H, W) in [0, 1].

    Resizing before dividing (the design divides first) keeps the peak of the image-sized map
    at exactly 1: bilinear resizing with half-pixel centres shaves the coarse peak. A map that
    is zero (or not finite) everywhere, e.g. from all-zero gradients on a blank image, becomes
    an all-zero map rather than NaN.
    """
    cams = np.nan_to_num(np.asarray(cams, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    cams = np.maximum(cams, 0.0)
    out = np.zeros((cams.shape[0], *size), dtype=np.float32)
    for i, cam in enumerate(cams):
        if cam.size == 0 or float(cam.max()) <= _EPS:
            continue
        cam = (cam / cam.max()).astype(np.float32)  # scale first so float32 cannot overflow
        if cam.shape != tuple(size):
            cam = cv2.resize(cam, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        cam = np.maximum(cam, 0.0)
        peak = float(cam.max())
        if peak > _EPS:
            out[i] = np.clip(cam / peak, 0.0, 1.0)
    return out


def cam_from_arrays(acts: np.ndarray, grads: np.ndarray | None, method: str) -> np.ndarray:
    """Raw (N, h, w) CAMs (before ReLU/normalisation) from activations and gradients."""
    acts = _as_grid(np.nan_to_num(np.asarray(acts, dtype=np.float64)))
    if method == "eigencam":
        return _eigencam(acts)
    if grads is None:
        raise ValueError(f"{method} needs gradients")
    grads = _as_grid(np.nan_to_num(np.asarray(grads, dtype=np.float64)))
    if method == "gradcam":
        weights = _gradcam_weights(acts, grads)
    elif method == "gradcam++":
        weights = _gradcampp_weights(acts, grads)
    else:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {METHODS}")
    return np.einsum("nhwc,nc->nhw", acts, weights)


def _as_batch(images: np.ndarray) -> np.ndarray:
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None, ..., None]
    elif arr.ndim == 3:
        arr = arr[..., None] if arr.shape[-1] not in (1, 3) else arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected images (N, S, S, 1), got shape {np.shape(images)}")
    return arr


def compute_cam(
    model: Any,
    images: np.ndarray,
    layer: str | None,
    head: str | None = "binary_output",
    class_index: int | np.ndarray | None = None,
    method: str = "gradcam",
) -> CamResult:
    """Batched CAMs with everything that came out of the pass (see :class:`CamResult`).

    Args:
        model: a Keras model (classifier with named heads, or a segmenter).
        images: (N, S, S, 1) float32 in [0, 1] (a single (S, S) image is accepted).
        layer: target layer name (the manifest's ``gradcam_layer``); ``None`` = last 4D layer.
        head: output to explain (``binary_output``, ``stage_output``, aliases, or ``mask``).
        class_index: class to explain: one int for all, one per image, or ``None`` = predicted.
        method: ``gradcam``, ``gradcam++`` or ``eigencam`` (gradient-free, class-agnostic).
    """
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {METHODS}")
    batch = _as_batch(images)
    layer = layer or find_last_conv_layer(model)
    _, head_name, task = resolve_head(model, head)
    fn = make_cam_fn(model, layer, head_name, gradients=method != "eigencam")
    n = batch.shape[0]
    if class_index is None:
        ci = np.full((n,), -1, dtype=np.int32)
    else:
        ci = np.broadcast_to(np.asarray(class_index, dtype=np.int32), (n,)).copy()
    out = fn(batch, ci)
    acts = out["activations"].numpy()
    grads = out["gradients"].numpy() if method != "eigencam" else None
    raw = cam_from_arrays(acts, grads, method)
    heatmaps = normalize_maps(raw, batch.shape[1:3])
    return CamResult(
        heatmaps=heatmaps,
        class_index=out["class_index"].numpy().astype(np.int64),
        prob=out["prob"].numpy().astype(np.float64),
        probabilities=out["probabilities"].numpy().astype(np.float64),
        head=head_name,
        layer=layer,
        method=method,
        score_kind=fn.score_kind,
        task=task,
        output=out["output"].numpy() if task == "segmentation" else None,
    )


def gradcam(
    model: Any,
    images: np.ndarray,
    layer: str | None,
    head: str | None = "binary_output",
    class_index: int | np.ndarray | None = None,
    method: str = "gradcam",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heatmaps for a batch in one forward+backward pass.

    Returns:
        (heatmaps (N, S, S) float32 in [0, 1], class_index (N,), prob (N,) of that class).
    """
    res = compute_cam(model, images, layer, head, class_index, method)
    return res.heatmaps, res.class_index, res.prob
