"""Inference runner: warm compiled model functions, fed by per-model micro-batchers.

Models never run on the event loop. Each model gets one worker thread; concurrent requests for
the same model and operation are gathered into one batch (up to ``max_batch`` or
``max_wait_ms``) and run as a single call of a compiled function with a fixed input signature,
so TensorFlow traces it once at warm-up and never again. Each batcher's queue is bounded: when
it is full the request is refused with 503 and ``Retry-After`` instead of piling up in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from backend.core.errors import ModelUnavailable, ServiceBusy
from backend.inference.batcher import MicroBatcher, ModelExecutor, QueueFull
from backend.inference.registry import ModelEntry, ModelRegistry
from ml.calibration import apply_temperature
from ml.vocab import HEAD_OUTPUTS

log = logging.getLogger(__name__)
T = TypeVar("T")
# Perturbed-image stacks gathered into one probe call (each holds dozens of images).
PROBE_REQUESTS_PER_CALL = 4


@dataclass
class Classification:
    p_status: np.ndarray  # (2,)
    p_stage: np.ndarray  # (4,)


@dataclass
class CamOutput:
    """One image's class activation map from a batched CAM call."""

    heatmap: np.ndarray  # (S, S) float32 in [0, 1]
    class_index: int
    prob: float
    probabilities: np.ndarray
    # Every head's raw probabilities (model output order) when the pass computed them all.
    heads: tuple[np.ndarray, ...] | None = None


def _calibrated(entry: ModelEntry, p_status: Any, p_stage: Any) -> tuple[np.ndarray, np.ndarray]:
    """Reported probabilities are temperature-scaled (1 = as the model gives them)."""
    return (
        apply_temperature(p_status, entry.manifest.temperature("binary")),
        apply_temperature(p_stage, entry.manifest.temperature("stage")),
    )


def classification_of(entry: ModelEntry, cam: CamOutput) -> Classification | None:
    """The classification that a CAM's own pass computed, calibrated as :meth:`classify` does.

    A Grad-CAM-family pass runs the whole model, so it has both heads' probabilities: an
    analysis that explains a classifier need not run it a second time to classify. None when
    the pass did not keep them (attention rollout, input-side methods) or the heads are not the
    status and stage softmaxes the forward pass reports.
    """
    heads = cam.heads
    outputs = entry.model.outputs
    if heads is None or len(heads) != 2 or len(outputs) != 2:
        return None
    widths = (len(entry.status_names), len(entry.stage_names))
    if tuple(int(o.shape[-1]) for o in outputs) != widths:
        return None
    if tuple(h.shape for h in heads) != ((widths[0],), (widths[1],)):
        return None
    p_status, p_stage = _calibrated(entry, heads[0], heads[1])
    return Classification(p_status, p_stage)


@dataclass(frozen=True)
class CamRequest:
    image: np.ndarray  # (S, S) float32
    class_index: int | None


def _tf_backend() -> bool:
    import keras

    return keras.backend.backend() == "tensorflow"


def configure_threads(intra_op: int) -> int:
    """Ask TensorFlow for ``intra_op`` threads per operation (0: leave its default); returns
    the count in effect. Only possible before TensorFlow starts its runtime: a process that
    already ran it keeps its count (logged)."""
    if not _tf_backend():
        return 0
    import tensorflow as tf

    threading = tf.config.threading
    if intra_op > 0 and threading.get_intra_op_parallelism_threads() != intra_op:
        try:
            threading.set_intra_op_parallelism_threads(intra_op)
        except RuntimeError:
            log.warning(
                "TensorFlow already runs with %s threads per operation; %d takes effect in a "
                "fresh process",
                threading.get_intra_op_parallelism_threads() or "its default",
                intra_op,
            )
    return int(threading.get_intra_op_parallelism_threads())


