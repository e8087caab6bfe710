"""Give memory back after large requests, and say how much the process holds.

A 9000x9000 image is a 243 MB RGB array plus the decoder's blocks and resized copies. glibc keeps
freed memory in its arenas (by default up to 8 per core, for the request threads), so after a
burst the RSS stayed at the burst's level. At most ARENA_MAX arenas, and malloc_trim after the
last large request of a burst (and once more a second later), return it. A fixed, low mmap
threshold would return large buffers at once too, but made every decode and inference fault its
pages in again: CLIP visual and face requests ran at 0.6x. Without glibc (musl, macOS) these are
no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource
import sys
import threading
import time

log = logging.getLogger("hailo_immich.server")

# mallopt parameter (malloc.h)
_M_ARENA_MAX = -8
# Arenas glibc may create for the request threads (default 8 per core): each keeps its own freed memory.
ARENA_MAX = 2
# After the last large request, trim again this much later: buffers the request threads free
# while answering are returned too.
TRIM_AGAIN_AFTER_S = 1.0
# Requests whose decoded image is at least this large trim the heap when they end.
TRIM_AFTER_PIXELS = 4_000_000

_libc: ctypes.CDLL | None = None
_trim_lock = threading.Lock()
_trim_due: float | None = None


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
    """At most ARENA_MAX malloc arenas; True if the allocator took the setting."""
    libc = _glibc()
    if libc is None:
        return False
    return libc.mallopt(_M_ARENA_MAX, ARENA_MAX) == 1


def trim_after_large_request() -> None:
    """Trim now, and once more a moment later (see maybe_trim)."""
    global _trim_due
    _trim_due = time.monotonic() + TRIM_AGAIN_AFTER_S
    trim()


def maybe_trim() -> None:
    """Called periodically (the HTTP loop's tick): the delayed second trim, in a thread of its own."""
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
