"""A real `hailo-immich serve` (gunicorn) on loopback, and requests built exactly like Immich's server.

Immich's server posts with Node's fetch + FormData (undici): `entries` first, then either a file
part `image` (filename "blob", application/octet-stream) or a plain `text` field.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import requests
from PIL import Image

REPO = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def immich_form(entries: Mapping[str, Any] | str | None, image: bytes | None = None, text: str | None = None) -> tuple[bytes, str]:
    """(body, content type) of the multipart request Immich's server sends (undici's encoding)."""
    boundary = "----formdata-undici-0" + "".join(random.choice("0123456789") for _ in range(11))
    parts: list[bytes] = []
    if entries is not None:
        value = entries if isinstance(entries, str) else json.dumps(entries, separators=(",", ":"))
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="entries"\r\n\r\n'.encode() + value.encode() + b"\r\n")
    if image is not None:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="blob"\r\nContent-Type: application/octet-stream\r\n\r\n'
        parts.append(head.encode() + image + b"\r\n")
    if text is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\n'.encode() + text.encode() + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


@dataclass
class ImmichServer:
    """A running server; `predict` posts like Immich, `get` for the other routes."""

    url: str
    process: subprocess.Popen
    log_path: Path
    http: requests.Session

    def predict(self, entries: Mapping[str, Any] | str | None, image: bytes | None = None, text: str | None = None, timeout: float = 120) -> requests.Response:
        body, content_type = immich_form(entries, image, text)
        headers = {"content-type": content_type, "accept": "*/*", "accept-language": "*", "user-agent": "node"}
        return self.http.post(self.url + "/predict", data=body, headers=headers, timeout=timeout)

    def get(self, path: str, timeout: float = 10) -> requests.Response:
        return self.http.get(self.url + path, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


def start_server(tmp_dir: Path, env_overrides: Mapping[str, str], wait_models: bool = True, timeout: float = 120) -> ImmichServer:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAILO_IMMICH_", "MACHINE_LEARNING_", "IMMICH_"))}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "HAILO_IMMICH_BACKEND": "cpu",
            "IMMICH_HOST": "127.0.0.1",
            "IMMICH_PORT": str(port),
            "MACHINE_LEARNING_REQUEST_THREADS": "2",
            "MACHINE_LEARNING_MODEL_INTRA_OP_THREADS": "1",
            "NO_COLOR": "1",
            "COLUMNS": "240",
        }
    )
    env.update(env_overrides)
    log_path = tmp_dir / f"server-{port}.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "hailo_immich_cli", "serve"],
        cwd=str(REPO),
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = ImmichServer(f"http://127.0.0.1:{port}", process, log_path, requests.Session())
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if server.get("/ping", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"server did not answer /ping within {timeout} s:\n{server.log()}")
        time.sleep(0.1)
    while wait_models:
        loader = server.get("/health").json()["loader"]
        if loader["state"] in ("ready", "partial"):
            break
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"models did not load within {timeout} s:\n{server.log()}")
        time.sleep(0.1)
    return server


def stop_server(server: ImmichServer) -> None:
    """SIGTERM to the gunicorn master we started (its own process group), then wait."""
    server.http.close()
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)


def link_models(source: Path, target: Path) -> Path:
    """A models dir whose recipe folders are links to the fetched real ones, so a test can add its own beside them."""
    target.mkdir(parents=True, exist_ok=True)
    for child in Path(source).iterdir():
        if child.is_dir():
            (target / child.name).symlink_to(child)
    return target
