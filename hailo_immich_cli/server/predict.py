"""Run a parsed /predict plan through the task pipelines and build the response body.

Knows the pipelines and the protocol's serialisers, nothing about HTTP. Pipelines are imported on
first use so the server starts (and answers /ping) even if one of them cannot be imported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hailo_immich_cli.server import protocol
from hailo_immich_cli.server.protocol import Plan
from hailo_immich_cli.session import SessionManager


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
    for task in plan.tasks:
        start = time.perf_counter()
        if task == "clip":
            results[task] = _clip(session, plan, rgb, text, outcome)
        elif task == "facial-recognition":
            results[task] = _faces(session, plan, rgb, outcome)
        elif task == "ocr":
            results[task] = _ocr(session, plan, rgb, outcome)
        outcome.timings_ms[task] = _ms(start)
    start = time.perf_counter()
    outcome.body = protocol.response_json(results, size if rgb is not None else None)
    outcome.timings_ms["serialise"] = _ms(start)
    return outcome


def _clip(session: SessionManager, plan: Plan, rgb: np.ndarray | None, text: str | None, outcome: Outcome) -> str:
    from hailo_immich_cli import clip

    visual = plan.get("clip", "visual")
    if rgb is not None and visual is not None:
        emb = clip.encode_images(session, [rgb], model=visual.recipe_id)
    else:
        textual = plan.get("clip", "textual")
        assert textual is not None and text is not None  # protocol.check_inputs guarantees it
        emb = clip.encode_texts(session, [text], model=textual.recipe_id)
    outcome.backends[emb.provenance.recipe_id] = emb.provenance.backend
    return protocol.clip_json(emb.vectors[0])


def _faces(session: SessionManager, plan: Plan, rgb: np.ndarray | None, outcome: Outcome) -> list[dict[str, Any]]:
    from hailo_immich_cli import faces

    det = plan.get("facial-recognition", "detection")
    rec = plan.get("facial-recognition", "recognition")
    assert det is not None and rec is not None and rgb is not None
    result = faces.analyze_faces(
        session,
        rgb,
        detector=det.recipe_id,
        recognizer=rec.recipe_id,
        min_score=det.options.get("minScore"),
        embed=True,
    )
    outcome.backends[result.detector.recipe_id] = result.detector.backend
    if result.truncated:  # the recipe's max_faces bound; the official service has none
        outcome.notes.append(f"faces_dropped={result.truncated}")
    if result.recognizer is not None:
        outcome.backends[result.recognizer.recipe_id] = result.recognizer.backend
    return protocol.faces_json(result.faces)


def _ocr(session: SessionManager, plan: Plan, rgb: np.ndarray | None, outcome: Outcome) -> dict[str, Any]:
    from hailo_immich_cli import ocr

    det = plan.get("ocr", "detection")
    rec = plan.get("ocr", "recognition")
    assert det is not None and rec is not None and rgb is not None
    min_rec = rec.options.get("minScore")
    requested = det.options.get("maxResolution")
    if requested is None:
        requested = int(session.recipes.get(det.recipe_id).preprocess.get("max_resolution", 736))
    height, width = rgb.shape[:2]
    max_resolution, lowered = protocol.bounded_ocr_resolution(requested, width, height, session.settings.ocr_max_resolution)
    if lowered:
        outcome.notes.append(lowered)
    if min_rec is None:
        min_rec = float(session.recipes.get(rec.recipe_id).postprocess.get("min_score", protocol.IMMICH_DEFAULT_OCR_MIN_REC_SCORE))
    # The pipeline keeps every recognised line (threshold -1); the protocol filters with strict >,
    # so "nothing detected" and "all filtered out" keep their distinct official key orders.
    result = ocr.read_text(
        session,
        rgb,
        detector=det.recipe_id,
        recognizer=rec.recipe_id,
        min_det_score=det.options.get("minScore"),
        max_resolution=max_resolution,
        min_rec_score=-1.0,
    )
    outcome.backends[result.detector.recipe_id] = result.detector.backend
    outcome.backends[result.recognizer.recipe_id] = result.recognizer.backend
    # Lines in the official service's order when the pipeline can tell it (its sort quirk included);
    # each line keeps its own box score (the official service misaligns them, see protocol.ocr_json).
    official_order = getattr(ocr, "immich_response_order", None)
    lines = [line for line, _ in official_order(result)] if official_order is not None else list(result.lines)
    return protocol.ocr_json(lines, result.width, result.height, min_rec)
