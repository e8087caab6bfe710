"""The /predict protocol served from the hailo backend (EMULATED: the hailo_platform test double).

A real HTTP server on loopback runs the project's Bottle app over a SessionManager whose hailo
backend drives the double. The SCRFD-10GF detector (the HEF that serves Immich's buffalo_l detection
on a Hailo host) has a twin that plants one known face, so the reply's box, score and embedding are
checked against what was planted, in Immich's exact JSON shape.
"""

from __future__ import annotations

import json
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
import pytest
import requests

from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.server.app import create_app
from hailo_immich_cli.server.state import ServerState
from hailo_immich_cli.testkit.hailo_emulation import make_hailo_session
from hailo_immich_cli.testkit.requests import immich_form, jpeg

FACES = {"facial-recognition": {"detection": {"modelName": "buffalo_l", "options": {"minScore": 0.5}},
                                "recognition": {"modelName": "buffalo_l"}}}


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def _planted_session(tmp_path):
    from hailo_immich_cli.testkit.face_models import planted_hailo_face, scrfd_hailo_twin

    book = RecipeBook.load()
    det, rec = book.get("scrfd-10g-hailo8"), book.get("arcface-mobilefacenet-hailo8")
    face = planted_hailo_face()
    twin, calibration = scrfd_hailo_twin(det, [face])
    session = make_hailo_session([det, rec], {det.id: twin}, tmp_path, book=book, calibration={det.id: calibration})
    return session, face


@pytest.fixture
def served(hailo_double, tmp_path):
    session, face = _planted_session(tmp_path)
    servers = {}

    def start(policy: str):
        state = ServerState(session.settings.with_overrides(model_names_policy=policy), session=session, env={})
        httpd = make_server("127.0.0.1", 0, create_app(state), server_class=_ThreadingServer, handler_class=_QuietHandler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers[policy] = httpd
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start, face
    for httpd in servers.values():
        httpd.shutdown()
    session.close()


def post(url: str, entries, image: bytes) -> requests.Response:
    body, content_type = immich_form(entries, image=image)
    return requests.post(url + "/predict", data=body, headers={"content-type": content_type}, timeout=60)


def test_faces_from_the_emulated_hailo_in_immichs_shape(served):
    start, face = served
    # buffalo_l detection runs on the SCRFD-10GF HEF by default; the Hailo ArcFace reproduces no
    # Immich recogniser, so serving it for buffalo_l needs 'ignore'
    url = start("ignore")
    rgb = np.random.default_rng(0).integers(0, 256, (640, 640, 3), dtype=np.uint8)
    reply = post(url, FACES, jpeg(rgb, quality=95))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert list(body) == ["facial-recognition", "imageHeight", "imageWidth"]
    assert (body["imageHeight"], body["imageWidth"]) == (640, 640)
    [found] = body["facial-recognition"]
    assert list(found) == ["boundingBox", "embedding", "score"]
    box = [found["boundingBox"][k] for k in ("x1", "y1", "x2", "y2")]
    assert all(float(v).is_integer() for v in box)
    np.testing.assert_allclose(box, np.round(face.box), atol=1.0)
    assert found["score"] == pytest.approx(0.9, abs=0.01)
    assert len(json.loads(found["embedding"])) == 512
    health = requests.get(url + "/health", timeout=10).json()
    text = json.dumps(health)
    assert "scrfd-10g-hailo8" in text and "arcface-mobilefacenet-hailo8" in text and "emulated" in text


def test_strict_policy_refuses_a_pack_the_hailo_does_not_reproduce(served):
    start, _ = served
    url = start("strict")
    reply = post(url, FACES, jpeg(np.zeros((64, 64, 3), np.uint8)))
    assert reply.status_code >= 400, reply.text  # Immich then tries its next ML URL instead of storing foreign vectors
    assert "buffalo_l" in reply.text
    assert requests.get(url + "/ping", timeout=5).text == "pong"