def compile_forward(model: Any, size: int) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A forward pass compiled once for (None, size, size, 1) float32 inputs.

    Returns a function from a NumPy batch to the model's outputs as NumPy arrays, in
    ``model.outputs`` order.
    """
    names = list(getattr(model, "output_names", []) or [])

    def _ordered(out: Any) -> list[Any]:
        if isinstance(out, dict):
            return [out[n] for n in names] if names else list(out.values())
        if isinstance(out, list | tuple):
            return list(out)
        return [out]

    if _tf_backend():
        import tensorflow as tf

        @tf.function(
            input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32)],
            reduce_retracing=True,
        )
        def _fwd(x: Any) -> list[Any]:
            return _ordered(model(x, training=False))

        def run(batch: np.ndarray) -> list[np.ndarray]:
            return [np.asarray(o) for o in _fwd(tf.constant(batch, dtype=tf.float32))]

        return run

    import keras

    def run_eager(batch: np.ndarray) -> list[np.ndarray]:
        return [keras.ops.convert_to_numpy(o) for o in _ordered(model(batch, training=False))]

    return run_eager


class InferenceRunner:
    """Batched, thread-offloaded access to the registry's models."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        max_batch: int = 16,
        max_wait_ms: float = 4.0,
        queue_size: int = 64,
        retry_after: int = 1,
        faithfulness_steps: int = 16,
    ) -> None:
        self.registry = registry
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.queue_size = queue_size
        self.retry_after = retry_after
        self.faithfulness_steps = faithfulness_steps
        self._executors: dict[str, ModelExecutor] = {}
        self._forward: dict[str, Callable[[np.ndarray], list[np.ndarray]]] = {}
        self._batchers: dict[tuple[Any, ...], MicroBatcher[Any, Any]] = {}
        self.warm_seconds = 0.0  # summed over warm() calls (concurrent ones overlap)
        self._direct_calls = 0
        self._direct_pending: dict[str, int] = {}
        self._direct_rejected = 0
        self.intra_op_threads = 0  # TensorFlow's threads per operation (0: its default)
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        self._assist_pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ plumbing

    def executor(self, entry: ModelEntry) -> ModelExecutor:
        ex = self._executors.get(entry.key)
        if ex is None:
            ex = ModelExecutor(f"model-{entry.key}")
            self._executors[entry.key] = ex
        return ex

    def forward(self, entry: ModelEntry) -> Callable[[np.ndarray], list[np.ndarray]]:
        fn = self._forward.get(entry.key)
        if fn is None:
            fn = compile_forward(entry.model, entry.input_size)
            self._forward[entry.key] = fn
        return fn

    def _batcher(
        self, key: tuple[Any, ...], entry: ModelEntry, fn: Callable[[Sequence[Any]], Sequence[Any]]
    ) -> MicroBatcher[Any, Any]:
        b = self._batchers.get(key)
        if b is None:
            b = MicroBatcher(
                ":".join(str(k) for k in key),
                fn,
                self.executor(entry),
                max_batch=self.max_batch,
                max_wait_ms=self.max_wait_ms,
                queue_size=self.queue_size,
            )
            self._batchers[key] = b
        return b

    async def _submit(self, batcher: MicroBatcher[Any, T], item: Any) -> T:
        try:
            return await batcher.submit(item)
        except QueueFull:
            raise ServiceBusy(
                "The server is busy with other analyses; retry in a moment.",
                retry_after=self.retry_after,
            ) from None

    async def call(self, entry: ModelEntry, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run ``fn`` on the model's worker thread (per-image work that is not batched).

        Bounded like the batchers: at most ``queue_size`` such calls per model may be waiting
        or running; one more is refused with 503 + ``Retry-After`` rather than queued without
        limit in the executor (faithfulness scores cost dozens of forward passes each).
        """
        await self.ensure_ready(entry)
        key = entry.key
        if self._direct_pending.get(key, 0) >= self.queue_size:
            self._direct_rejected += 1
            raise ServiceBusy(
                "The server is busy with other analyses; retry in a moment.",
                retry_after=self.retry_after,
            )
        self._direct_pending[key] = self._direct_pending.get(key, 0) + 1
        self._direct_calls += 1
        loop = asyncio.get_running_loop()

        def release() -> None:
            self._direct_pending[key] -= 1

        def on_done(_: object) -> None:
            # Released when the thread is done, not when the awaiting request is cancelled:
            # a cancelled call still occupies the model thread until it finishes.
            with contextlib.suppress(RuntimeError):  # a closed loop has nothing to account for
                loop.call_soon_threadsafe(release)

        future = self.executor(entry).submit(fn, *args, **kw)
        future.add_done_callback(on_done)
        return await asyncio.wrap_future(future)

    # ------------------------------------------------------------------ operations

    async def classify(self, entry: ModelEntry, image: np.ndarray) -> Classification:
        """AS status and stage probabilities for one preprocessed (S, S) image."""
        await self.ensure_ready(entry)
        forward = self.forward(entry)

        def run(images: Sequence[np.ndarray]) -> list[Classification]:
            outs = self.spread_outputs(
                forward, np.stack(images)[..., None].astype(np.float32, copy=False)
            )
            p_status, p_stage = _calibrated(entry, outs[0], outs[1])
            return [Classification(p_status[i], p_stage[i]) for i in range(len(images))]

        return await self._submit(self._batcher((entry.key, "classify"), entry, run), image)

    async def segment(self, entry: ModelEntry, image: np.ndarray) -> np.ndarray:
        """Foreground probability map (S, S) for one preprocessed (S, S) image."""
        await self.ensure_ready(entry)
        forward = self.forward(entry)

        def run(images: Sequence[np.ndarray]) -> list[np.ndarray]:
            stack = np.stack(images)[..., None].astype(np.float32, copy=False)
            prob = self.spread_outputs(forward, stack)[0]
            prob = prob.reshape(len(images), prob.shape[1], prob.shape[2])
            return [prob[i] for i in range(len(images))]

        return await self._submit(self._batcher((entry.key, "segment"), entry, run), image)

    async def cam(
        self,
        entry: ModelEntry,
        image: np.ndarray,
        *,
        head: str,
        method: str,
        class_index: int | None = None,
    ) -> CamOutput:
        """A class activation map for one image; concurrent requests share one batched pass."""
        await self.ensure_ready(entry)
        from ml.explain.gradcam import compute_cam

        layer = entry.gradcam_layer

        def run(requests: Sequence[CamRequest]) -> list[CamOutput]:
            images = np.stack([r.image for r in requests])[..., None].astype(np.float32)
            # -1 asks for the predicted class of that image, so mixed requests share one pass.
            wanted = np.asarray(
                [-1 if r.class_index is None else r.class_index for r in requests], np.int32
            )
            if method == "attention":
                return _rollout(entry, images, head, wanted)
            res = compute_cam(entry.model, images, layer, head, wanted, method, self.spread)
            return [
                CamOutput(
                    res.heatmaps[i],
                    int(res.class_index[i]),
                    float(res.prob[i]),
                    res.probabilities[i],
                    None
                    if res.head_probabilities is None
                    else tuple(h[i] for h in res.head_probabilities),
                )
                for i in range(len(requests))
            ]

        key = (entry.key, "cam", head, method)
        return await self._submit(self._batcher(key, entry, run), CamRequest(image, class_index))

    async def probe(self, entry: ModelEntry, images: np.ndarray, *, head: str) -> np.ndarray:
        """Head probabilities (n, K) of a stack of perturbed images (n, S, S, 1).

        The images of concurrent requests (e.g. the deletion/insertion curves of several
        explanations) share model calls: one batcher call runs every waiting stack, in chunks
        of the faithfulness chunk size, and each caller gets its own rows back.
        """
        from ml.explain.faithfulness import predict_probabilities, probe_batch_size

        await self.ensure_ready(entry)
        chunk = probe_batch_size(entry.manifest.flops)

        def run(stacks: Sequence[np.ndarray]) -> list[np.ndarray]:
            sizes = [len(s) for s in stacks]
            probs = self.spread(
                lambda part: predict_probabilities(entry.model, part, head, chunk),
                np.concatenate(stacks),
            )
            return np.split(probs, np.cumsum(sizes)[:-1])

        key = (entry.key, "probe", head)
        batcher = self._batchers.get(key)
        if batcher is None:
            # A few requests per call: each brings dozens of images.
            batcher = self._batcher(key, entry, run)
            batcher.max_batch = min(batcher.max_batch, PROBE_REQUESTS_PER_CALL)
        return await self._submit(batcher, np.asarray(images, dtype=np.float32))

    def spread(self, fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
        """``fn(images)``, its rows computed in shares at once, one per core, when TensorFlow
        runs one thread per operation (else its operations use the cores already; and at
        least 2 images a share). The calling thread (the model's) takes the first share.
        Used for perturbed images (scores, occlusion, RISE); see :meth:`spread_outputs`."""
        return self.spread_outputs(lambda part: [fn(part)], images)[0]

    def spread_outputs(
        self, fn: Callable[[np.ndarray], Sequence[np.ndarray]], images: np.ndarray
    ) -> list[np.ndarray]:
        """:meth:`spread` for a model with several outputs (a list of arrays, one row per
        image each): a batch of a study's slices, or of concurrent requests, runs on every core
        instead of one (8 slices through the lite U-Net: 84 ms against 160 here)."""
        parts = self._shares(len(images))
        if parts == 1:
            return list(fn(images))
        pieces = np.array_split(images, parts)
        helpers = [self._assist().submit(fn, p) for p in pieces[1:]]
        first = fn(pieces[0])
        outs = [first, *(h.result() for h in helpers)]
        return [np.concatenate(per_output) for per_output in zip(*outs, strict=True)]

    def _shares(self, n: int) -> int:
        """How many shares :meth:`spread` cuts ``n`` images into."""
        if self.intra_op_threads == 1 and self.cores > 1:
            return max(1, min(self.cores, n // 2))
        return 1

    def _assist(self) -> ThreadPoolExecutor:
        """The ``cores - 1`` threads, shared by every model, that run a call's other shares
        beside the model's own thread."""
        if self._assist_pool is None:
            self._assist_pool = ThreadPoolExecutor(
                max_workers=max(1, self.cores - 1), thread_name_prefix="model-share"
            )
        return self._assist_pool

    # ------------------------------------------------------------------ lifecycle

    def _warm_forward(self, entry: ModelEntry) -> None:
        t0 = time.perf_counter()
        dummy = np.zeros((1, entry.input_size, entry.input_size, 1), np.float32)
        self.forward(entry)(dummy)
        log.info("warmed %s in %.2fs", entry.key, time.perf_counter() - t0)

    def _warm_explanations(self, entry: ModelEntry) -> None:
        """Trace every explanation path of a classifier, both heads: the Grad-CAM (with and
        without gradients), input-gradient, attention and probe functions, so no request pays
        for a trace."""
        if entry.task != "classification" or not entry.gradcam_layer:
            return
        t0 = time.perf_counter()
        try:
            from ml.explain.faithfulness import predict_probabilities
            from ml.explain.gradcam import compute_cam
            from ml.explain.input_gradients import make_gradient_fn

            dummy = np.zeros((1, entry.input_size, entry.input_size, 1), np.float32)
            for head in HEAD_OUTPUTS.values():
                for method in ("gradcam", "eigencam"):
                    compute_cam(entry.model, dummy, entry.gradcam_layer, head, None, method)
                make_gradient_fn(entry.model, head)(dummy, 0)
                predict_probabilities(entry.model, dummy, head)
            if entry.attention_layers:
                _rollout(entry, dummy, HEAD_OUTPUTS["binary"], np.asarray([-1], np.int32))
            from ml.models import spec

            if spec(entry.architecture).rule_features:
                from ml.explain.features import model_severity

                model_severity(entry.model, dummy[0, ..., 0])
        except Exception:  # noqa: BLE001 - explanations then trace on first use instead
            log.warning("could not warm explanations for %s", entry.key, exc_info=True)
        log.info("warmed explanations of %s in %.2fs", entry.key, time.perf_counter() - t0)

    def warm_entry(self, entry: ModelEntry) -> None:
        """Trace everything a request to ``entry`` can run (call on the model's own thread)."""
        self._warm_forward(entry)
        self._warm_explanations(entry)

    async def ensure_ready(self, entry: ModelEntry) -> None:
        """Wait until ``entry``'s model is loaded and warm (503 if it could not be loaded).

        A request for a model still loading in the background waits for that one copy rather
        than building or tracing its own.
        """
        if entry.loaded.done() and entry.loaded.exception() is None:
            return
        try:
            await asyncio.wrap_future(entry.loaded)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise ModelUnavailable(
                f"Model {entry.key!r} could not be loaded on this server: {exc}"
            ) from exc

    async def warm(
        self, entries: list[ModelEntry] | None = None, *, explanations: bool = True
    ) -> None:
        """Warm models (default: every loaded one), each on its own thread, side by side, and
        mark each entry ready when it is warm. With ``explanations`` every explanation path is
        traced too before the entry is marked ready."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        todo = [e for e in (entries or list(self.registry.models.values())) if e.model is not None]
        work = self.warm_entry if explanations else self._warm_forward
        await asyncio.gather(*(loop.run_in_executor(self.executor(e), work, e) for e in todo))
        for e in todo:
            if not e.loaded.done():
                e.loaded.set_result(True)
        self.warm_seconds += time.perf_counter() - started

    def stats(self) -> dict[str, Any]:
        """Counters: requests accepted and model calls made, overall and per batcher."""
        per = {b.name: b.as_dict() for b in self._batchers.values()}
        return {
            "requests": sum(b.stats.requests for b in self._batchers.values()),
            "model_calls": sum(b.stats.calls for b in self._batchers.values()),
            "queued": sum(b.queued for b in self._batchers.values()),
            "rejected": sum(b.stats.rejected for b in self._batchers.values()),
            "direct_calls": self._direct_calls,
            "direct_pending": sum(self._direct_pending.values()),
            "direct_rejected": self._direct_rejected,
            "intra_op_threads": self.intra_op_threads,
            "batchers": per,
        }

    async def close(self) -> None:
        for b in self._batchers.values():
            await b.close()
        self._batchers.clear()
        for ex in self._executors.values():
            ex.shutdown(wait=False, cancel_futures=True)
        self._executors.clear()
        if self._assist_pool is not None:
            self._assist_pool.shutdown(wait=False, cancel_futures=True)
            self._assist_pool = None


def _rollout(
    entry: ModelEntry, images: np.ndarray, head: str, wanted: np.ndarray
) -> list[CamOutput]:
    """Attention rollout (hybrid v3): class-agnostic maps, class and probability from the head."""
    from ml.explain.attention import attention_rollout
    from ml.explain.faithfulness import predict_probabilities

    maps = attention_rollout(entry.model, images, entry.attention_layers or None)
    probs = predict_probabilities(entry.model, images, head)
    out = []
    for i in range(len(images)):
        ci = int(np.argmax(probs[i])) if wanted[i] < 0 else int(wanted[i])
        out.append(CamOutput(maps.heatmaps[i], ci, float(probs[i][ci]), probs[i]))
    return out
