"""Ctrl-C and SIGTERM on the real CLI in a subprocess: exit 130/143, one line, a database a re-run completes.

Before, Ctrl-C in `index`'s first seconds printed a traceback (during imports) or died with SIGABRT
("terminate called without an active exception": ONNX Runtime threads still running while the
interpreter tore down).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hailo_immich_cli.testkit.photos import make_library
from tests.helpers.batch import model_env, processed_count, rows

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TASKS = "faces,ocr"
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@pytest.fixture(scope="module")
def env(cpu_models, tmp_path_factory) -> dict[str, str]:
    return {**model_env(tmp_path_factory.mktemp("models"), Path(cpu_models.models_dir)), "NO_COLOR": "1", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def library(photos, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("library")
    return root, make_library(root, photos, count=30, max_side=256)


def start(args: list[str], env: dict[str, str], stdout=subprocess.DEVNULL) -> subprocess.Popen:
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "hailo_immich_cli", *args], cwd=REPO, env=full_env,
                            stdout=stdout, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen, signum: int) -> tuple[int, str]:
    """Send the signal, wait (bounded) and return (exit status, stderr)."""
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the command did not stop within 60 s of the signal")
    return proc.returncode, err


def assert_clean_stop(code: int, err: str, signum: int) -> None:
    assert code == EXIT[signum], f"exit {code}\n{err}"
    assert "Traceback" not in err and "terminate called" not in err, err
    assert err.strip().splitlines()[-1] == "interrupted", err


def assert_usable(db: Path) -> None:
    if db.exists():
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()


def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def interrupt_mid_run(args: list[str], env: dict[str, str], db: Path, signum: int, stdout=subprocess.DEVNULL) -> None:
    """Start the command, signal it once it has committed results of its own, and check it stopped cleanly.

    Rows an earlier interrupted run left do not count: signalling on those would hit the new process
    before Python has even installed a handler.
    """
    before = processed_count(db)
    proc = start(args, env, stdout)
    wait_for(lambda: processed_count(db) > before or proc.poll() is not None, 120)
    assert proc.poll() is None, "the run ended before it could be interrupted mid-run"
    assert_clean_stop(*stop(proc, signum), signum)
    assert_usable(db)


def test_index_stops_cleanly_on_sigint_at_any_point_and_a_rerun_completes(env, library, tmp_path):
    root, manifest = library
    db = tmp_path / "index.db"
    args = ["index", str(root), "--db", str(db), "--tasks", TASKS, "--no-progress"]
    for delay in (0.6, 1.2, 2.5):  # start-up (imports take ~2 s), model loading, the first batches
        proc = start(args, env)
        time.sleep(delay)
        assert_clean_stop(*stop(proc, signal.SIGINT), signal.SIGINT)
        assert_usable(db)
    interrupt_mid_run(args, env, db, signal.SIGINT)
    assert rows(db, "SELECT status FROM runs ORDER BY id DESC LIMIT 1") == [("interrupted",)]
    interrupted_at = processed_count(db)

    done = start(args, env)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 1, err  # the library's corrupt files fail: said, and the exit status says so
    assert manifest["corrupt"][0] in err
    expected = manifest["images"] + list(manifest["signs"].values())
    status = dict(rows(db, "SELECT path, status FROM files"))
    assert all(status[p] == "ok" for p in expected)
    n_contents = rows(db, "SELECT count(DISTINCT hash) FROM files WHERE status = 'ok'")[0][0]
    assert processed_count(db) == 2 * n_contents > interrupted_at
    assert rows(db, "SELECT status FROM runs ORDER BY id DESC LIMIT 1") == [("completed",)]


def test_index_stops_cleanly_on_sigterm_with_143(env, library, tmp_path):
    root, _ = library
    db = tmp_path / "index.db"
    interrupt_mid_run(["index", str(root), "--db", str(db), "--tasks", TASKS, "--no-progress"], env, db, signal.SIGTERM)
    assert rows(db, "SELECT status FROM runs ORDER BY id DESC LIMIT 1") == [("interrupted",)]


@pytest.mark.parametrize("command", ["detect", "embed", "ocr"])
def test_per_image_commands_stop_cleanly_mid_run(env, library, tmp_path, command):
    root, _ = library
    db = tmp_path / f"{command}.db"
    # The library four times over: enough work that results are committed (every 2 s) well before the end.
    printed = tmp_path / "stdout.jsonl"
    with printed.open("w") as out:
        interrupt_mid_run([command, *[str(root)] * 4, "--db", str(db), "--jsonl"], env, db, signal.SIGINT, out)
    # Results are committed every 2 s; what was read after the last commit is committed on the way out.
    assert rows(db, "SELECT status FROM runs ORDER BY id DESC LIMIT 1") == [("interrupted",)]
    records = [json.loads(line) for line in printed.read_text().splitlines() if line.strip()]
    shown = {str(Path(r.get("file") or r.get("path")).resolve()) for r in records if not r.get("error")}
    stored = {path for (path,) in rows(db, "SELECT path FROM files WHERE status = 'ok'")}
    assert shown and shown <= stored, sorted(shown - stored)[:5]


def test_bench_stops_cleanly_while_threads_run_the_models(env, tmp_path):
    proc = start(["bench", "--task", "ocr", "--threads", "2", "--duration", "30", "--mode", "e2e"], env)
    time.sleep(6)
    assert proc.poll() is None
    assert_clean_stop(*stop(proc, signal.SIGTERM), signal.SIGTERM)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_shuts_down_cleanly_on_a_signal(cpu_models, tmp_path, signum):
    from tests.helpers.immich_server import start_server, stop_server

    server = start_server(tmp_path, {"HAILO_IMMICH_MODELS_DIR": str(cpu_models.models_dir)})
    try:
        server.process.send_signal(signum)
        code = server.process.wait(timeout=30)
    finally:
        stop_server(server)
    log = server.log()
    assert code == 0, log  # gunicorn's graceful shutdown
    assert "models released" in log and "Traceback" not in log and "terminate called" not in log
