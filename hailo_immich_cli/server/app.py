"""The WSGI app (Bottle): Immich's `/`, `/ping`, `/predict`, plus `/health` and `/metrics`.

Statuses and bodies follow the official service (FastAPI-style JSON errors, 405 with `allow`);
typed errors from the layers below become one status each, in `_error_answer`. Every /predict
writes one log line: tasks, models and backends, status, timings.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

import bottle

from hailo_immich_cli import __version__, memory
from hailo_immich_cli.errors import (
    BackendUnavailableError,
    BadInputError,
    DeviceError,
    HailoImmichError,
    ImageTooLargeError,
    ModelCorruptError,
    ModelMismatchError,
    ModelMissingError,
    UnknownModelError,
)
from hailo_immich_cli.imaging import DecodedImage, header_pixels
from hailo_immich_cli.models.resolve import default_placement
from hailo_immich_cli.server import logs, protocol
from hailo_immich_cli.server.jsonfmt import NonFiniteError, dumps
from hailo_immich_cli.server.multipart import BODY_KEY, Part, split_form
from hailo_immich_cli.server.predict import Outcome, decode_request, host_path_for, run_plan
from hailo_immich_cli.server.protocol import JSON_TYPE, TEXT_TYPE, ProtocolError
from hailo_immich_cli.server.state import BusyError, ServerState

log = logging.getLogger("hailo_immich.server")

ROOT_BODY = b'{"message":"Immich ML"}'
# Request bodies up to this size stay in memory (Bottle spools larger ones, and large parts, to a
# temporary file). Immich's previews are a few hundred KB; this keeps them off the disk.
IN_MEMORY_BODY_BYTES = 8 * 1024 * 1024


class _ImageDecodeError(Exception):
    """Undecodable image bytes: the official service answers 500 for these."""


def _answer(status: int, body: bytes, content_type: str, reason: str | None = None, headers: dict[str, str] | None = None) -> bytes:
    bottle.response.status = f"{status} {reason}" if reason else status
    bottle.response.content_type = content_type
    for name, value in (headers or {}).items():
        bottle.response.set_header(name, value)
    return body


def _detail(status: int, detail: Any, headers: dict[str, str] | None = None) -> bytes:
    return _answer(status, dumps({"detail": detail}), JSON_TYPE, headers=headers)


def _error_answer(exc: BaseException) -> tuple[int, bytes, str, str | None, dict[str, str]]:
    """One place mapping errors to (status, body, content type, reason, headers)."""
    if isinstance(exc, ProtocolError):
        return exc.status, exc.body, exc.content_type, exc.reason, {}
    if isinstance(exc, BusyError):
        return 503, dumps({"detail": f"busy: {exc}"}), JSON_TYPE, None, {"Retry-After": "1"}
    if isinstance(exc, ImageTooLargeError):
        return 413, dumps({"detail": str(exc)}), JSON_TYPE, None, {}
    if isinstance(exc, _ImageDecodeError):
        return 500, dumps({"detail": f"cannot decode the image: {exc}"}), JSON_TYPE, None, {}
    if isinstance(exc, (ModelMissingError, ModelCorruptError, ModelMismatchError)):
        return 500, dumps({"detail": f"Failed to load model: {exc}"}), JSON_TYPE, None, {}
    if isinstance(exc, UnknownModelError):
        return 500, dumps({"detail": str(exc)}), JSON_TYPE, None, {}
    if isinstance(exc, (DeviceError, BackendUnavailableError)):
        return 503, dumps({"detail": f"device error: {exc}"}), JSON_TYPE, None, {}
    if isinstance(exc, NonFiniteError):
        return 500, dumps({"detail": f"model output is not finite: {exc}"}), JSON_TYPE, None, {}
    if isinstance(exc, BadInputError):
        return 400, dumps({"detail": str(exc)}), JSON_TYPE, None, {}
    if isinstance(exc, HailoImmichError):
        return 500, dumps({"detail": str(exc)}), JSON_TYPE, None, {}
    return 500, b"Internal Server Error", TEXT_TYPE, None, {}


def _form_text(forms: bottle.FormsDict, name: str) -> str | None:
    if name not in forms:
        return None
    value = forms.getunicode(name, encoding="utf-8")
    if value is None:  # not valid UTF-8
        raise ProtocolError.detail(422, f"form field '{name}' is not valid UTF-8")
    return value


def create_app(state: ServerState) -> bottle.Bottle:
    bottle.BaseRequest.MEMFILE_MAX = max(bottle.BaseRequest.MEMFILE_MAX, min(IN_MEMORY_BODY_BYTES, state.settings.max_request_bytes))
    app = bottle.Bottle(catchall=True)

    def not_allowed(allow: str) -> Callable[..., bytes]:
        def handler(*_: Any, **__: Any) -> bytes:
            return _detail(405, "Method Not Allowed", headers={"allow": allow})

        return handler

    @app.get("/")
    def root() -> bytes:
        return _answer(200, ROOT_BODY, JSON_TYPE)

    @app.get("/ping")
    def ping() -> bytes:
        return _answer(200, b"pong", TEXT_TYPE)

    @app.get("/health")
    def health() -> bytes:
        logs.flush_kept()  # whoever checks health also sees the log up to this moment
        # default=str: backend info may carry values JSON has no type for (paths, enums); never a 500 here
        return _answer(200, json.dumps(health_report(state), default=str, separators=(",", ":")).encode(), JSON_TYPE)

    @app.get("/metrics")
    def metrics() -> bytes:
        session = state.session
        backends = {rid: m.provenance.backend for rid, m in session.loaded().items()}
        try:
            fallback = int(session.fallback_reason is not None)
        except HailoImmichError:
            fallback = 0
        rss, peak = memory.rss_bytes()
        gauges = {
            "models_loaded": len(backends),
            "cpu_fallback": fallback,
            "request_slots": state.gate.slots,
            "max_queue": state.gate.max_queue,
            "resident_memory_bytes": rss,
            "resident_memory_peak_bytes": peak,
            "pixels_in_flight": state.gate.pixels_in_flight,
            **_http_gauges(state),
        }
        text = state.metrics.render(session.stats(), backends, gauges)
        return _answer(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")

    @app.post("/predict")
    def predict() -> bytes:
        return _predict(state)

    for path, allow in (("/", "GET"), ("/ping", "GET"), ("/health", "GET"), ("/metrics", "GET"), ("/predict", "POST")):
        if allow == "GET":
            app.route(path, method="HEAD", callback=not_allowed(allow))
        app.route(path, method="ANY", callback=not_allowed(allow))

    @app.error(404)
    def not_found(_: bottle.HTTPError) -> bytes:
        bottle.response.content_type = JSON_TYPE
        return b'{"detail":"Not Found"}'

    @app.error(405)
    def method_not_allowed(_: bottle.HTTPError) -> bytes:
        bottle.response.content_type = JSON_TYPE
        return b'{"detail":"Method Not Allowed"}'

    @app.error(500)
    def internal(err: bottle.HTTPError) -> bytes:
        if err.exception is not None:
            log.error("unhandled error: %s", err.exception, exc_info=err.exception)
        bottle.response.content_type = TEXT_TYPE
        return b"Internal Server Error"

    return app


def _read_request(state: ServerState) -> tuple[str | None, bytes | None, str | None]:
    """(entries, image bytes, text) from the form, with the body size bounded before reading it."""
    request = bottle.request
    limit = state.settings.max_request_bytes
    if request.content_length > limit:
        raise ProtocolError.detail(413, f"request body of {request.content_length} bytes is over the {limit}-byte limit")
    if request.content_length < 0 and "chunked" in request.get_header("Transfer-Encoding", "").lower():
        raise ProtocolError.detail(411, "send a Content-Length (chunked uploads are not accepted)")
    body = request.environ.get(BODY_KEY)
    form = split_form(body, request.content_type, bottle.BaseRequest.MEMFILE_MAX) if body is not None else None
    if form is not None:
        return _from_parts(form)
    try:
        forms, files = request.forms, request.files
    except bottle.HTTPError as exc:
        raise ProtocolError.detail(400, "There was an error parsing the body") from exc
    except (ValueError, IndexError, KeyError, UnicodeError) as exc:
        raise ProtocolError.detail(400, "There was an error parsing the body") from exc
    for name in ("entries", "text"):
        spooled = files.get(name)
        if name not in forms and spooled is not None and not spooled.raw_filename:
            # Bottle moves a plain field over its in-memory limit to a file part: it is too large, not missing.
            raise ProtocolError.detail(413, f"form field '{name}' is larger than the {bottle.BaseRequest.MEMFILE_MAX}-byte limit for a field")
    entries = _form_text(forms, "entries")
    upload = files.get("image")
    if upload is None and "image" in forms:
        # The official service fails on a plain (non-file) `image` field.
        raise ProtocolError.detail(500, "'image' must be a file part (with a filename), not a plain form field")
    image = upload.file.read() if upload is not None else None
    text = _form_text(forms, "text")
    return entries, image, (text if text else None)


def _from_parts(form: dict[str, Part]) -> tuple[str | None, bytes | None, str | None]:
    """What `_read_request` answers, from a form split by `split_form` (same rules, no Bottle parse)."""
    entries, image, text = form.get("entries"), form.get("image"), form.get("text")
    if image is not None and image.filename is None:
        raise ProtocolError.detail(500, "'image' must be a file part (with a filename), not a plain form field")
    text_value = text.data.decode("utf-8") if text is not None and text.filename is None else None
    return (entries.data.decode("utf-8") if entries is not None and entries.filename is None else None,
            image.data if image is not None else None,
            text_value or None)


def _predict(state: ServerState) -> bytes:
    start = time.perf_counter()
    tasks_label = "unparsed"
    path_field = ""  # the host path of an image request, for the log line
    models = ""
    timings: dict[str, float] = {}
    status = 500
    pixels = 0
    error: BaseException | None = None
    try:
        entries, image, text = _read_request(state)
        plan = state.plans(entries)
        tasks_label = "+".join(plan.tasks) or "none"
        models = ",".join(plan.recipe_ids)
        protocol.check_inputs(plan, image is not None, text is not None)
        pixels = min(header_pixels(image), state.settings.max_image_pixels) if image else 0
        path = host_path_for(state.session) if image is not None else "exact"
        path_field = f" path={path}" if image is not None else ""
        outcome = _infer(state, plan, image, text, pixels, path, timings)
        timings.update(outcome.timings_ms)
        if outcome.backends:
            models = ",".join(f"{rid}@{backend}" for rid, backend in outcome.backends.items())
        if outcome.notes:
            models += " " + " ".join(outcome.notes)
        status = 200
        return _answer(200, outcome.body, JSON_TYPE)
    except Exception as exc:  # every failure becomes a clean answer; the next request is unaffected
        status, body, content_type, reason, headers = _error_answer(exc)
        error = exc
        return _answer(status, body, content_type, reason, headers)
    finally:
        elapsed = time.perf_counter() - start
        state.metrics.record(tasks_label, status, elapsed)
        _log_request(status, tasks_label + path_field, models, elapsed, timings, error)
        error = None  # its traceback holds the decoded image
        memory.request_ended(pixels, state.gate.running)  # the last request of a burst gives memory back


def _infer(state: ServerState, plan: protocol.Plan, image: bytes | None, text: str | None, pixels: int, path: str, timings: dict[str, float]) -> Outcome:
    """Decode once for all the plan's tasks and run them inside the gate; the decoded image lives only in this frame."""
    with state.gate.slot(pixels) as waited:
        timings["queue"] = round(waited * 1000, 2)
        decoded: DecodedImage | None = None
        if image is not None:
            t0 = time.perf_counter()
            try:
                decoded = decode_request(state.session, plan, image, state.settings.max_image_pixels, path)
            except ImageTooLargeError:
                raise
            except BadInputError as exc:
                raise _ImageDecodeError(str(exc)) from exc
            timings["decode"] = round((time.perf_counter() - t0) * 1000, 2)
        protocol.check_dependencies(plan)
        return run_plan(state.session, plan, decoded, text, path)


