"""Run a parsed /predict plan through the tasks of the registry and build the response body.

Knows nothing about HTTP. Each task runs its own pipeline (imported on first use, so the server
starts and answers /ping even if one of them cannot be imported) and writes its own JSON value.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hailo_immich_cli.imaging import DecodedImage
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


def host_path_for(session: SessionManager) -> str:
    """exact or fast, from HAILO_IMMICH_HOST_PATH and the active backend (auto: fast on hailo)."""
    from hailo_immich_cli import host_path

    return host_path.resolve(session.settings.host_path, session.active_backend)


def decode_request(session: SessionManager, plan: Plan, data: bytes, max_pixels: int, host_path: str) -> DecodedImage:
    """The request's image, decoded once for all its tasks, as `host_path.decode` says."""
    from hailo_immich_cli import host_path as paths

    stages = [(session.recipes.get(entry.recipe_id), entry.options) for entry in plan.entries]
    return paths.decode(data, stages, host_path, max_pixels)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def run_plan(
    session: SessionManager,
    plan: Plan,
    image: DecodedImage | None,
    text: str | None,
    host_path: str = "exact",
) -> Outcome:
    """Run every task of the plan on the image, decoded once for all of them (or on the text), and
    serialise the answer. Exact: Pillow steps get the decoder's own image, array steps one shared
    array. Fast: every step works on the (reduced) array; pixel results are mapped to full size."""
    results: dict[str, Any] = {}
    outcome = Outcome(b"")
    tasks = by_immich_task()
    for task in plan.tasks:
        start = time.perf_counter()
        results[task] = tasks[task].serve(session, plan, image, text, outcome, host_path)
        outcome.timings_ms[task] = _ms(start)
    start = time.perf_counter()
    size = (image.width, image.height) if image is not None else None
    outcome.body = protocol.response_json(results, size)
    outcome.timings_ms["serialise"] = _ms(start)
    return outcome
