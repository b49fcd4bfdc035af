"""Dynamic micro-batching: merge concurrent small requests into one batched call.

Neural verifiers cost about the same for 1 item as for 32, so a service that scores each
request on its own wastes most of its time. `MicroBatcher` queues requests, waits at most
`max_wait_ms` after the first one for more, and runs one call of up to `max_batch` items in a
thread pool (the event loop stays free to accept requests meanwhile), then hands each request
back its own slice of the results, in order.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchStats:
    """Counters that /metrics reports; `recent_sizes` keeps the last sizes for tests and tuning."""

    batches: int = 0
    items: int = 0
    max_size: int = 0
    recent_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1000))

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.max_size = max(self.max_size, size)
        self.recent_sizes.append(size)

    @property
    def mean_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


@dataclass
class _Pending(Generic[T, R]):
    items: list[T]
    future: asyncio.Future[list[R]]
    arrived: float


class MicroBatcher(Generic[T, R]):
    """Run `fn(items) -> results` (one result per item) on merged batches of concurrent requests.

    `concurrency` batches may run at once (1 suits a CPU-bound model that already uses every core).
    Workers start lazily on the first `submit`, in whatever event loop that call runs in, and
    restart if a later call comes from a different loop (test clients create their own loops).
    """

    def __init__(
        self,
        fn: Callable[[list[T]], list[R]],
        max_batch: int = 64,
        max_wait_ms: float = 5.0,
        *,
        concurrency: int = 1,
        executor: Executor | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000.0
        self.concurrency, self.executor = concurrency, executor
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending[T, R]] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Results for `items`, in order. Requests larger than `max_batch` are split into chunks."""
        items = list(items)
        if not items:
            return []
        queue = self._ensure_started()
        loop = asyncio.get_running_loop()
        chunks = [items[i : i + self.max_batch] for i in range(0, len(items), self.max_batch)]
        futures = []
        for chunk in chunks:
            fut: asyncio.Future[list[R]] = loop.create_future()
            queue.put_nowait(_Pending(chunk, fut, time.monotonic()))
            futures.append(fut)
        try:
            parts = await asyncio.gather(*futures)
        except BaseException:
            for fut in futures:  # a timed-out caller: drop its chunks that have not run yet
                fut.cancel()
            raise
        return [r for part in parts for r in part]

    async def close(self) -> None:
        """Stop the workers; requests still queued are cancelled."""
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        for task in workers:
            try:
                await task
            except (asyncio.CancelledError, RuntimeError):  # RuntimeError: task of another (closed) loop
                pass
        if self._queue is not None:
            while not self._queue.empty():
                self._queue.get_nowait().future.cancel()
        self._queue, self._loop = None, None

    def _ensure_started(self) -> asyncio.Queue[_Pending[T, R]]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or loop.is_closed():
            self._queue = asyncio.Queue()
            self._loop = loop
            self._workers = [loop.create_task(self._work(self._queue)) for _ in range(self.concurrency)]
        return self._queue

    async def _work(self, queue: asyncio.Queue[_Pending[T, R]]) -> None:
        carry: _Pending[T, R] | None = None
        while True:
            first = carry if carry is not None else await queue.get()
            carry = None
            batch, size = [first], len(first.items)
            deadline = first.arrived + self.max_wait
            while size < self.max_batch:
                try:
                    nxt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                if size + len(nxt.items) > self.max_batch:
                    carry = nxt  # it starts the next batch, so no batch exceeds max_batch
                    break
                batch.append(nxt)
                size += len(nxt.items)
            await self._run(batch)

    async def _run(self, batch: list[_Pending[T, R]]) -> None:
        live = [p for p in batch if not p.future.done()]  # callers that timed out are skipped
        if not live:
            return
        items = [it for p in live for it in p.items]
        self.stats.record(len(items))
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self.fn, items)
            if len(results) != len(items):
                raise RuntimeError(f"batched call returned {len(results)} results for {len(items)} items")
        except asyncio.CancelledError:  # the batcher is closing: nobody may wait forever
            for p in live:
                p.future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every caller of this batch
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        start = 0
        for p in live:
            if not p.future.done():
                p.future.set_result(list(results[start : start + len(p.items)]))
            start += len(p.items)


def call_isolating(
    fn: Callable[[list[T]], list[R]], items: list[T], on_error: Callable[[T, Exception], R]
) -> list[R]:
    """`fn(items)`, but an item that makes `fn` raise gets `on_error(item, exc)` instead.

    A merged batch mixes many callers' items, so one bad item must not fail the others. On an
    exception the batch is bisected, which finds k bad items in about k*log2(n) extra calls.
    """
    if not items:
        return []
    try:
        results = fn(items)
        if len(results) != len(items):
            raise RuntimeError(f"returned {len(results)} results for {len(items)} items")
        return list(results)
    except Exception as exc:  # noqa: BLE001 - isolated below
        if len(items) == 1:
            return [on_error(items[0], exc)]
    mid = len(items) // 2
    return call_isolating(fn, items[:mid], on_error) + call_isolating(fn, items[mid:], on_error)
