"""Run index tasks on Immich-compatible /predict services (this project's `serve`, or Immich's own).

Requests are built the way Immich's server builds them (one multipart request per task: `entries`
first, then the image as a file part named "blob"), answers are parsed back into the pipeline
dataclasses. Requests rotate over the URLs; a URL that fails is skipped for a while and the request
is retried on the next one. Results are stored under `<Immich model name>@remote`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any, Sequence

import cv2
import numpy as np
import requests

from hailo_immich_cli.backends.base import Provenance
from hailo_immich_cli.batch.engines import Item, ItemResult
from hailo_immich_cli.batch.store import ModelInfo, TaskOutput
from hailo_immich_cli.clip.task import TASK as CLIP
from hailo_immich_cli.clip.task import text_entries
from hailo_immich_cli.errors import BadInputError, DeviceError
from hailo_immich_cli.faces.task import TASK as FACES
from hailo_immich_cli.server.jsonfmt import embedding_from_json
from hailo_immich_cli.tasks import by_name

IMMICH_PREVIEW_SIDE = 1440  # Immich sends previews whose shorter side is 1440 px
RETRY_AFTER_S = 10.0


def entries_for(task: str, name: str) -> dict[str, Any]:
    """The `entries` JSON Immich's server sends for a task (its default options)."""
    return by_name()[task].remote_entries(name)


def remote_provenance(name: str, url: str) -> Provenance:
    return Provenance(recipe_id=name, backend="remote", model_sha256="remote", device=url, runtime="immich /predict")


class PredictClient:
    """POST /predict over several URLs: round robin, failover to the next URL, unhealthy URLs rested."""

    def __init__(self, urls: Sequence[str], timeout: float = 300.0, rounds: int = 3, pause_s: float = 1.0):
        if not urls:
            raise BadInputError("--remote needs at least one URL")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise BadInputError(f"--remote: '{url}' is not an http(s) URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout = timeout
        self.rounds, self.pause_s = rounds, pause_s  # a lone URL behind a balancer gets a second chance
        self._next = itertools.count()
        self._down_until: dict[str, float] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self.failovers = 0

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _order(self) -> list[str]:
        start = next(self._next) % len(self.urls)
        ring = self.urls[start:] + self.urls[:start]
        now = time.monotonic()
        with self._lock:
            healthy = [u for u in ring if self._down_until.get(u, 0) <= now]
        return healthy + [u for u in ring if u not in healthy]

    def predict(self, entries: dict[str, Any], image: bytes | None = None, text: str | None = None) -> tuple[dict[str, Any], str]:
        parts: list[tuple[str, tuple]] = [("entries", (None, json.dumps(entries, separators=(",", ":"))))]
        if image is not None:
            parts.append(("image", ("blob", image, "application/octet-stream")))
        else:
            parts.append(("text", (None, text or "")))
        errors: list[str] = []
        for attempt in range(self.rounds):
            if attempt:
                time.sleep(self.pause_s * attempt)
            rejected = 0
            for url in self._order():
                try:
                    resp = self._session().post(url + "/predict", files=parts, timeout=(5, self.timeout))
                    if resp.ok:
                        with self._lock:
                            self._down_until.pop(url, None)
                        return resp.json(), url
                    errors.append(f"{url}: HTTP {resp.status_code} {resp.text[:200]}")
                    if 400 <= resp.status_code < 500:
                        rejected += 1
                except (requests.RequestException, ValueError) as exc:
                    errors.append(f"{url}: {exc.__class__.__name__}: {exc}")
                with self._lock:
                    self._down_until[url] = time.monotonic() + RETRY_AFTER_S
                    self.failovers += 1
            if rejected == len(self.urls):  # every service refused this input: the file's problem, not theirs
                raise BadInputError("; ".join(errors[-len(self.urls):]))
        raise DeviceError("every /predict URL failed: " + "; ".join(errors[-len(self.urls):]))


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise BadInputError("cannot encode the image for /predict")
    return buf.tobytes()


class RemoteEngine:
    """The indexer's engine when the models run behind /predict."""

    def __init__(self, urls: Sequence[str], tasks: Sequence[str], names: dict[str, str | None] | None = None):
        self.client = PredictClient(urls)
        self.tasks = tuple(tasks)
        names = names or {}
        self.names = {t: names.get(t) or by_name()[t].immich_default_model for t in self.tasks}
        self.concurrency = 2 * len(self.client.urls)

    def _key(self, task: str) -> str:
        mid = remote_provenance(self.names[task], "").model_id
        return by_name()[task].model_key([mid] * len(by_name()[task].indexed))

    def model_keys(self) -> dict[str, str]:
        return {t: self._key(t) for t in self.tasks}

    def models(self) -> list[ModelInfo]:
        out = []
        for task in self.tasks:
            name = self.names[task]
            out.append(ModelInfo(remote_provenance(name, "").model_id, by_name()[task].indexed[-1], name, "remote",
                                 ",".join(self.client.urls), "immich /predict", (name,), None))
        return out

    def min_side(self) -> int:
        return IMMICH_PREVIEW_SIDE

    def run(self, items: Sequence[Item]) -> list[ItemResult]:
        keys = self.model_keys()
        results = []
        for item in items:
            res = ItemResult([])
            try:
                jpeg = encode_jpeg(item.rgb)
                for name in item.tasks:
                    task = by_name()[name]
                    model = self.names[name]
                    body, url = self.client.predict(task.remote_entries(model), image=jpeg)
                    payload = task.parse_remote(body, remote_provenance(model, url))
                    res.outputs.append(TaskOutput(name, keys[name], "remote", payload, item.scale))
            except BadInputError as exc:
                res = ItemResult([], f"remote: {exc}")
            except (KeyError, TypeError, ValueError) as exc:
                res = ItemResult([], f"remote: unexpected /predict answer: {exc!r}")
            results.append(res)
        return results


class RemoteQueryEncoder:
    """Search queries encoded by the same remote model names the index used."""

    def __init__(self, urls: Sequence[str]):
        self.client = PredictClient(urls)

    @staticmethod
    def _name(info: dict[str, Any]) -> str:
        if not info["model_id"].endswith("@remote"):
            raise BadInputError(f"the index's vectors come from the local model {info['model_id']}; search without --remote")
        return info["model_id"].rsplit("@", 1)[0]

    def text(self, query: str, visual: dict[str, Any]) -> tuple[np.ndarray, str]:
        name = self._name(visual)
        body, _ = self.client.predict(text_entries(name, {}), text=query)
        return CLIP.parse_remote(body, None), visual["model_id"]

    def image(self, rgb: np.ndarray, visual: dict[str, Any]) -> tuple[np.ndarray, str]:
        name = self._name(visual)
        body, _ = self.client.predict(CLIP.remote_entries(name), image=encode_jpeg(rgb))
        return CLIP.parse_remote(body, None), visual["model_id"]

    def face(self, rgb: np.ndarray, recognizer: dict[str, Any], detector: str) -> tuple[np.ndarray, str]:
        name = self._name(recognizer)
        body, _ = self.client.predict(FACES.remote_entries(name), image=encode_jpeg(rgb))
        faces = body.get(FACES.immich_task) or []
        if not faces:
            raise BadInputError("no face found in the query image")
        best = max(faces, key=lambda f: f["score"])
        return embedding_from_json(best["embedding"]), recognizer["model_id"]
