"""Request counters and latency histograms, rendered as Prometheus text (no client library needed).

Per-model device and host time come from the SessionManager's own counters, so the numbers a user
scrapes are the same ones /health and the batch reports show.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any, Mapping

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum += seconds


class Metrics:
    """Thread-safe counters for the HTTP side; the session supplies the model side."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = defaultdict(Histogram)
        self.queue_depth = 0
        self.in_flight = 0
        self.rejected_busy = 0

    def record(self, task: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(task, str(status))] += 1
            self.latency[task].observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": {f"{t} {s}": n for (t, s), n in sorted(self.requests.items())},
                "queue_depth": self.queue_depth,
                "in_flight": self.in_flight,
                "rejected_busy": self.rejected_busy,
            }

    def adjust(self, queue: int = 0, in_flight: int = 0, rejected: int = 0) -> None:
        with self._lock:
            self.queue_depth += queue
            self.in_flight += in_flight
            self.rejected_busy += rejected

    def render(self, model_stats: Mapping[str, Mapping[str, Any]], model_backends: Mapping[str, str], state: Mapping[str, float]) -> str:
        lines: list[str] = []
        add = lines.append
        with self._lock:
            add("# HELP hailo_immich_requests_total HTTP requests by task and status.")
            add("# TYPE hailo_immich_requests_total counter")
            for (task, status), n in sorted(self.requests.items()):
                add(f"hailo_immich_requests_total{_labels(task=task, status=status)} {n}")
            add("# HELP hailo_immich_request_duration_seconds Request latency by task.")
            add("# TYPE hailo_immich_request_duration_seconds histogram")
            for task, hist in sorted(self.latency.items()):
                for bound, count in zip(BUCKETS, hist.counts):
                    add(f"hailo_immich_request_duration_seconds_bucket{_labels(task=task, le=repr(bound))} {count}")
                add(f"hailo_immich_request_duration_seconds_bucket{_labels(task=task, le='+Inf')} {hist.total}")
                add(f"hailo_immich_request_duration_seconds_sum{_labels(task=task)} {hist.sum:.6f}")
                add(f"hailo_immich_request_duration_seconds_count{_labels(task=task)} {hist.total}")
            gauges = {
                "hailo_immich_queue_depth": ("Predict requests waiting for an inference slot.", self.queue_depth),
                "hailo_immich_in_flight": ("Predict requests running.", self.in_flight),
            }
            rejected = self.rejected_busy
        for name, (help_text, value) in gauges.items():
            add(f"# HELP {name} {help_text}")
            add(f"# TYPE {name} gauge")
            add(f"{name} {value}")
        add("# HELP hailo_immich_rejected_busy_total Predict requests refused because the queue was full.")
        add("# TYPE hailo_immich_rejected_busy_total counter")
        add(f"hailo_immich_rejected_busy_total {rejected}")
        for name, value in state.items():
            add(f"# TYPE hailo_immich_{name} gauge")
            add(f"hailo_immich_{name} {value}")
        per_model = (
            ("model_calls_total", "calls", "counter", 1.0, "Model runs (batches)."),
            ("model_items_total", "items", "counter", 1.0, "Items (images, crops, texts) run."),
            ("model_errors_total", "errors", "counter", 1.0, "Failed model runs."),
            ("model_device_seconds_total", "device_ms", "counter", 0.001, "Time inside the backend's run call."),
            ("model_host_seconds_total", "host_ms", "counter", 0.001, "Pre/post-processing time on the host."),
            ("model_load_seconds", "load_ms", "gauge", 0.001, "Time spent loading the model."),
        )
        for metric, key, kind, scale, help_text in per_model:
            add(f"# HELP hailo_immich_{metric} {help_text}")
            add(f"# TYPE hailo_immich_{metric} {kind}")
            for recipe_id, stats in sorted(model_stats.items()):
                labels = _labels(model=recipe_id, backend=model_backends.get(recipe_id, "unloaded"))
                value = stats.get(key, 0) * scale
                add(f"hailo_immich_{metric}{labels} {value:.6g}" if scale != 1.0 else f"hailo_immich_{metric}{labels} {value:g}")
        return "\n".join(lines) + "\n"
