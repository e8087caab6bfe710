"""Run a parsed /predict plan through the task pipelines and build the response body.

Knows the pipelines and the protocol's serialisers, nothing about HTTP. Pipelines are imported on
first use so the server starts (and answers /ping) even if one of them cannot be imported.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hailo_immich_cli.imaging import DecodedImage
from hailo_immich_cli.server import protocol
from hailo_immich_cli.server.protocol import Plan
from hailo_immich_cli.session import SessionManager


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
    for task in plan.tasks:
        start = time.perf_counter()
        if task == "clip":
            results[task] = _clip(session, plan, image, text, outcome, host_path)
        elif task == "facial-recognition":
            results[task] = _faces(session, plan, image, outcome, host_path)
        elif task == "ocr":
            results[task] = _ocr(session, plan, image, outcome, host_path)
        outcome.timings_ms[task] = _ms(start)
    start = time.perf_counter()
    size = (image.width, image.height) if image is not None else None
    outcome.body = protocol.response_json(results, size)
    outcome.timings_ms["serialise"] = _ms(start)
    return outcome


def _pixels(image: DecodedImage, host_path: str) -> Any:
    """What Pillow-based steps take: the decoder's image on the exact path, else the array."""
    return image.pil if host_path == "exact" and image.pil is not None else image.rgb


def _clip(session: SessionManager, plan: Plan, image: DecodedImage | None, text: str | None, outcome: Outcome, host_path: str) -> str:
    from hailo_immich_cli import clip

    visual = plan.get("clip", "visual")
    if image is not None and visual is not None:
        emb = clip.encode_images(session, [_pixels(image, host_path)], model=visual.recipe_id, host_path=host_path)
    else:
        textual = plan.get("clip", "textual")
        assert textual is not None and text is not None  # protocol.check_inputs guarantees it
        emb = clip.encode_texts(session, [text], model=textual.recipe_id)
    outcome.backends[emb.provenance.recipe_id] = emb.provenance.backend
    return protocol.clip_json(emb.vectors[0])


def full_size_faces(faces: list[Any], factor: float) -> list[Any]:
    """Faces found on a reduced decode, with boxes and landmarks in full-resolution pixels."""
    if factor == 1.0:
        return faces
    return [dataclasses.replace(f, box=tuple(float(v) * factor for v in f.box), landmarks=(f.landmarks * np.float32(factor)))
            for f in faces]


def _faces(session: SessionManager, plan: Plan, image: DecodedImage | None, outcome: Outcome, host_path: str) -> list[dict[str, Any]]:
    from hailo_immich_cli import faces

    det = plan.get("facial-recognition", "detection")
    rec = plan.get("facial-recognition", "recognition")
    assert det is not None and rec is not None and image is not None
    result = faces.analyze_faces(
        session,
        image.rgb,
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
    return protocol.faces_json(full_size_faces(result.faces, image.reduction))


def _ocr(session: SessionManager, plan: Plan, image: DecodedImage | None, outcome: Outcome, host_path: str) -> dict[str, Any]:
    from hailo_immich_cli import ocr

    det = plan.get("ocr", "detection")
    rec = plan.get("ocr", "recognition")
    assert det is not None and rec is not None and image is not None
    min_rec = rec.options.get("minScore")
    if min_rec is None:
        min_rec = float(session.recipes.get(rec.recipe_id).postprocess.get("min_score", protocol.IMMICH_DEFAULT_OCR_MIN_REC_SCORE))
    # The pipeline keeps every recognised line (threshold -1); the protocol filters with strict >,
    # so "nothing detected" and "all filtered out" keep their distinct official key orders.
    # Boxes are answered normalised by the decoded size, so a reduced decode needs no mapping.
    result = ocr.read_text(
        session,
        _pixels(image, host_path),
        detector=det.recipe_id,
        recognizer=rec.recipe_id,
        min_det_score=det.options.get("minScore"),
        max_resolution=det.options.get("maxResolution"),
        min_rec_score=-1.0,
        host_path=host_path,
    )
    outcome.backends[result.detector.recipe_id] = result.detector.backend
    outcome.backends[result.recognizer.recipe_id] = result.recognizer.backend
    # Lines in the official service's order when the pipeline can tell it (its sort quirk included);
    # each line keeps its own box score (the official service misaligns them, see protocol.ocr_json).
    official_order = getattr(ocr, "immich_response_order", None)
    lines = [line for line, _ in official_order(result)] if official_order is not None else list(result.lines)
    return protocol.ocr_json(lines, result.width, result.height, min_rec)
