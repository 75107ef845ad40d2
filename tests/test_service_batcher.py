"""The dynamic batcher alone: the pure batch selection, then the async worker with short timeouts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

import numpy as np
import pytest

from service.batcher import Batcher, Entry, select_batch
from service.errors import DeadlineExceeded, InferenceFailed, Overloaded, ShuttingDown


class _Done:
    """A stand-in future for the pure tests (no event loop)."""

    def __init__(self, done=False):
        self._done = done

    def done(self):
        return self._done


def _entry(rows, deadline=100.0, cancelled=False):
    return Entry(
        inputs={"x": np.zeros((rows, 1))}, rows=rows, future=_Done(cancelled), enqueued=0.0, deadline=deadline
    )


# --- select_batch (pure) ---------------------------------------------------------------------


def test_select_takes_whole_entries_in_order_up_to_the_limit():
    a, b, c = _entry(3), _entry(2), _entry(4)
    q = deque([a, b, c])
    sel = select_batch(q, 8, now=1.0)
    assert [(s.entry, s.start, s.stop) for s in sel.batch] == [(a, 0, 3), (b, 0, 2), (c, 0, 3)]
    assert sel.rows == 8 and sel.removed_rows == 8
    assert list(q) == [c] and c.next_row == 3  # the rest of c waits at the head


def test_select_splits_a_large_entry_across_batches():
    big = _entry(10)
    q = deque([big])
    spans = []
    while q:
        sel = select_batch(q, 4, now=1.0)
        spans += [(s.start, s.stop) for s in sel.batch]
    assert spans == [(0, 4), (4, 8), (8, 10)]


def test_select_drops_cancelled_and_expired_entries_and_counts_their_rows():
    dead, gone, live = _entry(2, deadline=0.5), _entry(3, cancelled=True), _entry(1)
    q = deque([dead, gone, live])
    sel = select_batch(q, 8, now=1.0)
    assert sel.expired == [dead] and sel.cancelled == [gone]
    assert [s.entry for s in sel.batch] == [live]
    assert sel.removed_rows == 6 and not q


def test_select_on_an_empty_or_all_dropped_queue_returns_no_batch():
    assert select_batch(deque(), 8, 0.0).batch == []
    sel = select_batch(deque([_entry(1, cancelled=True)]), 8, 0.0)
    assert sel.batch == [] and len(sel.cancelled) == 1


# --- the async worker ----------------------------------------------------------------------------


class Recorder:
    """run_fn that doubles its input and records the batch sizes; optional delay and failure."""

    def __init__(self, delay=0.0, fail_when=None):
        self.sizes = []
        self.delay = delay
        self.fail_when = fail_when
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, inputs):
        self.gate.wait(5)
        x = inputs["x"]
        self.sizes.append(len(x))
        if self.delay:
            time.sleep(self.delay)
        if self.fail_when is not None and self.fail_when(x):
            raise RuntimeError("boom")
        return [x * 2]


def _batcher(run, **kw):
    kw.setdefault("max_batch_size", 8)
    kw.setdefault("inference_threads", 1)
    b = Batcher("test", run, **kw)
    b.start()
    return b


def _rows(*values):
    return {"x": np.array(values, dtype=np.float32)[:, None]}


@pytest.mark.anyio
async def test_concurrent_requests_share_one_call_and_get_their_own_rows():
    run = Recorder()
    run.gate.clear()  # hold the worker so that all requests queue up
    b = _batcher(run)
    first = asyncio.ensure_future(b.submit(_rows(0)))
    await asyncio.sleep(0.02)  # the first call is now blocked in the thread
    futs = [asyncio.ensure_future(b.submit(_rows(i, 10 + i))) for i in range(1, 4)]
    await asyncio.sleep(0.02)
    run.gate.set()
    results = await asyncio.gather(first, *futs)
    assert [float(r[0][0]) for r in results] == [0.0, 2.0, 4.0, 6.0]
    assert [float(r[1][0]) for r in results[1:]] == [22.0, 24.0, 26.0]
    assert run.sizes == [1, 6]  # three queued requests, one call
    await b.close(1)


@pytest.mark.anyio
async def test_max_queue_delay_waits_for_more_rows_then_runs_what_it_has():
    run = Recorder()
    b = _batcher(run, max_queue_delay_ms=60)
    t0 = time.monotonic()
    f1 = asyncio.ensure_future(b.submit(_rows(1)))
    await asyncio.sleep(0.02)
    f2 = asyncio.ensure_future(b.submit(_rows(2)))
    await asyncio.gather(f1, f2)
    elapsed = time.monotonic() - t0
    assert run.sizes == [2]
    assert 0.05 <= elapsed < 1.0
    await b.close(1)


@pytest.mark.anyio
async def test_a_full_batch_does_not_wait_for_the_delay():
    run = Recorder()
    b = _batcher(run, max_queue_delay_ms=5000, max_batch_size=4)
    t0 = time.monotonic()
    out = await b.submit(_rows(1, 2, 3, 4))
    assert len(out) == 4 and time.monotonic() - t0 < 1.0
    await b.close(1)


@pytest.mark.anyio
async def test_a_request_larger_than_a_batch_is_split_and_reassembled_in_order():
    run = Recorder()
    b = _batcher(run, max_batch_size=4, inference_threads=2)
    values = list(range(11))
    out = await b.submit(_rows(*values))
    assert [float(r[0]) for r in out] == [2.0 * v for v in values]
    assert sorted(run.sizes) == [3, 4, 4]
    await b.close(1)


@pytest.mark.anyio
async def test_a_full_queue_rejects_with_overloaded():
    run = Recorder()
    run.gate.clear()
    b = _batcher(run, max_queue_rows=4)
    running = asyncio.ensure_future(b.submit(_rows(0)))
    await asyncio.sleep(0.02)
    queued = asyncio.ensure_future(b.submit(_rows(1, 2, 3)))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        b.enqueue(_rows(4, 5))
    run.gate.set()
    await asyncio.gather(running, queued)
    await b.submit(_rows(4, 5))  # room again
    await b.close(1)


@pytest.mark.anyio
async def test_an_expired_request_never_runs():
    run = Recorder()
    run.gate.clear()
    b = _batcher(run, timeout_s=0.05)
    running = asyncio.ensure_future(b.submit(_rows(0)))
    await asyncio.sleep(0.01)
    late = asyncio.ensure_future(b.submit(_rows(7)))
    await asyncio.sleep(0.1)  # its deadline passes while the worker is busy
    run.gate.set()
    await running
    with pytest.raises(DeadlineExceeded):
        await late
    assert run.sizes == [1]
    await b.close(1)


@pytest.mark.anyio
async def test_a_cancelled_request_is_dropped_before_it_runs():
    run = Recorder()
    run.gate.clear()
    b = _batcher(run)
    running = asyncio.ensure_future(b.submit(_rows(0)))
    await asyncio.sleep(0.01)
    entry = b.enqueue(_rows(9, 9, 9))
    entry.future.cancel()  # what the API does when the client disconnects
    run.gate.set()
    await running
    await b.submit(_rows(1))
    assert run.sizes == [1, 1]  # the cancelled rows never reached the model
    assert b.queued_rows == 0
    await b.close(1)


@pytest.mark.anyio
async def test_an_exception_fails_only_its_batch_and_the_worker_lives_on():
    run = Recorder(fail_when=lambda x: (x == 13).any())
    b = _batcher(run, max_batch_size=1, inference_threads=1)
    bad = asyncio.ensure_future(b.submit(_rows(13)))
    good = asyncio.ensure_future(b.submit(_rows(1)))
    with pytest.raises(InferenceFailed, match="boom"):
        await bad
    assert float((await good)[0][0]) == 2.0
    assert float((await b.submit(_rows(3)))[0][0]) == 6.0
    await b.close(1)


@pytest.mark.anyio
async def test_a_failing_post_fails_only_its_own_request():
    b = _batcher(Recorder())

    def bad_post(outputs):
        raise ValueError("cannot encode")

    f1 = asyncio.ensure_future(b.submit(_rows(1), post=bad_post))
    f2 = asyncio.ensure_future(b.submit(_rows(2)))
    with pytest.raises(InferenceFailed):
        await f1
    assert float((await f2)[0][0]) == 4.0
    await b.close(1)


@pytest.mark.anyio
async def test_entries_sharing_a_post_get_one_call_and_a_failing_one_falls_back_per_entry():
    run = Recorder()
    run.gate.clear()  # the first call holds the thread while the next requests queue
    b = _batcher(run)
    calls = []

    def post(outputs):
        calls.append(len(outputs[0]))
        if float(outputs[0][0][0]) == 14.0 and len(outputs[0]) > 1:  # fails when shared with 7
            raise ValueError("no")
        return [float(v[0]) for v in outputs[0]]

    first = asyncio.ensure_future(b.submit(_rows(0), post=post))
    await asyncio.sleep(0.05)
    shared = [asyncio.ensure_future(b.submit(_rows(i, i + 10), post=post)) for i in (1, 2, 3)]
    await asyncio.sleep(0.05)
    run.gate.set()
    assert await first == [0.0]
    assert [await f for f in shared] == [[2.0, 22.0], [4.0, 24.0], [6.0, 26.0]]
    assert calls == [1, 6]  # one call for the three requests' six rows
    calls.clear()
    run.gate.clear()
    blocker = asyncio.ensure_future(b.submit(_rows(0), post=post))
    await asyncio.sleep(0.05)
    seven, eight = (asyncio.ensure_future(b.submit(_rows(i), post=post)) for i in (7, 8))
    await asyncio.sleep(0.05)
    run.gate.set()
    await blocker
    assert await seven == [14.0] and await eight == [16.0]  # the shared call failed: one each
    assert calls == [1, 2, 1, 1]
    await b.close(1)


@pytest.mark.anyio
async def test_up_to_inference_threads_batches_run_at_once():
    run = Recorder(delay=0.1)
    b = _batcher(run, max_batch_size=1, inference_threads=2)
    t0 = time.monotonic()
    await asyncio.gather(*(b.submit(_rows(i)) for i in range(4)))
    assert time.monotonic() - t0 < 0.35  # 4 calls of 0.1 s on 2 threads, not 0.4 s in a row
    await b.close(1)


@pytest.mark.anyio
async def test_close_drains_queued_work_and_rejects_new_work():
    run = Recorder(delay=0.02)
    b = _batcher(run, max_batch_size=2)
    futs = [asyncio.ensure_future(b.submit(_rows(i))) for i in range(6)]
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(b.close(5))
    await asyncio.sleep(0)
    with pytest.raises(ShuttingDown):
        b.enqueue(_rows(1))
    results = await asyncio.gather(*futs)
    await closing
    assert [float(r[0][0]) for r in results] == [0, 2, 4, 6, 8, 10]


@pytest.mark.anyio
async def test_close_fails_what_is_left_after_the_drain_timeout():
    run = Recorder()
    run.gate.clear()
    b = _batcher(run)
    running = asyncio.ensure_future(b.submit(_rows(0)))
    await asyncio.sleep(0.01)
    queued = asyncio.ensure_future(b.submit(_rows(1)))
    await asyncio.sleep(0)
    await b.close(0.05)
    with pytest.raises(ShuttingDown):
        await queued
    run.gate.set()
    running.cancel()


# --- construction and the end of a batcher's life ------------------------------------------------


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"max_batch_size": 0}, "max_batch_size must be a positive number, got 0"),
        ({"max_batch_size": 2.5}, "max_batch_size must be a whole number, got 2.5"),
        ({"max_batch_size": True}, "max_batch_size must be a positive number, got True"),
        ({"max_queue_rows": -1}, "max_queue_rows must be a positive number"),
        ({"inference_threads": 0}, "inference_threads must be a positive number"),
        ({"timeout_s": 0}, "timeout_s must be a positive number"),
        ({"timeout_s": float("nan")}, "timeout_s must be a positive number, got nan"),
        ({"max_queue_delay_ms": -1}, "max_queue_delay_ms must be >= 0, got -1"),
        ({"max_queue_delay_ms": float("nan")}, "max_queue_delay_ms must be >= 0"),
    ],
)
def test_the_constructor_refuses_limits_that_would_spin_or_refuse_everything(kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Batcher("bad", Recorder(), **kw)


def test_a_batcher_built_outside_an_event_loop_has_its_state_and_runs_once():
    b = Batcher("idle", Recorder(), max_queue_delay_ms=0)  # no running loop here
    assert (b.queued_rows, b.running, b.started) == (0, 0, False)
    with pytest.raises(ShuttingDown, match="not started"):
        b.enqueue(_rows(1))

    async def life():
        b.start()
        with pytest.raises(RuntimeError, match="already started"):
            b.start()
        assert [float(r[0]) for r in await b.submit(_rows(3))] == [6.0]
        await b.close(1)
        with pytest.raises(ShuttingDown, match="shutting down"):
            b.enqueue(_rows(1))
        with pytest.raises(RuntimeError, match="closed"):
            b.start()

    asyncio.run(life())


@pytest.mark.anyio
async def test_close_of_a_batcher_never_started_returns_at_once():
    b = Batcher("never", Recorder())
    await asyncio.wait_for(b.close(30), 1)
    assert not b.started


@pytest.mark.anyio
async def test_close_returns_when_the_last_batch_ends_not_at_the_drain_timeout():
    run = Recorder()
    run.gate.clear()
    b = _batcher(run, max_batch_size=1)
    running = asyncio.ensure_future(b.submit(_rows(1)))
    await asyncio.sleep(0.02)
    gone = asyncio.ensure_future(b.submit(_rows(2)))  # queued, then its client leaves
    await asyncio.sleep(0)
    gone.cancel()
    closing = asyncio.ensure_future(b.close(30))
    await asyncio.sleep(0.05)
    assert not closing.done()  # a batch is still running
    run.gate.set()
    await asyncio.wait_for(closing, 2)  # woken by the batch's end, the cancelled entry dropped
    assert [float(r[0]) for r in await running] == [2.0] and run.sizes == [1]
