"""The dynamic batcher: one bounded queue and one worker task per ONNX session. No HTTP here.

Why: one inference call on 64 rows costs far less than 64 calls on one row. Requests become
`Entry`s (payload rows, a future, timestamps); `select_batch` (pure, unit-tested without an
event loop) takes the next rows in FIFO order; the worker gathers until `max_batch_size` rows or
`max_queue_delay` since the oldest queued entry, then runs the call in a thread pool of
`inference_threads` (so up to that many batches run at once, each ONNX Runtime call releasing the
GIL) and resolves the futures. Shape after TGI's router queue and ray serve's batching.

Contracts:
- Admission is bounded in rows: a full queue raises `Overloaded`, a closing batcher `ShuttingDown`.
- A request larger than a batch is split: its first rows fill the current batch, the rest stay
  at the head of the queue; the result lists the rows in request order.
- An entry past its deadline when selected never runs (`DeadlineExceeded`); an entry whose future
  was cancelled (client gone) is dropped before it runs. Both are counted.
- An exception in a call fails that batch's entries only (`InferenceFailed`); the worker lives on.
- `post` (per entry) turns its slice of the outputs into one item per row inside the inference
  thread (e.g. PNG encoding), off the event loop; entries of a batch that share one `post` get one
  call over all their rows (a failing call falls back to one call per entry).
- `close` rejects new work, lets queued work finish for up to `drain_timeout`, then fails the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from . import metrics
from .errors import DeadlineExceeded, InferenceFailed, InvalidInput, Overloaded, ShuttingDown

log = logging.getLogger(__name__)

# An inference thread whose ONNX Runtime call returns waits for the GIL while a busy event loop
# holds it, up to the interpreter's switch interval (5 ms by default), longer than a small batch's
# call. 1 ms bounds that wait. Measured under the CPU lock: +2-4% req/s at n=1, c=64 and images/s at
# n=16, c=16, lower p50: a small gain, about the run-to-run spread (docs/BENCHMARKS.md, Findings).
GIL_SWITCH_INTERVAL_S = 0.001

Outputs = list[np.ndarray]
RunFn = Callable[[dict[str, np.ndarray]], Outputs]
PostFn = Callable[[Outputs], list]


def _check_positive(**limits: float) -> None:
    """Fail fast on a limit that would make the batcher spin or refuse everything."""
    for key, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{key} must be a positive number, got {value!r}")
    for key in ("max_batch_size", "max_queue_rows", "inference_threads"):
        if not isinstance(limits[key], int):
            raise ValueError(f"{key} must be a whole number, got {limits[key]!r}")


def first_output_rows(outputs: Outputs) -> list:
    """Default `post`: the rows of the first output."""
    return list(outputs[0])


@dataclass(eq=False)
class Entry:
    """One request in the queue. `next_row` rows have been scheduled; `results` fill per row."""

    inputs: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future
    enqueued: float
    deadline: float
    post: PostFn = first_output_rows
    next_row: int = 0
    done_rows: int = 0
    started: float | None = None
    results: list | None = None


@dataclass(frozen=True)
class Slice:
    entry: Entry
    start: int
    stop: int


@dataclass
class Selection:
    batch: list[Slice] = field(default_factory=list)
    expired: list[Entry] = field(default_factory=list)
    cancelled: list[Entry] = field(default_factory=list)
    rows: int = 0  # rows in `batch`
    removed_rows: int = 0  # rows that left the queue (batch rows + unscheduled rows of dropped entries)


def select_batch(queue: deque[Entry], max_rows: int, now: float) -> Selection:
    """Take the next batch from the head of `queue` (mutates `queue` and the entries).

    Always returns a batch with at least one row when the queue holds a live entry. Entries whose
    future is done (cancelled) or whose deadline is before `now` are removed and reported instead.
    An entry with more rows than the room left contributes what fits and stays at the head.
    """
    sel = Selection()
    while queue and sel.rows < max_rows:
        entry = queue[0]
        left = entry.rows - entry.next_row
        if entry.future.done() or entry.deadline < now:
            queue.popleft()
            sel.removed_rows += left
            (sel.cancelled if entry.future.done() else sel.expired).append(entry)
            continue
        take = min(left, max_rows - sel.rows)
        sel.batch.append(Slice(entry, entry.next_row, entry.next_row + take))
        entry.next_row += take
        sel.rows += take
        sel.removed_rows += take
        if entry.next_row == entry.rows:
            queue.popleft()
    return sel


class Batcher:
    """Queue + worker for one `run_fn` (an ONNX session's run). Start inside the event loop."""

    def __init__(
        self,
        name: str,
        run_fn: RunFn,
        *,
        max_batch_size: int = 64,
        max_queue_delay_ms: float = 0.0,
        max_queue_rows: int = 2048,
        inference_threads: int = 2,
        timeout_s: float = 10.0,
        model: str | None = None,
        version: str = "",
        clock: Callable[[], float] = time.monotonic,
    ):
        _check_positive(
            max_batch_size=max_batch_size,
            max_queue_rows=max_queue_rows,
            inference_threads=inference_threads,
            timeout_s=timeout_s,
        )
        if not max_queue_delay_ms >= 0:  # also rejects NaN
            raise ValueError(f"max_queue_delay_ms must be >= 0, got {max_queue_delay_ms!r}")
        self.name = name
        self.run_fn = run_fn
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_ms / 1000.0
        self.max_queue_rows = max_queue_rows
        self.inference_threads = inference_threads
        self.timeout_s = timeout_s
        self.clock = clock
        model = model or name
        self._m_depth = metrics.QUEUE_DEPTH.labels(model, version)
        self._m_queue = metrics.QUEUE_SECONDS.labels(model, version)
        self._m_batch = metrics.BATCH_SIZE.labels(model, version)
        self._m_infer = metrics.INFERENCE_SECONDS.labels(model, version)
        self._m_rejected = {
            r: metrics.REJECTED.labels(model, version, r) for r in ("overloaded", "deadline", "cancelled")
        }
        # Loop-independent state (asyncio primitives bind to a loop on first use, not here).
        self._queue: deque[Entry] = deque()
        self._rows = 0
        self._inflight: set[asyncio.Future] = set()
        self._closing = False
        self._wakeup = asyncio.Event()  # set: the queue has work (or the batcher is closing)
        self._idle = asyncio.Event()  # set: nothing queued and nothing running (close waits on it)
        self._idle.set()
        self._slots = asyncio.Semaphore(inference_threads)
        self._pool = ThreadPoolExecutor(inference_threads, thread_name_prefix=f"infer-{name}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker on the running event loop. A batcher runs once: start, then close."""
        if self._task is not None or self._closing:
            raise RuntimeError(f"batcher {self.name}: already started or closed")
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._worker(), name=f"batcher-{self.name}")
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)

    @property
    def started(self) -> bool:
        return self._task is not None

    async def close(self, drain_timeout_s: float = 10.0) -> None:
        """Reject new work; let queued and running work finish within the timeout; fail the rest."""
        self._closing = True
        if self._task is None:
            self._pool.shutdown(wait=False)
            return
        self._wakeup.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), drain_timeout_s)
        for entry in self._queue:
            if not entry.future.done():
                entry.future.set_exception(ShuttingDown(f"{self.name}: shut down before this request ran"))
        if self._queue:
            self._queue.clear()
            self._set_rows(0)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def queued_rows(self) -> int:
        return self._rows

    @property
    def running(self) -> int:
        return len(self._inflight)

    # --- admission ----------------------------------------------------------------------------

    def enqueue(self, inputs: dict[str, np.ndarray], post: PostFn | None = None) -> Entry:
        """Queue `inputs` (equal row counts) and return the entry; await `entry.future` for rows."""
        if self._closing or self._task is None:
            state = "shutting down" if self._closing else "not started"
            raise ShuttingDown(f"{self.name}: not accepting requests ({state})")
        rows = len(next(iter(inputs.values())))
        if rows < 1:
            raise InvalidInput("empty request: no rows to run")
        if self._rows + rows > self.max_queue_rows:
            self._m_rejected["overloaded"].inc()
            raise Overloaded(
                f"{self.name}: queue full ({self._rows} of {self.max_queue_rows} rows waiting)",
                limit=self.max_queue_rows,
            )
        now = self.clock()
        entry = Entry(
            inputs=inputs,
            rows=rows,
            future=self._loop.create_future(),
            enqueued=now,
            deadline=now + self.timeout_s,
            post=post or first_output_rows,
        )
        self._queue.append(entry)
        self._set_rows(self._rows + rows)
        self._idle.clear()
        self._wakeup.set()
        return entry

    async def submit(self, inputs: dict[str, np.ndarray], post: PostFn | None = None) -> list:
        """Enqueue and wait: one item per input row, in order."""
        return await self.enqueue(inputs, post).future

    # --- the worker ---------------------------------------------------------------------------

    def _set_rows(self, rows: int) -> None:
        self._rows = rows
        self._m_depth.set(rows)

    async def _worker(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._slots.acquire()
            try:
                await self._gather()
                sel = select_batch(self._queue, self.max_batch_size, self.clock())
                self._dispatch(sel)
            except asyncio.CancelledError:
                self._slots.release()
                raise
            except Exception:  # a bug here must not kill the worker
                log.exception("batcher %s: worker error", self.name)
                self._slots.release()

    async def _gather(self) -> None:
        """Wait for more rows until the batch is full or max_queue_delay after the oldest entry."""
        while self.max_queue_delay_s > 0 and self._rows < self.max_batch_size and not self._closing:
            remaining = self._queue[0].enqueued + self.max_queue_delay_s - self.clock()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _dispatch(self, sel: Selection) -> None:
        self._set_rows(self._rows - sel.removed_rows)
        for entry in sel.expired:
            self._m_rejected["deadline"].inc()
            if not entry.future.done():
                entry.future.set_exception(
                    DeadlineExceeded(f"{self.name}: deadline of {self.timeout_s:g} s passed while queued")
                )
        for _ in sel.cancelled:
            self._m_rejected["cancelled"].inc()
        if not sel.batch:
            self._slots.release()
            self._note_idle()
            return
        now = self.clock()
        for s in sel.batch:
            if s.entry.started is None:
                s.entry.started = now
                self._m_queue.observe(now - s.entry.enqueued)
        fut = self._loop.run_in_executor(self._pool, self._run, sel.batch, sel.rows)
        self._inflight.add(fut)
        fut.add_done_callback(partial(self._finish, sel.batch))

    def _run(self, batch: list[Slice], rows: int) -> list:
        """In an inference thread: one call for the whole batch, then each entry's `post`."""
        first = batch[0].entry.inputs
        if len(batch) == 1:
            s = batch[0]
            inputs = {k: v[s.start : s.stop] for k, v in first.items()}
        else:
            inputs = {k: np.concatenate([s.entry.inputs[k][s.start : s.stop] for s in batch]) for k in first}
        t0 = time.perf_counter()
        outputs = self.run_fn(inputs)
        self._m_infer.observe(time.perf_counter() - t0)
        self._m_batch.observe(rows)
        shared = self._post_once(batch, outputs, rows)
        if shared is not None:
            return shared
        results: list = []
        offset = 0
        for s in batch:
            n = s.stop - s.start
            try:
                items = s.entry.post([o[offset : offset + n] for o in outputs])
                if len(items) != n:
                    raise ValueError(f"post returned {len(items)} items for {n} rows")
                results.append(items)
            except Exception as exc:  # fails this entry only
                log.exception("batcher %s: post-processing failed", self.name)
                results.append(exc)
            offset += n
        return results

    @staticmethod
    def _post_once(batch: list[Slice], outputs: Outputs, rows: int) -> list | None:
        """When every entry of the batch has the same `post` (the usual case: one reply format),
        one call over all rows, split per entry: the per-call numpy overhead is paid once per
        batch, not once per request. None (each entry on its own) when they differ or it fails,
        so a failure still fails only the entry it belongs to."""
        post = batch[0].entry.post
        if len(batch) == 1 or any(s.entry.post is not post for s in batch):
            return None
        try:
            items = post(outputs)
        except Exception:
            return None
        if len(items) != rows:
            return None
        results, offset = [], 0
        for s in batch:
            n = s.stop - s.start
            results.append(items[offset : offset + n])
            offset += n
        return results

    def _note_idle(self) -> None:
        if not self._queue and not self._inflight:
            self._idle.set()

    def _finish(self, batch: list[Slice], fut: asyncio.Future) -> None:
        """On the event loop: resolve the futures of a finished call."""
        self._inflight.discard(fut)
        self._slots.release()
        self._note_idle()
        if fut.cancelled():
            results = [ShuttingDown(f"{self.name}: inference cancelled")] * len(batch)
        elif fut.exception() is not None:
            exc = fut.exception()
            log.error("batcher %s: inference failed for %d entries: %r", self.name, len(batch), exc)
            results = [InferenceFailed(f"{self.name}: inference failed: {exc}")] * len(batch)
        else:
            results = fut.result()
        for s, items in zip(batch, results, strict=True):
            entry = s.entry
            if entry.future.done():  # cancelled, expired or failed in another slice
                continue
            if isinstance(items, BaseException):
                if not isinstance(items, InferenceFailed | ShuttingDown):
                    items = InferenceFailed(f"{self.name}: post-processing failed: {items}")
                entry.future.set_exception(items)
                continue
            if entry.results is None:
                if s.start == 0 and s.stop == entry.rows:
                    entry.future.set_result(items)
                    continue
                entry.results = [None] * entry.rows
            entry.results[s.start : s.stop] = items
            entry.done_rows += s.stop - s.start
            if entry.done_rows == entry.rows:
                entry.future.set_result(entry.results)
