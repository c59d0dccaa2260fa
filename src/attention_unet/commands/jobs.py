"""Images predicted side by side. Most of an image's time outside the network (its instances,
measurements and outputs) runs on one core; with two images in flight, one's network runs while
the other's post-processing does (BENCHMARKS.md). Threads, not processes: the model is loaded once,
and ONNX Runtime and OpenCV let go of the GIL while they compute, as many NumPy routines do.

Images are admitted by size (:class:`Admission`): one of at most a block-wise window's pixels runs
beside others; a larger one runs alone, so a batch never holds two large images at once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from ..errors import InputError

Item = TypeVar("Item")
Result = TypeVar("Result")

JOBS = 2  # images at once by default: one's network beside the other's post-processing (2 cores)
MAX_JOBS = 64


def check_jobs(jobs: object, what: str = "jobs") -> None:
    if not (isinstance(jobs, int) and not isinstance(jobs, bool) and 1 <= jobs <= MAX_JOBS):
        raise InputError(f"{what} must be a whole number from 1 to {MAX_JOBS}, not {jobs!r}", "jobs")


def in_order(work: Callable[[Item], Result], items: Iterable[Item], jobs: int) -> Iterator[Result]:
    """``work(item)`` for each item, at most ``jobs`` at once on threads (1: here, one by one),
    yielded in the items' order. An error an item raises is raised here at its turn; the items
    not yet started then are not started.

    >>> list(in_order(lambda x: x * x, range(5), jobs=2))
    [0, 1, 4, 9, 16]
    """
    check_jobs(jobs)
    if jobs == 1:
        yield from map(work, items)
        return
    pending: deque[Future[Result]] = deque()
    with ThreadPoolExecutor(jobs, thread_name_prefix="attention-unet") as pool:
        try:
            for item in items:
                pending.append(pool.submit(work, item))
                if len(pending) >= jobs:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


class Admission:
    """Which images run side by side: one of at most ``small`` pixels beside other such images;
    a larger one alone (it waits for those running, and those after it wait for it)."""

    def __init__(self, small: float) -> None:
        self.small = small
        self._changed = threading.Condition()
        self._running = 0
        self._alone = False  # a large image is running
        self._waiting = 0  # large images waiting to run alone (small ones let them go first)

    @contextmanager
    def admit(self, pixels: float) -> Iterator[None]:
        alone = pixels > self.small
        with self._changed:
            self._waiting += alone
            self._changed.wait_for(lambda: self._running == 0 if alone else not (self._alone or self._waiting))
            self._waiting -= alone
            self._running += 1
            self._alone = alone
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._alone = False
                self._changed.notify_all()
