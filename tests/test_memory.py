"""The heap policy (hailo_immich_cli.memory): buffers reused while busy, memory returned when idle.

Each case runs in a fresh interpreter: the policy is process-wide and must be applied before
threads allocate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the policy is glibc's (Linux)")

PROBE = textwrap.dedent("""
    import ctypes, json, resource, sys, threading, time
    from hailo_immich_cli import memory

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    tuned = memory.tune_allocator() if sys.argv[1] == "tuned" else False
    MB = 2**20

    def rss():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))

    out = {"tuned": tuned}

    def requests():  # a request thread's model run: one 120 MB malloc'd buffer, written, then freed
        faults = []
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            buf = libc.malloc(120 * MB)
            ctypes.memset(buf, 1, 120 * MB)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            libc.free(buf)
        out["faults"] = faults
        out["rss_after"] = rss()

    t = threading.Thread(target=requests)
    t.start(); t.join()
    memory.IDLE_TRIM_S = 0  # the server has been idle long enough
    memory.request_ended(0, 0)
    memory.maybe_trim()
    time.sleep(0.5)
    out["rss_idle"] = rss()
    print(json.dumps(out))
""")


def _probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_freed_buffer_is_reused_while_busy_and_returned_when_idle():
    untuned, tuned = _probe("plain"), _probe("tuned")
    if not tuned["tuned"]:
        pytest.skip("this C library refused the heap policy (not glibc, or too old)")
    pages = 120 * 2**20 // 4096
    # glibc's default maps a buffer this large afresh for every request: every page faults again
    assert min(untuned["faults"][1:]) > 0.9 * pages
    # the policy serves the next request's buffer from the freed one: (almost) no new faults
    assert max(tuned["faults"][1:]) < 0.1 * pages
    assert tuned["rss_after"] > tuned["rss_idle"] + 100 * 2**20  # kept while busy ...
    assert tuned["rss_idle"] < untuned["rss_after"] + 30 * 2**20  # ... and given back once idle


def test_the_policy_is_applied_once_and_reports_the_same_answer():
    from hailo_immich_cli import memory

    first = memory.tune_allocator()
    assert memory.tune_allocator() is first
