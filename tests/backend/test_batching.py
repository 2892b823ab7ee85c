"""The runner batches concurrent requests, keeps models off the event loop, and sheds load."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import api_samples as samples
import numpy as np
import pytest
from api_helpers import Env, wait_until

from backend.inference.batcher import MicroBatcher, ModelExecutor, QueueFull
from backend.models import Analysis

# Timing-sensitive (windows, waits, processes started or killed): `make test` runs it alone.
pytestmark = pytest.mark.serial


async def test_twenty_concurrent_classify_share_model_calls(env: Env, alice: dict) -> None:
    runner = env.runtime.runner
    assert runner is not None
    before = runner.stats()["batchers"].get("cnn_tiny:classify", {"requests": 0, "calls": 0})
    pngs = [samples.phantom_png(100 + i) for i in range(20)]

    async def one(data: bytes) -> dict:
        r = await env.client.post(
            "/classify", files={"file": ("x.png", data, "image/png")}, headers=alice
        )
        assert r.status_code == 200, r.text
        return r.json()

    results = await asyncio.gather(*(one(d) for d in pngs))
    assert len({r["id"] for r in results}) == 20
    after = runner.stats()["batchers"]["cnn_tiny:classify"]
    requests = after["requests"] - before["requests"]
    calls = after["calls"] - before["calls"]
    assert requests == 20
    assert calls < requests, f"20 requests took {calls} model calls"
    assert after["largest_batch"] > 1
    # Batched results equal one-at-a-time results.
    single = await one(pngs[0])
    p1 = results[0]["classifications"][0]["as_probabilities"]
    p2 = single["classifications"][0]["as_probabilities"]
    assert p1 == pytest.approx(p2, abs=1e-5)


async def test_full_queue_is_503_with_retry_after(env: Env, alice: dict) -> None:
    runner = env.runtime.runner
    assert runner is not None
    entry = runner.registry.get("cnn_tiny")
    key = (entry.key, "classify")
    original = runner._batchers.get(key)
    release = threading.Event()

    def slow(items: list) -> list:
        release.wait(5)
        return original.fn(items) if original else []

    executor = ThreadPoolExecutor(max_workers=1)
    batcher = MicroBatcher(
        "cnn_tiny:classify", slow, executor, max_batch=1, max_wait_ms=0, queue_size=1
    )
    runner._batchers[key] = batcher
    rows_before = await env.count(Analysis)
    try:

        async def one(seed: int) -> object:
            return await env.client.post(
                "/classify",
                files={"file": ("x.png", samples.phantom_png(seed), "image/png")},
                headers=alice,
            )

        tasks = [asyncio.create_task(one(200 + i)) for i in range(5)]
        # Hold the model until every request has reached the batcher: one running, one
        # queued (the queue is full), the rest turned away.
        await wait_until(
            lambda: batcher.stats.requests + batcher.stats.rejected == 5 and batcher.queued == 1,
            "all five requests to reach the batcher",
        )
        release.set()
        responses = await asyncio.gather(*tasks)
    finally:
        await runner._batchers[key].close()
        if original is not None:
            runner._batchers[key] = original
        executor.shutdown(wait=False)
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 200, 503, 503, 503], codes
    busy = [r for r in responses if r.status_code == 503]
    assert busy[0].json()["code"] == "busy" and busy[0].headers["retry-after"] == "1"
    assert await env.count(Analysis) == rows_before + codes.count(200)
    assert env.runtime.store.leftovers() == []


async def test_batcher_groups_and_isolates_errors() -> None:
    calls: list[int] = []
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    def fn(items: list[int]) -> list[int]:
        threads.add(threading.get_ident())
        calls.append(len(items))
        time.sleep(0.01)
        if -1 in items:
            raise ValueError("bad item")
        return [i * 2 for i in items]

    with ThreadPoolExecutor(max_workers=1) as ex:
        b: MicroBatcher[int, int] = MicroBatcher("t", fn, ex, max_batch=8, max_wait_ms=20)
        out = await asyncio.gather(*(b.submit(i) for i in range(20)))
        assert out == [i * 2 for i in range(20)]
        assert sum(calls) == 20 and len(calls) < 20 and max(calls) <= 8
        assert loop_thread not in threads  # never on the event loop's thread
        with pytest.raises(ValueError):
            await b.submit(-1)
        assert await b.submit(4) == 8  # the collector survives a failed batch
        await b.close()


async def test_an_idle_model_thread_runs_a_batch_at_once_a_busy_one_lets_it_grow() -> None:
    """With a ModelExecutor: nothing waits out the window while the model's thread is idle;
    while it is busy (here with another batcher's call on the same model), requests that
    arrive within the window join one batch."""
    gate = threading.Event()
    calls: list[list[int]] = []

    def hold(items: list[int]) -> list[int]:
        gate.wait(5)
        return items

    def fn(items: list[int]) -> list[int]:
        calls.append(list(items))
        return items

    ex = ModelExecutor("test-model")
    try:
        assert ex.idle
        other: MicroBatcher[int, int] = MicroBatcher("other", hold, ex, max_wait_ms=0)
        b: MicroBatcher[int, int] = MicroBatcher("idle", fn, ex, max_batch=8, max_wait_ms=300)
        t0 = time.perf_counter()
        assert await b.submit(7) == 7
        assert time.perf_counter() - t0 < 0.2, "an idle thread's batch waited out the window"
        assert ex.idle
        holding = asyncio.create_task(other.submit(0))
        await wait_until(lambda: not ex.idle, "the other call to take the model's thread")
        rest = []
        for i in (1, 2, 3):  # over 60 ms, inside the 300 ms window
            rest.append(asyncio.create_task(b.submit(i)))
            await asyncio.sleep(0.03)
        await asyncio.sleep(0.4)  # the window is over: the batch is queued behind the hold
        gate.set()
        assert await holding == 0 and [await r for r in rest] == [1, 2, 3]
        # Dispatched at once, 1 would have run alone and 2, 3 after it.
        assert calls == [[7], [1, 2, 3]]
        await other.close()
        await b.close()
    finally:
        gate.set()
        ex.shutdown(wait=True)

    # A plain executor says nothing about its thread: the window is always waited out.
    with ThreadPoolExecutor(max_workers=1) as plain:
        p: MicroBatcher[int, int] = MicroBatcher(
            "plain", lambda items: items, plain, max_batch=8, max_wait_ms=150
        )
        t0 = time.perf_counter()
        assert await p.submit(1) == 1
        assert time.perf_counter() - t0 >= 0.14
        await p.close()


def test_spread_runs_shares_on_the_cores_in_order() -> None:
    """With one TensorFlow thread per operation, perturbed images are computed in shares at
    once (one per core, the caller's thread taking the first), rows in order; otherwise, or
    with too few images, in one call."""
    from backend.inference.runner import InferenceRunner

    runner = InferenceRunner(None)  # type: ignore[arg-type]  # spread needs no models
    threads: list[int] = []

    def double(x: np.ndarray) -> np.ndarray:
        threads.append(threading.get_ident())
        time.sleep(0.05)
        return x * 2

    images = np.arange(10.0)[:, None]
    runner.intra_op_threads, runner.cores = 1, 2
    try:
        assert np.array_equal(runner.spread(double, images), images * 2)
        assert len(threads) == 2 and len(set(threads)) == 2
        assert threading.get_ident() in threads  # the caller took a share
        threads.clear()
        assert np.array_equal(runner.spread(double, images[:3]), images[:3] * 2)
        assert len(threads) == 1  # fewer than 2 images a share: one call
        threads.clear()
        runner.intra_op_threads = 0  # TensorFlow's own threads use the cores already
        assert np.array_equal(runner.spread(double, images), images * 2)
        assert len(threads) == 1
    finally:
        asyncio.run(runner.close())


def test_spread_outputs_keeps_each_output_in_row_order() -> None:
    from backend.inference.runner import InferenceRunner

    runner = InferenceRunner(None)  # type: ignore[arg-type]  # spread needs no models
    runner.intra_op_threads, runner.cores = 1, 2
    try:
        images = np.arange(9.0)[:, None]
        a, b = runner.spread_outputs(lambda x: [x + 1, x * 3], images)
        assert np.array_equal(a, images + 1) and np.array_equal(b, images * 3)
    finally:
        asyncio.run(runner.close())


async def test_a_batch_of_slices_runs_in_shares_on_the_cores(env: Env) -> None:
    """A batch of segmentations or classifications (a study's slices, concurrent requests) is
    cut into shares run at once when TensorFlow runs one thread per operation; same outputs as
    one call."""
    from backend.inference.runner import InferenceRunner

    assert env.runtime.runner is not None
    registry = env.runtime.runner.registry
    seg, cnn = registry.get("seg_tiny"), registry.get("cnn_tiny")
    rng = np.random.default_rng(3)
    images = [rng.random((seg.input_size, seg.input_size)).astype(np.float32) for _ in range(8)]

    async def run_all(runner: InferenceRunner) -> tuple[list, list, set[int]]:
        threads: set[int] = set()
        for entry in (seg, cnn):
            forward = runner.forward(entry)

            def watched(x: np.ndarray, forward=forward) -> list[np.ndarray]:
                threads.add(threading.get_ident())
                return forward(x)

            runner._forward[entry.key] = watched
        masks = await asyncio.gather(*(runner.segment(seg, im) for im in images))
        classes = await asyncio.gather(*(runner.classify(cnn, im) for im in images))
        return masks, classes, threads

    shared = InferenceRunner(registry, max_wait_ms=200)
    shared.intra_op_threads, shared.cores = 1, 2
    whole = InferenceRunner(registry, max_wait_ms=200)
    whole.intra_op_threads = 0
    try:
        m1, c1, t1 = await run_all(shared)
        m0, c0, t0 = await run_all(whole)
    finally:
        await shared.close()
        await whole.close()
    assert len(t1) > len(t0) == 2  # shares ran on a helper thread beside each model's own
    for a, b in zip(m1, m0, strict=True):
        assert np.allclose(a, b, atol=1e-5)
    for a, b in zip(c1, c0, strict=True):
        assert np.allclose(a.p_status, b.p_status, atol=1e-5)
        assert np.allclose(a.p_stage, b.p_stage, atol=1e-5)


async def test_batcher_bounded_queue() -> None:
    gate = threading.Event()

    def fn(items: list[int]) -> list[int]:
        gate.wait(2)
        return items

    with ThreadPoolExecutor(max_workers=1) as ex:
        b: MicroBatcher[int, int] = MicroBatcher(
            "q", fn, ex, max_batch=1, max_wait_ms=0, queue_size=2
        )
        first = asyncio.create_task(b.submit(0))
        await asyncio.sleep(0.05)  # taken by the collector, now running
        waiting = [asyncio.create_task(b.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await b.submit(3)
        assert b.stats.rejected == 1
        gate.set()
        assert await first == 0 and [await w for w in waiting] == [1, 2]
        await b.close()


async def test_faithfulness_work_is_bounded_too(env: Env, alice: dict) -> None:
    """Per-image work outside the batchers (faithfulness scores) sheds load the same way."""
    from backend.core.errors import ServiceBusy
    from backend.inference.runner import InferenceRunner

    assert env.runtime.runner is not None
    registry = env.runtime.runner.registry
    entry = registry.get("cnn_tiny")
    runner = InferenceRunner(registry, queue_size=2, retry_after=3)
    gate = threading.Event()
    loop_thread = threading.get_ident()

    def work(i: int) -> tuple[int, int]:
        gate.wait(10)
        return i, threading.get_ident()

    try:
        held = [asyncio.create_task(runner.call(entry, work, i)) for i in range(2)]
        await wait_until(lambda: runner.stats()["direct_pending"] == 2, "two calls in flight")
        with pytest.raises(ServiceBusy) as info:
            await runner.call(entry, work, 9)
        assert info.value.headers == {"Retry-After": "3"}
        assert runner.stats()["direct_rejected"] == 1
        gate.set()
        results = [await t for t in held]
        assert [i for i, _ in results] == [0, 1]
        assert all(thread != loop_thread for _, thread in results)  # off the event loop
        await wait_until(lambda: runner.stats()["direct_pending"] == 0, "the slots to free up")
        assert (await runner.call(entry, work, 5))[0] == 5
    finally:
        gate.set()
        await runner.close()

    # Through the API: a full queue of faithfulness images is a clean 503 with Retry-After.
    api_runner = env.runtime.runner
    rows_before = await env.count(Analysis)
    key = ("cnn_tiny", "probe", "binary_output")
    original = api_runner._batchers.get(key)
    release = threading.Event()

    def held_probe(items: list) -> list:
        release.wait(10)
        return list(items)

    executor = ThreadPoolExecutor(max_workers=1)
    probe = MicroBatcher("cnn_tiny:probe", held_probe, executor, max_batch=1, queue_size=1)
    api_runner._batchers[key] = probe
    holders = [asyncio.create_task(probe.submit(0))]
    try:
        await wait_until(lambda: probe.stats.calls == 1, "one probe call to hold the model")
        holders.append(asyncio.create_task(probe.submit(1)))
        await wait_until(lambda: probe.queued == 1, "the probe queue to fill")
        r = await env.client.post(
            "/explain",
            files={"file": ("x.png", samples.phantom_png(7), "image/png")},
            data={"model": "cnn_tiny", "method": "gradcam"},
            headers=alice,
        )
    finally:
        release.set()
        await asyncio.gather(*holders)
        await probe.close()
        executor.shutdown()
        if original is not None:
            api_runner._batchers[key] = original
        else:
            del api_runner._batchers[key]
    assert r.status_code == 503 and r.json()["code"] == "busy", r.text
    assert r.headers["retry-after"] == "1"
    assert await env.count(Analysis) == rows_before
    assert env.runtime.store.leftovers() == []


async def _scored_faithfulness(env: Env, alice: dict, data: bytes) -> dict:
    """The faithfulness block of a scored Grad-CAM explanation of ``data`` by cnn_tiny."""
    r = await env.client.post(
        "/explain",
        files={"file": ("x.png", data, "image/png")},
        data={"model": "cnn_tiny", "faithfulness": "true", "method": "gradcam"},
        headers=alice,
    )
    assert r.status_code == 200, r.text
    return r.json()["explanation"]["faithfulness"]


async def test_concurrent_faithfulness_scores_share_model_calls(env: Env, alice: dict) -> None:
    """The deletion/insertion images of concurrent explanations run in shared probe calls, and
    a score computed in company equals the one computed alone."""
    runner = env.runtime.runner
    assert runner is not None
    name = "cnn_tiny:probe:binary_output"
    before = runner.stats()["batchers"].get(name, {"requests": 0, "calls": 0})
    pngs = [samples.phantom_png(300 + i) for i in range(6)]

    faiths = await asyncio.gather(*(_scored_faithfulness(env, alice, d) for d in pngs))
    after = runner.stats()["batchers"][name]
    steps = env.runtime.settings.faithfulness_steps
    # Coarse first: the baseline and the 3 half-way images, then (unless nothing moved) the rest.
    stopped = [f for f in faiths if f["steps"] == 2]
    for faith in stopped:
        assert faith["images_run"] == 4 and "finer steps were not run" in faith["interpretation"]
    for faith in faiths:
        assert faith["random_orders"] == 1
        if faith["steps"] != 2:
            assert faith["steps"] == steps
            # The unperturbed image is not run again: its probabilities come from the CAM pass.
            assert faith["images_run"] == 1 + (steps - 1) * 3
    assert after["requests"] - before["requests"] == 2 * len(faiths) - len(stopped)
    assert after["calls"] - before["calls"] < after["requests"] - before["requests"]
    # Batched scores equal the score of the same request run alone (no rows mixed up).
    alone = await _scored_faithfulness(env, alice, pngs[0])
    together = faiths[0]
    for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "score"):
        assert together[key] == pytest.approx(alone[key], abs=1e-4), key


PROBE = "cnn_tiny:probe:binary_output"


async def _score_of_grey(env: Env, alice: dict) -> tuple[dict, int]:
    """The faithfulness of a flat grey slice (one pixel a shade off) and the probe rounds it
    took: no perturbation of it can move a model's probability."""
    runner = env.runtime.runner
    assert runner is not None
    before = runner.stats()["batchers"].get(PROBE, {"requests": 0})["requests"]
    grey = np.full((128, 128), 77, np.uint8)
    grey[0, 0] = 78
    r = await env.client.post(
        "/explain",
        files={"file": ("grey.png", samples.png(grey), "image/png")},
        data={"model": "cnn_tiny", "faithfulness": "true", "method": "gradcam"},
        headers=alice,
    )
    assert r.status_code == 200, r.text
    rounds = runner.stats()["batchers"][PROBE]["requests"] - before
    return r.json()["explanation"]["faithfulness"], rounds


async def test_a_score_that_cannot_move_stops_at_its_coarse_step(env: Env, alice: dict) -> None:
    """The probability cannot move, so the score stops after the baseline and the 3 half-way
    images and says why, instead of running all 1 + (steps - 1) * 3."""
    faith, rounds = await _score_of_grey(env, alice)
    assert env.runtime.settings.faithfulness_steps >= 4
    assert faith["steps"] == 2 and faith["images_run"] == 4 and faith["random_orders"] == 1
    assert "finer steps were not run" in faith["interpretation"]
    assert abs(faith["score"]) < 1e-3
    assert rounds == 1


async def test_a_cheap_model_is_scored_in_one_round(
    env: Env, alice: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below ``faithfulness_coarse_first_gflops`` a model's images all run in one round (a
    second round would cost more than it could save), even where the coarse step would stop."""
    monkeypatch.setattr(env.runtime.settings, "faithfulness_coarse_first_gflops", 1e6)
    faith, rounds = await _score_of_grey(env, alice)
    steps = env.runtime.settings.faithfulness_steps
    assert faith["steps"] == steps and faith["images_run"] == 1 + (steps - 1) * 3
    assert "barely changes" in faith["interpretation"]
    assert rounds == 1


async def test_coarse_first_and_one_round_give_the_same_score(
    env: Env, alice: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the coarse step finds the probability moving, the rest of the images run and the
    score is exactly the one a single round gives (the coarse rows are reused, not re-run)."""
    steps = env.runtime.settings.faithfulness_steps
    moving = None
    for seed in range(300, 320):
        data = samples.phantom_png(seed)
        coarse_first = await _scored_faithfulness(env, alice, data)
        if coarse_first["steps"] == steps:
            moving = data
            break
    assert moving is not None, "no phantom moved the tiny model's probability"
    monkeypatch.setattr(env.runtime.settings, "faithfulness_coarse_first_gflops", 1e6)
    one_round = await _scored_faithfulness(env, alice, moving)
    assert one_round["images_run"] == coarse_first["images_run"] == 1 + (steps - 1) * 3
    for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "score"):
        assert coarse_first[key] == pytest.approx(one_round[key], abs=1e-6), key
