"""A real `hailo-immich serve` (gunicorn) on loopback, asked the way Immich's server asks.

Requests are built by `hailo_immich_cli.testkit.requests.immich_form` (undici's multipart encoding).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import requests

from hailo_immich_cli.testkit.loopback import free_port
from hailo_immich_cli.testkit.requests import immich_form

REPO = Path(__file__).resolve().parent.parent.parent


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
        """The server's log so far: a /health call first writes the lines its loop batches."""
        if self.alive():
            try:
                requests.get(self.url + "/health", timeout=10)
            except requests.RequestException:
                pass  # a stopping or stalled server: read what it wrote
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
        try:
            loader = server.get("/health").json()["loader"]
        except Exception:  # never leave a started server behind
            stop_server(server)
            raise
        if loader["state"] in ("ready", "partial"):
            break
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"models did not load within {timeout} s:\n{server.log()}")
        time.sleep(0.1)
    return server


def ping_latencies(url: str, count: int, pause: float = 0.0, timeout: float = 5) -> list[float]:
    """Seconds per `/ping`, sorted, each on a fresh connection as Immich's availability probe makes it."""
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        r = requests.get(url + "/ping", timeout=timeout)
        latencies.append(time.perf_counter() - start)
        assert r.content == b"pong"
        time.sleep(pause)
    return sorted(latencies)


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
