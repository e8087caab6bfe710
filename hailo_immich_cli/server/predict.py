"""Run a parsed /predict plan through the tasks of the registry and build the response body.

Knows nothing about HTTP. Each task runs its own pipeline (imported on first use, so the server
starts and answers /ping even if one of them cannot be imported) and writes its own JSON value.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hailo_immich_cli.server import protocol
from hailo_immich_cli.server.protocol import Plan
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.tasks import by_immich_task


@dataclass
class Outcome:
    body: bytes
    timings_ms: dict[str, float] = field(default_factory=dict)
    backends: dict[str, str] = field(default_factory=dict)  # recipe id -> backend that ran it
    notes: list[str] = field(default_factory=list)  # anything the request log line must mention


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def run_plan(
    session: SessionManager,
    plan: Plan,
    rgb: np.ndarray | None,
    size: tuple[int, int] | None,
    text: str | None,
) -> Outcome:
    """Run every task of the plan on the decoded image (or the text) and serialise the answer."""
    results: dict[str, Any] = {}
    outcome = Outcome(b"")
    tasks = by_immich_task()
    for task in plan.tasks:
        start = time.perf_counter()
        results[task] = tasks[task].serve(session, plan, rgb, text, outcome)
        outcome.timings_ms[task] = _ms(start)
    start = time.perf_counter()
    outcome.body = protocol.response_json(results, size if rgb is not None else None)
    outcome.timings_ms["serialise"] = _ms(start)
    return outcome
