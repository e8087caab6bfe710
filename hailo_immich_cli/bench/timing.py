"""Small measurement tools shared by `bench` (local) and the `--url` load tester.

A timed loop with warm-up and a bound in both time and count, latency percentiles, and a
description of the host, so every number we print says where it came from.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hailo_immich_cli import __version__


def percentiles_ms(latencies_s: list[float] | np.ndarray) -> dict[str, float | None]:
    """p50/p95/p99/mean/min/max in milliseconds (None when nothing was measured)."""
    values = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    if values.size == 0:
        return {k: None for k in ("p50", "p95", "p99", "mean", "min", "max")}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "mean": round(float(values.mean()), 3),
        "min": round(float(values.min()), 3),
        "max": round(float(values.max()), 3),
    }


@dataclass
class LoopResult:
    """What one timed loop measured: per-call latencies and how many items the calls handled."""

    calls: int = 0
    items: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def items_per_s(self) -> float:
        return self.items / self.wall_s if self.wall_s > 0 else 0.0


def timed_loop(
    work: Callable[[], int],
    threads: int = 1,
    duration_s: float | None = 5.0,
    count: int | None = None,
    classify_error: Callable[[BaseException], str] | None = None,
) -> LoopResult:
    """Call `work` from `threads` threads until `duration_s` passes or `count` calls have started.

    `work` returns how many items it handled (images, frames, requests). An exception counts as
    an error under the label `classify_error` gives it (default: the exception type) and is not
    timed. At least one bound must be given, so a loop can never run forever.
    """
    if duration_s is None and count is None:
        raise ValueError("give a duration, a count, or both")
    threads = max(1, int(threads))
    result = LoopResult()
    lock = threading.Lock()
    started = 0
    classify = classify_error or (lambda exc: type(exc).__name__)
    deadline: float = 0.0

    def claim() -> bool:
        nonlocal started
        with lock:
            if count is not None and started >= count:
                return False
            if duration_s is not None and time.perf_counter() >= deadline:
                return False
            started += 1
            return True

    def worker() -> None:
        while claim():
            t0 = time.perf_counter()
            try:
                items = work()
            except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the loop
                label = classify(exc)
                with lock:
                    result.errors[label] = result.errors.get(label, 0) + 1
                continue
            elapsed = time.perf_counter() - t0
            with lock:
                result.calls += 1
                result.items += int(items)
                result.latencies_s.append(elapsed)

    start = time.perf_counter()
    deadline = start + (duration_s if duration_s is not None else 0.0)
    pool = [threading.Thread(target=worker, name=f"bench-{i}", daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    result.wall_s = time.perf_counter() - start
    return result


def loop_summary(result: LoopResult) -> dict[str, Any]:
    return {
        "calls": result.calls,
        "items": result.items,
        "errors": dict(sorted(result.errors.items())),
        "wall_s": round(result.wall_s, 4),
        "calls_per_s": round(result.calls_per_s, 3),
        "items_per_s": round(result.items_per_s, 3),
        "latency_ms": percentiles_ms(result.latencies_s),
    }


def _cpuinfo() -> tuple[str | None, int | None]:
    """CPU model name and physical core count from /proc/cpuinfo (Linux), else (None, None)."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return None, None
    model = None
    cores: set[tuple[str, str]] = set()
    phys = core = None
    try:
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key in ("model name", "Model", "Hardware") and model is None and value:
                model = value
            elif key == "physical id":
                phys = value
            elif key == "core id":
                core = value
            elif not line.strip():
                if core is not None:
                    cores.add((phys or "0", core))
                phys = core = None
        if core is not None:
            cores.add((phys or "0", core))
    except OSError:
        return None, None
    return model, (len(cores) or None)


def _mem_total_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def host_info() -> dict[str, Any]:
    """The host a measurement ran on: CPU model, cores, memory, OS, Python."""
    model, physical = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "cores_logical": os.cpu_count(),
        "cores_physical": physical,
        "cores_usable": usable,
        "machine": platform.machine(),
        "memory_mib": _mem_total_mib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
    }


def parse_int_list(text: str | None, name: str, default: list[int]) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8]; every value must be a positive integer."""
    from hailo_immich_cli.errors import BadInputError

    if text is None or not str(text).strip():
        return list(default)
    values = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise BadInputError(f"{name}: '{part}' is not an integer (expected e.g. 1,2,4,8)") from None
        if value < 1:
            raise BadInputError(f"{name}: values must be >= 1, got {value}")
        if value not in values:
            values.append(value)
    if not values:
        raise BadInputError(f"{name}: give at least one value")
    return values


def report_header(kind: str, schema_version: int, started: datetime) -> dict[str, Any]:
    """The fields every bench report opens with (local and --url alike), so the JSON schema stays one."""
    return {
        "schema_version": schema_version,
        "kind": kind,
        "tool": {"name": "hailo-immich", "version": __version__},
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
