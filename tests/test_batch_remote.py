"""`index --remote`: tasks run on Immich-compatible /predict services, with failover, behind nginx too.

Real HTTP on 127.0.0.1: two /predict servers (the project's `serve`), nginx in front when it is
installed, one server killed mid-run; the index must still complete with exactly the results of an undisturbed run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from hailo_immich_cli.testkit.loopback import free_port
from hailo_immich_cli.testkit.photos import make_library
from tests.helpers.batch import dump, model_env, processed_count, rows

REPO = Path(__file__).resolve().parent.parent
TASKS = "faces,clip,ocr"


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def start_server(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    full = {**os.environ, **env, "PYTHONPATH": str(REPO), "IMMICH_HOST": "127.0.0.1", "IMMICH_PORT": str(port),
            "MACHINE_LEARNING_WORKERS": "1"}
    cmd = [sys.executable, "-m", "hailo_immich_cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=full, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping")
    except TimeoutError:
        proc.kill()
        raise AssertionError(f"server on {port} did not start:\n{log.read_text()[-3000:]}")
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


NGINX_CONF = """\
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 16m;
    upstream hailo_immich {{
        least_conn;
        server 127.0.0.1:{a} max_fails=1 fail_timeout=30s;
        server 127.0.0.1:{b} max_fails=1 fail_timeout=30s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://hailo_immich;
            proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;
            proxy_next_upstream_tries 2;
            proxy_connect_timeout 2s;
            proxy_read_timeout 300s;
            proxy_request_buffering on;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def env(cpu_models, tmp_path_factory) -> dict[str, str]:
    return model_env(tmp_path_factory.mktemp("models"), Path(cpu_models.models_dir), buffalo_stand_in=True)


@pytest.fixture(scope="module")
def library(photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("remote-lib")
    return root, make_library(root, photos, count=40)


def run_index(root: Path, db: Path, remote: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "hailo_immich_cli", "index", str(root), "--db", str(db), "--tasks", TASKS,
                           "--remote", remote, "--no-progress"], cwd=REPO, env=full, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_remote_index_with_failover_between_urls(env, library, tmp_path):
    root, manifest = library
    a, b, dead = free_port(), free_port(), free_port()
    server_a = start_server(a, env, tmp_path / "a.log")
    server_b = start_server(b, env, tmp_path / "b.log")
    try:
        reference = tmp_path / "ref.db"
        proc = run_index(root, reference, f"http://127.0.0.1:{b}", env)
        assert proc.returncode == 1, proc.stderr  # the two corrupt files
        n = len(manifest["images"]) + len(manifest["signs"])
        assert rows(reference, "SELECT count(*) FROM files WHERE status = 'ok'") == [(n,)]
        keys = dict(rows(reference, "SELECT task, model_id FROM processed GROUP BY task"))
        assert keys == {"clip": "ViT-B-32__openai@remote", "faces": "buffalo_l@remote+buffalo_l@remote",
                        "ocr": "PP-OCRv5_mobile@remote+PP-OCRv5_mobile@remote"}
        face = rows(reference, "SELECT backend, recognizer, length(embedding), landmarks FROM faces LIMIT 1")[0]
        assert face == ("remote", "buffalo_l@remote", 2048, None)  # Immich's answer has no landmarks
        # A dead URL first in the list: every request fails over to the live ones; the results are the same.
        failover = tmp_path / "failover.db"
        proc = run_index(root, failover, f"http://127.0.0.1:{dead},http://127.0.0.1:{a},http://127.0.0.1:{b}", env)
        assert proc.returncode == 1, proc.stderr
        assert dump(failover) == dump(reference)
        # Search with the same remote model.
        full = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, "-m", "hailo_immich_cli", "search", str(reference), "--like", manifest["images"][2],
                              "--remote", f"http://127.0.0.1:{a}", "--json", "-k", "1"],
                             cwd=REPO, env=full, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["results"][0]["path"] == manifest["images"][2]
    finally:
        stop(server_a)
        stop(server_b)


@pytest.mark.slow
def test_remote_index_behind_nginx_survives_a_killed_server(env, library, tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx); the multi-URL failover test still runs")
    root, manifest = library
    a, b, port = free_port(), free_port(), free_port()
    server_a = start_server(a, env, tmp_path / "a.log")
    server_b = start_server(b, env, tmp_path / "b.log")
    ngx_dir = tmp_path / "nginx"
    ngx_dir.mkdir()
    conf = ngx_dir / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the temp dirs pytest made 0700
    conf.write_text(NGINX_CONF.format(user=user, dir=ngx_dir, a=a, b=b, port=port))
    ngx = subprocess.Popen([nginx, "-p", str(ngx_dir), "-c", str(conf), "-g", "daemon off;"],
                           stdout=subprocess.DEVNULL, stderr=(ngx_dir / "stderr.log").open("wb"), start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping")
        reference = tmp_path / "ref.db"
        assert run_index(root, reference, f"http://127.0.0.1:{b}", env).returncode == 1

        db = tmp_path / "nginx.db"
        full = {**os.environ, **env, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
        index = subprocess.Popen([sys.executable, "-m", "hailo_immich_cli", "index", str(root), "--db", str(db), "--tasks", TASKS,
                                  "--remote", f"http://127.0.0.1:{port}", "--no-progress"],
                                 cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        total = rows(reference, "SELECT count(*) FROM processed")[0][0]
        deadline = time.monotonic() + 300
        while processed_count(db) < total // 4 and index.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        stop(server_a, signal.SIGKILL)  # one backend dies mid-run
        assert index.poll() is None, "the kill must land mid-run: " + index.communicate()[1][-3000:]
        out, err = index.communicate(timeout=900)
        assert index.returncode == 1, err  # only the two corrupt files
        assert rows(db, "SELECT count(*) FROM files WHERE status = 'failed'") == [(2,)]
        assert dump(db) == dump(reference)
        log = (ngx_dir / "access.log").read_text()
        assert "POST /predict" in log
    finally:
        stop(ngx)
        stop(server_a)
        stop(server_b)


def test_predict_request_is_built_like_immichs(tmp_path):
    """Multipart body as Immich's server sends it: `entries` first, then the image as file part "blob"."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from hailo_immich_cli.batch.remote import PredictClient, entries_for
    from hailo_immich_cli.errors import BadInputError, DeviceError

    seen: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        status = 200

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.headers["Content-Type"], body))
            self.send_response(Handler.status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"clip":"[0.5,0.5]","imageHeight":2,"imageWidth":3}')

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = PredictClient([f"http://127.0.0.1:{server.server_port}"], rounds=1)
        body, url = client.predict(entries_for("clip", "ViT-B-32__openai"), image=b"\xff\xd8JPEGBYTES")
        assert body["clip"] == "[0.5,0.5]" and url.endswith(str(server.server_port))
        ctype, raw = seen[0]
        boundary = ctype.split("boundary=")[1].encode()
        parts = [p for p in raw.split(b"--" + boundary) if p.strip(b"\r\n-")]
        assert b'name="entries"' in parts[0] and b'{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}' in parts[0]
        assert b'name="image"; filename="blob"' in parts[1] and b"Content-Type: application/octet-stream" in parts[1]
        assert parts[1].rstrip(b"\r\n").endswith(b"\xff\xd8JPEGBYTES")
        assert entries_for("faces", "buffalo_l") == {"facial-recognition": {
            "detection": {"modelName": "buffalo_l", "options": {"minScore": 0.7}}, "recognition": {"modelName": "buffalo_l"}}}
        Handler.status = 422  # every URL refuses the input: the file's problem
        with pytest.raises(BadInputError):
            client.predict(entries_for("clip", "x"), image=b"x")
        Handler.status = 500  # a server failure: the run must stop, not mark files failed
        with pytest.raises(DeviceError):
            client.predict(entries_for("clip", "x"), image=b"x")
    finally:
        server.shutdown()
