"""Idle cores for a lone request: work split over threads pays only when nothing else heavy runs.

On a 2-core host a request alone leaves a core idle during its single-threaded steps, and ONNX
Runtime's intra-op threads scale poorly on small operators (the OCR recogniser: 192 ms on two
threads, 122 ms as two single-threaded runs on halves of its batch). Heavy steps (model runs on the
CPU, Pillow passes) say they run with `claim()`; a step that finds nothing else running may split
itself over `pool()`. Under concurrent requests the cores are busy anyway and nothing splits.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

MAX_THREADS = 4  # beyond this, handing work out costs more than the cores give back on these steps

_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
_RUNNING = 0  # heavy steps running now, in any thread

R = TypeVar("R")


def usable() -> int:
    """Cores this process may use (its CPU affinity), at most MAX_THREADS."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return max(1, min(count, MAX_THREADS))


def pool() -> ThreadPoolExecutor:
    """The helper threads a split step hands its other parts to (the caller does the first)."""
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(1, usable() - 1), thread_name_prefix="split")
        return _POOL


@contextmanager
def claim() -> Iterator[int]:
    """Mark a heavy step as running; yields the threads it may split into: every usable core
    when nothing else heavy runs, else 1."""
    global _RUNNING
    with _LOCK:
        alone = _RUNNING == 0
        _RUNNING += 1
    try:
        yield usable() if alone else 1
    finally:
        with _LOCK:
            _RUNNING -= 1


def fan_out(calls: Sequence[Callable[[], R]]) -> list[R]:
    """The parts of a split step: the first runs here, the others on `pool()`; their results in
    order, returned (or the first failure raised) only once every part has ended."""
    later = [pool().submit(call) for call in calls[1:]]
    try:
        first = calls[0]()
    finally:
        wait(later)
    return [first] + [f.result() for f in later]
