"""Keras/TensorFlow plumbing of the CAMs: finding layers and heads, compiling, caching.

One compiled function per (model, layer) computes every head's probabilities, the target layer's
activations and the gradients of the explained score, for a whole batch, in one forward and
backward pass (:func:`make_cam_fn`); the CAM arithmetic is NumPy, in :mod:`ml.explain.gradcam`.

The target layer may sit at the top level of the model or inside a nested sub-model (the hybrids
wrap EfficientNetB0 either way): the model's graph is re-run with a hook that keeps the target
layer's output (:func:`run_with_capture`), so no second model has to be built and nothing about
the model is changed.

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

import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

SEGMENTATION_HEAD_ALIASES = ("mask", "segmentation", "seg")

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


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


# --------------------------------------------------------------------------- running the graph


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


# --------------------------------------------------------------------------- the CAM function


class HeadCamFn:
    """The compiled CAM function of one (model, layer), bound to one head.

    Calling it with ``(images (N,S,S,C) float32, class_index (N,) int32)`` returns a dict:
    ``probabilities`` (N, K), ``class_index`` (N,), ``prob`` (N,), ``head_probabilities``
    (every head's (N, K_i), in the model's output order: the pass computes them all),
    ``activations`` (the target layer output), ``gradients`` (same shape; zeros where
    unconnected or when built without gradients) and, for segmentation heads, ``output`` (the
    (N, S, S, 1) probability map). A negative class index means "the predicted class".
    ``score_kind`` says what was differentiated.
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
        res["head_probabilities"] = [h["probabilities"] for h in out["heads"]]
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


def _capture_plan(
    model: Any, layer_name: str, specs: list[dict[str, Any]]
) -> tuple[dict[int, str], set[int]]:
    """What :func:`run_with_capture` keeps: the target layer's output, each head's logit input."""
    path = find_layer_path(model, layer_name)
    capture = {id(path[-1]): "out:activations"}
    for i, spec in enumerate(specs):
        if spec["logit_fn"] is not None:
            capture[id(spec["layer"])] = f"in:head_input{i}"
    return capture, {id(lyr) for lyr in path[:-1]}


def _segmentation_terms(out: Any, class_index: Any) -> tuple[Any, Any, Any]:
    """(probabilities (N, 2), class index, score) of a segmentation head's (N, S, S, 1) map."""
    import tensorflow as tf

    fg = tf.reduce_mean(tf.reshape(out, [tf.shape(out)[0], -1]), axis=1)
    probs = tf.stack([1.0 - fg, fg], axis=1)
    ci = tf.where(class_index < 0, tf.ones_like(class_index), tf.minimum(class_index, 1))
    return probs, ci, tf.where(ci == 1, fg, 1.0 - fg)


def _classification_terms(
    spec: dict[str, Any], probs: Any, head_input: Any, class_index: Any
) -> tuple[Any, Any, Any]:
    """(probabilities (N, K), class index, score) of a classification head: the score is the
    class log-odds where the logits are reachable (from ``head_input``), else the probability."""
    import tensorflow as tf

    logit_fn = spec["logit_fn"]
    scores = probs
    if logit_fn is not None:
        scores = tf.cast(logit_fn(head_input), tf.float32)
    if probs.shape[-1] == 1:
        # One sigmoid unit: class 1 is the unit, class 0 its complement; the logit is
        # already the log-odds of class 1.
        probs = tf.concat([1.0 - probs, probs], axis=1)
        flip = -scores if logit_fn is not None else 1.0 - scores
        scores = tf.concat([flip, scores], axis=1)
    elif logit_fn is not None:
        # Softmax logits -> each class's log-odds (see the module docstring).
        eye = tf.eye(probs.shape[-1], dtype=tf.bool)[None]
        others = tf.where(eye, -np.inf, scores[:, None, :])
        scores = scores - tf.reduce_logsumexp(others, axis=2)
    # Other heads may have fewer classes than the requested index: clamp (unused there).
    k = int(probs.shape[-1])
    predicted = tf.argmax(probs, axis=1, output_type=tf.int32)
    ci = tf.where(class_index < 0, predicted, tf.minimum(class_index, k - 1))
    return probs, ci, tf.gather(scores, ci, axis=1, batch_dims=1)


def _all_heads(
    specs: list[dict[str, Any]], outputs: list[Any], store: dict[str, Any], class_index: Any
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Per head: its result dict (probabilities, class index, prob[, output]) and its score."""
    import tensorflow as tf

    heads, scores = [], []
    for i, spec in enumerate(specs):
        out = tf.cast(outputs[i], tf.float32)
        if spec["task"] == "segmentation":
            probs, ci, score = _segmentation_terms(out, class_index)
        else:
            probs, ci, score = _classification_terms(
                spec, out, store.get(f"head_input{i}"), class_index
            )
        head = {"probabilities": probs, "class_index": ci}
        head["prob"] = tf.gather(probs, ci, axis=1, batch_dims=1)
        if spec["task"] == "segmentation":
            head["output"] = out
        heads.append(head)
        scores.append(score)
    return heads, scores


def _feature_output(acts: Any) -> Any:
    """The target layer's output, or the first of several (a Transformer block returning its
    attention weights too): the feature map / token sequence."""
    return acts[0] if isinstance(acts, (tuple, list)) else acts


def _build_cam_fn(model: Any, layer_name: str, gradients: bool) -> Callable:
    """Trace-once ``fn(images, class_index, head_index)`` serving every head (``fn.heads``)."""
    import keras
    import tensorflow as tf

    specs = _head_specs(model)
    capture, inside = _capture_plan(model, layer_name, specs)
    model_ref = weakref.ref(model)  # the cache must not keep the model alive

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
        with tf.GradientTape() as tape:
            outputs = keras.tree.flatten(
                run_with_capture(model_ref(), images, capture, inside, store)
            )
            heads, scores = _all_heads(specs, outputs, store, class_index)
            # Only the selected head's score is differentiated.
            total = tf.reduce_sum(tf.gather(tf.stack(scores), head_index))
            acts = _feature_output(store["activations"])
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
