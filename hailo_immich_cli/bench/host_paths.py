"""Host CPU per /predict image request, exact vs fast host path.

On the NPU the models cost the host almost nothing, so decode, resize, post-processing and the JSON
answer set the pace. This measures exactly that for one encoded image: the server's own request
steps (`host_path.decode` + `server.predict.run_plan`, HTTP aside), one request at a time, timed
with the process's CPU clock (OpenCV may use helper threads). CPU spent inside `session.run` (the
device call: on an emulated Hailo the double's twin and quantisation) is reported apart and not
counted as host time. On the cpu backend ONNX Runtime's threads may keep spinning after a call, so
there the host figure is an upper bound.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

from hailo_immich_cli import host_path as paths
from hailo_immich_cli.models.recipes import Recipe
from hailo_immich_cli.server.predict import run_plan
from hailo_immich_cli.server.protocol import Entry, Plan
from hailo_immich_cli.tasks import by_name

def image_steps(task: str) -> list[tuple[str, str]]:
    """(Immich model type, recipe task) of an image request of the registry task `task`."""
    owner = by_name()[task]
    return [(type_, rt) for type_, rt in owner.steps.items() if type_ not in owner.text_types]


def request_plan(task: str, stages: Mapping[str, Recipe]) -> Plan:
    """The parsed /predict entries of one Immich image request for `task`, run by the given recipes."""
    key = by_name()[task].immich_task
    return Plan(tuple(Entry(key, type_, stages[rt].id, stages[rt].id) for type_, rt in image_steps(task)))


class DeviceClock:
    """Counts the process CPU time spent inside `session.run` (the device call)."""

    def __init__(self, session: Any):
        self.seconds = 0.0
        self._run = session.run
        session.run = self._timed  # this session only; bench sessions are private to one measurement

    def _timed(self, recipe_id: str, feeds: Any) -> Any:
        start = time.process_time()
        try:
            return self._run(recipe_id, feeds)
        finally:
            self.seconds += time.process_time() - start


def _found(task: str, body: bytes) -> int:
    owner = by_name()[task]
    return owner.answer_count(json.loads(body)[owner.immich_task])


def measure(session: Any, task: str, stages: Mapping[str, Recipe], data: bytes, path: str, *,
            count: int = 30, warmup: int = 3) -> dict[str, Any]:
    """One request at a time, `count` times: host CPU ms (mean, p50, min), device-call CPU, wall."""
    plan = request_plan(task, stages)
    pipeline = [(stages[rt], {}) for _, rt in image_steps(task)]
    clock = DeviceClock(session)
    max_pixels = session.settings.max_image_pixels
    host, device, wall = [], [], []
    found = 0
    decoded_size = None
    for i in range(warmup + count):
        cpu0, dev0, wall0 = time.process_time(), clock.seconds, time.perf_counter()
        decoded = paths.decode(data, pipeline, path, max_pixels)
        outcome = run_plan(session, plan, decoded, None, path)
        cpu, dev = time.process_time() - cpu0, clock.seconds - dev0
        if i >= warmup:
            host.append((cpu - dev) * 1000)
            device.append(dev * 1000)
            wall.append((time.perf_counter() - wall0) * 1000)
        found = _found(task, outcome.body)
        decoded_size = "x".join(str(v) for v in decoded.size)
    return {
        "task": task,
        "host_path": path,
        "recipes": {t: r.id for t, r in stages.items()},
        "calls": count,
        "image": f"{decoded.width}x{decoded.height}",
        "decoded": decoded_size,
        "found": found,
        "host_cpu_ms": {"mean": round(statistics.fmean(host), 2), "p50": round(statistics.median(host), 2), "min": round(min(host), 2)},
        "device_call_cpu_ms": round(statistics.fmean(device), 2),
        "wall_ms_p50": round(statistics.median(wall), 2),
    }


def compare(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task: fast vs exact host CPU (p50) as a ratio measured in the same run."""
    by = {(c["task"], c["host_path"]): c for c in cells}
    out = []
    for task in dict.fromkeys(c["task"] for c in cells):
        exact, fast = by.get((task, "exact")), by.get((task, "fast"))
        if exact and fast and fast["host_cpu_ms"]["p50"]:
            out.append({"task": task, "exact_ms": exact["host_cpu_ms"]["p50"], "fast_ms": fast["host_cpu_ms"]["p50"],
                        "exact_over_fast": round(exact["host_cpu_ms"]["p50"] / fast["host_cpu_ms"]["p50"], 2)})
    return out


# ---- fast vs exact agreement ------------------------------------------------------------------
def _answer(session: Any, task: str, stages: Mapping[str, Recipe], data: bytes, path: str) -> dict[str, Any]:
    pipeline = [(stages[rt], {}) for _, rt in image_steps(task)]
    decoded = paths.decode(data, pipeline, path, session.settings.max_image_pixels)
    return json.loads(run_plan(session, request_plan(task, stages), decoded, None, path).body)


def agreement(session: Any, task: str, stages: Mapping[str, Recipe], data: bytes) -> dict[str, Any]:
    """How far the fast path's answer is from the exact one for one image (`Task.path_agreement`)."""
    owner = by_name()[task]
    exact, fast = (_answer(session, task, stages, data, p)[owner.immich_task] for p in ("exact", "fast"))
    return owner.path_agreement(exact, fast)