_EXPECTED = (ProtocolError, BusyError, _ImageDecodeError, BadInputError)


def _log_request(status: int, tasks: str, models: str, elapsed: float, timings: dict[str, float], error: BaseException | None) -> None:
    """The one line per /predict: status, tasks, models@backend, timings, and why it failed."""
    parts = " ".join(f"{k}={v}ms" for k, v in timings.items())
    line = f"POST /predict {status} tasks={tasks} models={models or '-'} total={elapsed * 1000:.1f}ms {parts}".rstrip()
    if error is None:
        log.info(line)
        return
    reason = error.body.decode("utf-8", "replace") if isinstance(error, ProtocolError) else f"{type(error).__name__}: {error}"
    unexpected = not isinstance(error, (*_EXPECTED, HailoImmichError))
    level = logging.WARNING if isinstance(error, _EXPECTED) else logging.ERROR
    log.log(level, "%s error=%s", line, reason[:500], exc_info=error if unexpected else None)


def health_report(state: ServerState) -> dict[str, Any]:
    """Backend and device per model, runtime versions, recipes, counters, and any CPU fallback, loudly."""
    session = state.session
    report: dict[str, Any] = {"status": "ok", "version": __version__}
    try:
        info = session.health()
    except HailoImmichError as exc:
        info = {"error": str(exc)}
        report["status"] = "error"
    fallback = info.get("fallback_reason")
    if fallback:
        report["status"] = "degraded"
        report["warning"] = (
            f"RUNNING ON CPU, NOT ON THE HAILO NPU: {fallback}. Set HAILO_IMMICH_BACKEND=hailo to make this an error."
        )
    if state.loader.state in ("pending", "loading"):
        report["status"] = "loading" if report["status"] == "ok" else report["status"]
    elif state.loader.errors and report["status"] == "ok":
        report["status"] = "degraded"
    report.update(info)
    report["recipes"] = {
        rid: {"task": m.recipe.task, "backend": m.provenance.backend, "immich_names": list(m.recipe.immich_names)}
        for rid, m in sorted(session.loaded().items())
    }
    if state.off_backend:
        report["off_backend"] = dict(state.off_backend)
        if report["status"] == "ok":
            report["status"] = "degraded"
    report["placement"] = [row.as_dict() for row in default_placement(session)]
    report["loader"] = state.loader.as_dict()
    report["model_names_policy"] = state.settings.model_names_policy
    try:
        report["host_path"] = {"setting": state.settings.host_path, "path": host_path_for(session)}
    except HailoImmichError as exc:
        report["host_path"] = {"setting": state.settings.host_path, "path": None, "error": str(exc)}
    rss, peak = memory.rss_bytes()
    settings = state.settings
    report["server"] = {
        "request_threads": state.gate.slots,
        "max_queue": state.gate.max_queue,
        "max_request_bytes": settings.max_request_bytes,
        "max_image_pixels": settings.max_image_pixels,
        "max_inflight_pixels": state.gate.max_pixels,
        "pixels_in_flight": state.gate.pixels_in_flight,
        "header_timeout_s": settings.header_timeout_s,
        "min_upload_bytes_per_s": settings.min_upload_bytes_per_s,
        "rss_bytes": rss,
        "peak_rss_bytes": peak,
        "heap": memory.policy(),
        "uptime_s": round(time.time() - state.started, 1),
        **state.metrics.snapshot(),
    }
    http = state.http_stats
    if http is not None:
        report["server"]["connections"] = {
            "open": http.open,
            "buffered_bytes": http.buffered_bytes,
            "dropped": dict(http.dropped),
            "refused_busy": http.rejected_buffer + http.rejected_threads,
        }
    return report


def _http_gauges(state: ServerState) -> dict[str, int]:
    """The HTTP loop's counters as /metrics gauges (absent when the app runs under another server)."""
    http = state.http_stats
    if http is None:
        return {}
    gauges = {"connections_open": http.open, "request_buffered_bytes": http.buffered_bytes}
    for reason, count in sorted(http.dropped.items()):
        gauges[f"connections_dropped_{reason}_total"] = count
    return gauges
