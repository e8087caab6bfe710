"""The process heap: buffers reused while requests come, memory given back when they stop.

glibc hands a buffer above its mmap threshold (at most 32 MB, raised only as such buffers are
freed) to mmap and unmaps it on free, so the next request faults the same pages in again, one
4 KiB page at a time. The OCR detector's activations (~100 MB per preview with ONNX Runtime's
arena off, as in Immich's CPU image) paid that on every run: 26k page faults, a quarter of the
detector's time. `tune_allocator` serves every buffer from one heap that keeps what is freed
(one arena, so the request threads share it, and mmap and trim thresholds at KEEP_BYTES): the
detector went from 126 to 101 ms a run. The price is that a busy process holds its working set;
`maybe_trim` returns it with malloc_trim once no request has ended for IDLE_TRIM_S, and right after
a request with a large image. Without glibc (musl, macOS) these are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource
import sys
import threading
import time

log = logging.getLogger("hailo_immich.memory")

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
# One arena: a request thread's own arena (glibc's default, up to 8 per core) is made of 64 MB
# heaps, too small for a detector's buffers, which went back to mmap.
ARENA_MAX = 1
# Buffers up to this size come from the heap, and this much freed memory may stay at its top.
KEEP_BYTES = 1 << 30
# Trim once this long has passed without a request ending: the server has gone idle.
IDLE_TRIM_S = 5.0
# After a large request, trim at once and again this much later (buffers freed while answering).
TRIM_AGAIN_AFTER_S = 1.0
# Requests whose decoded image is at least this large trim the heap when they end.
TRIM_AFTER_PIXELS = 4_000_000

_libc: ctypes.CDLL | None = None
_trim_lock = threading.Lock()
_trim_due: float | None = None
_tuned: bool | None = None


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            lib.malloc_trim  # noqa: B018  (only glibc has it)
            lib.mallopt
            _libc = lib
        except (OSError, AttributeError):
            _libc = None
    return _libc


def tune_allocator() -> bool:
    """Apply the heap policy above once per process (before worker threads start); True if glibc took it.

    A glibc too old to accept a threshold over 32 MB keeps its own thresholds: slower, still correct.
    """
    global _tuned
    if _tuned is None:
        libc = _glibc()
        _tuned = libc is not None and all(
            libc.mallopt(param, value) == 1
            for param, value in ((_M_ARENA_MAX, ARENA_MAX), (_M_MMAP_THRESHOLD, KEEP_BYTES), (_M_TRIM_THRESHOLD, KEEP_BYTES))
        )
        if not _tuned:
            log.debug("heap policy not applied (not glibc, or a glibc that refused it): large buffers are mapped per use")
    return _tuned


def policy() -> dict[str, object]:
    """What /health says of the heap: whether glibc took the policy, and when memory is given back."""
    return {"reuse_freed_buffers": bool(_tuned), "trim_after_idle_s": IDLE_TRIM_S, "trim_after_pixels": TRIM_AFTER_PIXELS}


def request_ended(pixels: int, in_flight: int) -> None:
    """A request finished: after a large one trim now; with none left in flight, trim when idle."""
    global _trim_due
    if in_flight:
        return
    if pixels >= TRIM_AFTER_PIXELS:
        _trim_due = time.monotonic() + TRIM_AGAIN_AFTER_S
        trim()
    else:
        _trim_due = time.monotonic() + IDLE_TRIM_S


def maybe_trim() -> None:
    """Called periodically (the HTTP loop's tick): a trim that has come due, in a thread of its own."""
    global _trim_due
    if _trim_due is not None and time.monotonic() >= _trim_due:
        _trim_due = None
        threading.Thread(target=trim, name="malloc-trim", daemon=True).start()


def trim() -> None:
    """Return freed heap memory to the OS (one trim at a time; concurrent callers skip)."""
    libc = _glibc()
    if libc is None or not _trim_lock.acquire(blocking=False):
        return
    try:
        libc.malloc_trim(0)
    finally:
        _trim_lock.release()


def rss_bytes() -> tuple[int, int]:
    """(current, peak) resident set size of this process, in bytes."""
    current = peak = 0
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    current = int(line.split()[1]) * 1024
                elif line.startswith(b"VmHWM:"):
                    peak = int(line.split()[1]) * 1024
    except OSError:
        pass
    if not peak:
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return current or peak, peak
