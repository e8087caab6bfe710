#!/usr/bin/env python
"""`hailo-immich serve --backend cpu` against the official Immich ML service, side by side, one run.

Both services answer the same Immich-shaped keep-alive requests (multipart as Immich's server
sends it, 1440x1920 q80 JPEG previews made from real photos) on loopback, from the same model
cache (MACHINE_LEARNING_CACHE_FOLDER). For every request kind and concurrency the two services
take turns in short rounds (official first, then ours, then the other way round), so load from
anything else on the machine falls on both alike; the table reports total requests / total timed
seconds per service. Before timing, every preview (and search text) is sent once to each service
and the answers are compared: CLIP cosine, face boxes / scores / embeddings, OCR text.

The official service is never part of this project: point the script at a checkout of Immich's
`machine-learning/` folder and at a Python whose environment holds its dependencies, and it starts
`python -m immich_ml` from there (or give --peer-url of one already running on loopback).

    python scripts/bench_serve_peer.py --cache CACHE \\
        --peer-python /path/to/venv/bin/python --peer-dir /path/to/immich/machine-learning \\
        [--tasks clip-text,clip,faces,ocr] [--concurrency 1,4] [--rounds 3] [--round-seconds 3] [--json out.json]

Without a peer (--ours-only) it measures `serve` alone, which is also how CI smoke-tests it.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hailo_immich_cli import __version__  # noqa: E402
from hailo_immich_cli.bench.loadtest import (  # noqa: E402
    SEARCH_TEXTS,
    Client,
    LoadTest,
    Target,
    UrlOptions,
    default_model_name,
    entries_for,
)
from hailo_immich_cli.bench.timing import host_info, parse_int_list  # noqa: E402
from hailo_immich_cli.testkit.loopback import free_port  # noqa: E402
from hailo_immich_cli.testkit.requests import immich_form  # noqa: E402

TASK_LABELS = {"clip-text": "CLIP text", "clip": "CLIP visual", "faces": "faces", "ocr": "OCR"}
PREVIEW_SIZE = (1440, 1920)  # width, height of an Immich preview of a portrait photo
PREVIEW_QUALITY = 80
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CAPTIONED = ("coffee", "rocket")  # photos that also carry a printed sign, so OCR has text to read
CAPTION = ("OPEN DAILY 8 TO 18", "PHONE 0123 456 789", "NO ENTRY AFTER 19:30")
# Agreement bounds: those an Immich cache must keep between the two services.
CLIP_MIN_COSINE = 0.9999
FACE_MAX_BOX_PX = 1.0
FACE_MAX_SCORE_DIFF = 1e-4
FACE_MIN_EMBEDDING_COSINE = 0.9999


# ---- previews -----------------------------------------------------------------------------------


def cover(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale to cover `size` (width, height), then centre-crop: a full-frame preview of the photo."""
    w, h = size
    scale = max(w / rgb.shape[1], h / rgb.shape[0])
    big = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_CUBIC)
    y0, x0 = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return np.ascontiguousarray(big[y0:y0 + h, x0:x0 + w])


def add_sign(rgb: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """A light panel with dark printed lines across the middle of the photo."""
    out = rgb.copy()
    h, w = out.shape[:2]
    top, line_h = h // 2, 110
    cv2.rectangle(out, (w // 10, top), (w - w // 10, top + line_h * len(lines) + 40), (235, 235, 225), -1)
    for i, line in enumerate(lines):
        cv2.putText(out, line, (w // 10 + 30, top + 100 + i * line_h), cv2.FONT_HERSHEY_SIMPLEX, 2.2, (20, 20, 20), 5, cv2.LINE_AA)
    return out


def previews(count: int) -> list[tuple[str, bytes]]:
    """(name, JPEG bytes) previews from scikit-image's bundled photos, scaled to 1440x1920, q80."""
    from skimage import data

    out = []
    for name in PHOTOS[:max(1, count)]:
        rgb = cover(getattr(data, name)()[..., :3], PREVIEW_SIZE)
        if name in CAPTIONED:
            rgb = add_sign(rgb, CAPTION)
        ok, jpeg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_QUALITY])
        if not ok:
            raise RuntimeError(f"cannot encode preview {name}")
        out.append((name, jpeg.tobytes()))
    return out


# ---- the two services ---------------------------------------------------------------------------


def require_loopback(url: str, option: str) -> str:
    """Benchmarks talk to loopback only: every address the host resolves to must be 127/8 or ::1."""
    target = Target.parse(url)
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(target.host, target.port, proto=socket.IPPROTO_TCP)}
    except socket.gaierror as exc:
        raise SystemExit(f"{option}: cannot resolve {target.host}: {exc}") from None
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SystemExit(f"{option}: {url} is not a loopback address ({', '.join(sorted(addresses))}); this benchmark only talks to loopback")
    return str(target)


@dataclass
class Service:
    """One service under test: where it answers, what it is, and the process when we started it."""

    key: str  # "official" or "ours"
    url: str
    version: str
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without settings meant for either service, plus `extra`."""
    drop = ("HAILO_IMMICH_", "MACHINE_LEARNING_", "IMMICH_", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def wait_ready(service: Service, timeout_s: float) -> None:
    client = Client(Target.parse(service.url), 2.0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if service.process is not None and service.process.poll() is not None:
                raise SystemExit(f"{service.key} service exited with {service.process.returncode}:\n{service.log_tail()}")
            try:
                if client.request("GET", "/ping")[0] == 200:
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{service.key} service did not answer /ping within {timeout_s:g} s:\n{service.log_tail()}")
            time.sleep(0.2)
    finally:
        client.close()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def stop(service: Service, grace_s: float = 20.0) -> None:
    """SIGTERM to the process group we started (a launcher and its gunicorn), SIGKILL if it lingers.

    The whole group, because Immich's launcher can exit before the gunicorn it started."""
    proc = service.process
    if proc is None:
        return
    if group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while group_alive(proc.pid) and time.monotonic() < deadline:
        proc.poll()  # reap the launcher so it does not keep the group alive as a zombie
        time.sleep(0.2)
    if group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@contextmanager
def started(service: Service, argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> Iterator[Service]:
    assert service.log_path is not None
    with service.log_path.open("wb") as log:
        service.process = subprocess.Popen(argv, cwd=str(cwd), env=env, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(service, timeout_s)
        yield service
    finally:
        stop(service)


def peer_version(peer_dir: Path) -> str:
    """The `version = "..."` line of the peer's pyproject.toml (Immich's release version)."""
    try:
        text = (peer_dir / "pyproject.toml").read_text()
    except OSError:
        return "unknown"
    found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return found.group(1) if found else "unknown"


def ours_version(repo: Path) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{__version__}" + (f" ({rev})" if rev else "")


def start_official(stack: ExitStack, args: argparse.Namespace, work: Path, extra_env: dict[str, str]) -> Service:
    if args.peer_url:
        return Service("official", require_loopback(args.peer_url, "--peer-url"), "running at " + args.peer_url)
    python, peer_dir = Path(args.peer_python), Path(args.peer_dir).resolve()
    if args.peer_preload and not Path(args.peer_preload).is_file():
        raise SystemExit(f"--peer-preload: {args.peer_preload} is not a file")
    if not (peer_dir / "immich_ml" / "__main__.py").is_file():
        raise SystemExit(f"--peer-dir: {peer_dir} holds no immich_ml package")
    port = free_port()
    env = clean_env({
        # immich_ml's launcher runs `python -m gunicorn`: the peer's Python must come first on PATH
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(peer_dir),
        "MACHINE_LEARNING_CACHE_FOLDER": str(args.cache),
        "MACHINE_LEARNING_MODEL_ARENA": "false",  # as Immich's CPU image sets it
        "HF_HUB_OFFLINE": "1",  # never download: the cache holds every model asked for
        "IMMICH_HOST": "127.0.0.1",
        "IMMICH_PORT": str(port),
        "NO_COLOR": "1",
        **({"LD_PRELOAD": str(Path(args.peer_preload).resolve())} if args.peer_preload else {}),
        **extra_env,
    })
    run_dir = work / "official"  # gunicorn puts its control socket in the working directory
    run_dir.mkdir()
    service = Service("official", f"http://127.0.0.1:{port}", peer_version(peer_dir), log_path=work / "official.log",
                      details={"peer_dir": str(peer_dir), "python": str(python), "preload": args.peer_preload or ""})
    return stack.enter_context(started(service, [str(python), "-m", "immich_ml"], env, run_dir, args.start_timeout))


def start_ours(stack: ExitStack, args: argparse.Namespace, work: Path, extra_env: dict[str, str]) -> Service:
    if args.ours_url:
        return Service("ours", require_loopback(args.ours_url, "--ours-url"), "running at " + args.ours_url)
    port = free_port()
    models_dir = work / "models"  # empty: every model comes from the Immich cache, as for the peer
    models_dir.mkdir()
    repo = Path(args.ours_repo).resolve()
    env = clean_env({
        "PYTHONPATH": str(repo),
        "MACHINE_LEARNING_CACHE_FOLDER": str(args.cache),
        "HAILO_IMMICH_MODELS_DIR": str(models_dir),
        "NO_COLOR": "1",
        **extra_env,
    })
    argv = [args.ours_python, "-m", "hailo_immich_cli", "serve", "--backend", "cpu", "--host", "127.0.0.1", "--port", str(port)]
    service = Service("ours", f"http://127.0.0.1:{port}", ours_version(repo), log_path=work / "ours.log",
                      details={"repo": str(repo)})
    return stack.enter_context(started(service, argv, env, repo, args.start_timeout))


# ---- agreement ----------------------------------------------------------------------------------


def post(client: Client, task: str, image: bytes | None, text: str | None) -> dict[str, Any]:
    body, ctype = immich_form(entries_for(task, default_model_name(task)), image=image, text=text)
    try:
        status, data = client.request("POST", "/predict", body, {"Content-Type": ctype})
    except (ConnectionError, http.client.RemoteDisconnected):
        # a keep-alive connection the service closed while idle (Immich's times out after 2 s): reconnect once
        status, data = client.request("POST", "/predict", body, {"Content-Type": ctype})
    if status != 200:
        raise RuntimeError(f"{task}: HTTP {status}: {data[:200]!r}")
    return json.loads(data)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    va, vb = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb) + 1e-12))


def compare_clip(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    c = cosine(json.loads(ref["clip"]), json.loads(got["clip"]))
    return {"cosine": round(c, 6), "agree": c >= CLIP_MIN_COSINE}


def face_boxes(faces: list[dict[str, Any]]) -> np.ndarray:
    return np.asarray([[f["boundingBox"][k] for k in ("x1", "y1", "x2", "y2")] for f in faces], np.float64).reshape(-1, 4)


def compare_faces(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    a, b = ref["facial-recognition"], got["facial-recognition"]
    out: dict[str, Any] = {"faces": [len(a), len(b)]}
    if len(a) != len(b):
        return {**out, "agree": False}
    if not a:
        return {**out, "agree": True}
    ba, bb = face_boxes(a), face_boxes(b)
    # pair each reference face with the nearest answer box (order may differ between detectors' sorts)
    pairs = [int(np.argmin(np.abs(bb - box).sum(axis=1))) for box in ba]
    box_px = float(max(np.abs(bb[j] - ba[i]).max() for i, j in enumerate(pairs)))
    score = float(max(abs(a[i]["score"] - b[j]["score"]) for i, j in enumerate(pairs)))
    emb = min(cosine(json.loads(a[i]["embedding"]), json.loads(b[j]["embedding"])) for i, j in enumerate(pairs))
    agree = (len(set(pairs)) == len(pairs) and box_px <= FACE_MAX_BOX_PX and score <= FACE_MAX_SCORE_DIFF
             and emb >= FACE_MIN_EMBEDDING_COSINE)
    return {**out, "max_box_px": round(box_px, 4), "max_score_diff": score, "min_embedding_cosine": round(emb, 6), "agree": agree}


def compare_ocr(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    a, b = ref["ocr"], got["ocr"]
    out: dict[str, Any] = {"texts": [len(a["text"]), len(b["text"])], "text_identical": a["text"] == b["text"]}
    if len(a["box"]) == len(b["box"]) and a["box"]:
        out["max_box_px"] = round(float(np.abs(np.asarray(a["box"], np.float64) - np.asarray(b["box"], np.float64)).max()), 4)
    out["agree"] = out["text_identical"]
    return out


COMPARE: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
    "clip-text": compare_clip, "clip": compare_clip, "faces": compare_faces, "ocr": compare_ocr}


def agreement(official: Service, ours: Service, tasks: Sequence[str], images: list[tuple[str, bytes]], timeout_s: float) -> dict[str, Any]:
    """Each preview (or search text) once to both services; the answers compared per task."""
    clients = {s.key: Client(Target.parse(s.url), timeout_s) for s in (official, ours)}
    result: dict[str, Any] = {}
    try:
        for task in tasks:
            inputs = [(t, None, t) for t in SEARCH_TEXTS] if task == "clip-text" else [(n, img, None) for n, img in images]
            checks = []
            for name, image, text in inputs:
                answers = {key: post(client, task, image, text) for key, client in clients.items()}
                check = COMPARE[task](answers["official"], answers["ours"])
                same_size = all(answers["official"].get(k) == answers["ours"].get(k) for k in ("imageHeight", "imageWidth"))
                checks.append({"input": name, **check, "agree": check["agree"] and same_size})
            result[task] = {"agree": all(c["agree"] for c in checks), "checks": checks}
    finally:
        for client in clients.values():
            client.close()
    return result


def agreement_line(task: str, data: dict[str, Any]) -> str:
    checks = data["checks"]
    if task in ("clip", "clip-text"):
        detail = f"min cosine {min(c['cosine'] for c in checks):.6f}"
    elif task == "faces":
        boxes = [c["max_box_px"] for c in checks if "max_box_px" in c]
        scores = [c["max_score_diff"] for c in checks if "max_score_diff" in c]
        counts = ", ".join(f"{c['faces'][0]}/{c['faces'][1]}" for c in checks)
        detail = (f"faces official/ours {counts}" + (f"; max box diff {max(boxes):.3g} px, max score diff {max(scores):.2g}" if boxes else ""))
    else:
        texts = ", ".join(f"{c['texts'][0]}/{c['texts'][1]}" for c in checks)
        detail = f"text lines official/ours {texts}; text identical on {sum(c['text_identical'] for c in checks)}/{len(checks)}"
    return f"- {TASK_LABELS[task]}: {'agree' if data['agree'] else 'DIFFER'} ({detail})"


# ---- interleaved load ---------------------------------------------------------------------------


def load_test(service: Service, args: argparse.Namespace, images: list[tuple[str, bytes]], progress: Callable[[str], None]) -> LoadTest:
    options = UrlOptions(tasks=tuple(args.tasks), concurrency=tuple(args.concurrency), duration_s=args.round_seconds,
                         count=args.round_count, warmup=args.warmup, timeout_s=args.timeout, ping_interval_s=1.0,
                         control_pings=5)
    return LoadTest(service.url, options, [img for _, img in images], "previews", progress=progress, form=immich_form)


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    calls = sum(r["calls"] for r in rounds)
    wall = sum(r["wall_s"] for r in rounds)
    errors: dict[str, int] = {}
    for r in rounds:
        for label, n in r["errors"].items():
            errors[label] = errors.get(label, 0) + n
    return {"requests_per_s": round(calls / wall, 3) if wall > 0 else 0.0, "calls": calls, "wall_s": round(wall, 3),
            "errors": errors, "rounds_requests_per_s": [r["requests_per_s"] for r in rounds],
            "p50_ms": [r["latency_ms"]["p50"] for r in rounds], "p95_ms": [r["latency_ms"]["p95"] for r in rounds]}


def interleaved(tests: dict[str, LoadTest], args: argparse.Namespace, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Per (task, concurrency): rounds alternate which service goes first; totals per service."""
    keys = list(tests)
    cells = []
    for task in args.tasks:
        for concurrency in args.concurrency:
            rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
            for i in range(args.rounds):
                for key in (keys if i % 2 == 0 else keys[::-1]):
                    rounds[key].append(tests[key].phase(task, concurrency))
            cell: dict[str, Any] = {"task": task, "concurrency": concurrency, **{k: merge_rounds(v) for k, v in rounds.items()}}
            if "official" in cell and "ours" in cell and cell["official"]["requests_per_s"] > 0:
                cell["ours_over_official"] = round(cell["ours"]["requests_per_s"] / cell["official"]["requests_per_s"], 3)
            log("  " + f"{TASK_LABELS[task]} c={concurrency}: " + ", ".join(
                f"{k} {cell[k]['requests_per_s']:.2f} req/s (rounds {cell[k]['rounds_requests_per_s']}, errors {cell[k]['errors'] or 0})" for k in keys))
            cells.append(cell)
    return cells


def rate(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(cells: list[dict[str, Any]]) -> str:
    both = all("official" in c for c in cells)
    head = ["| request | concurrency | official req/s | ours req/s | ours / official |", "|---|---|---|---|---|"] if both else \
        ["| request | concurrency | ours req/s |", "|---|---|---|"]
    rows = []
    for c in cells:
        errs = "" if not (c["ours"]["errors"] or c.get("official", {}).get("errors")) else " (errors)"
        if both:
            ratio = c.get("ours_over_official")
            rows.append(f"| {TASK_LABELS[c['task']]}{errs} | {c['concurrency']} | {rate(c['official']['requests_per_s'])} | "
                        f"{rate(c['ours']['requests_per_s'])} | {'n/a' if ratio is None else f'{ratio:.2f}'} |")
        else:
            rows.append(f"| {TASK_LABELS[c['task']]}{errs} | {c['concurrency']} | {rate(c['ours']['requests_per_s'])} |")
    return "\n".join(head + rows)


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, help="Immich-layout model cache (MACHINE_LEARNING_CACHE_FOLDER) for every service started here")
    p.add_argument("--peer-python", help="Python of the official service's environment (starts `python -m immich_ml`)")
    p.add_argument("--peer-dir", help="Immich's machine-learning/ folder (holds the immich_ml package)")
    p.add_argument("--peer-preload", help="shared library preloaded into the official service, as its CPU image does "
                   "(LD_PRELOAD=/usr/lib/libmimalloc.so.2: Debian bookworm's mimalloc 2.0.9)")
    p.add_argument("--peer-url", help="an official service already running on loopback, instead of starting one")
    p.add_argument("--ours-url", help="a `hailo-immich serve` already running on loopback, instead of starting one")
    p.add_argument("--ours-repo", default=str(REPO), help="checkout whose `serve` is started (default: this one)")
    p.add_argument("--ours-python", default=sys.executable, help="Python that runs `hailo-immich serve` (default: this one)")
    p.add_argument("--ours-only", action="store_true", help="no official service: measure `serve` alone")
    p.add_argument("--tasks", default="clip-text,clip,faces,ocr", help="request kinds, from clip-text, clip, faces, ocr")
    p.add_argument("--concurrency", default="1,4", help="concurrent keep-alive connections, e.g. 1,4")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per service and cell, alternating which goes first")
    p.add_argument("--round-seconds", type=float, default=3.0, help="seconds per timed round")
    p.add_argument("--round-count", type=int, default=None, help="also stop a round after this many requests")
    p.add_argument("--warmup", type=int, default=2, help="untimed requests before each round")
    p.add_argument("--images", type=int, default=len(PHOTOS), help=f"distinct previews cycled through (1-{len(PHOTOS)})")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--start-timeout", type=float, default=120.0, help="seconds for a started service to answer /ping")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for both started services (repeatable)")
    p.add_argument("--no-agreement", action="store_true", help="skip comparing the two services' answers")
    p.add_argument("--json", type=Path, help="write the full report here")
    p.add_argument("--verbose", action="store_true", help="print every round")
    args = p.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in args.tasks if t not in TASK_LABELS]
    if unknown or not args.tasks:
        p.error(f"--tasks: unknown {unknown}; choose from {', '.join(TASK_LABELS)}")
    args.concurrency = parse_int_list(args.concurrency, "--concurrency", [1, 4])
    if args.rounds < 1 or args.round_seconds <= 0 or not 1 <= args.images <= len(PHOTOS) or args.warmup < 0:
        p.error("--rounds >= 1, --round-seconds > 0, --warmup >= 0 and --images 1..%d" % len(PHOTOS))
    if not args.ours_only and not args.peer_url and not (args.peer_python and args.peer_dir):
        p.error("give --peer-python and --peer-dir (or --peer-url), or --ours-only")
    starts_any = not args.ours_url or (not args.ours_only and not args.peer_url)
    if starts_any and (args.cache is None or not args.cache.is_dir()):
        p.error("--cache: an Immich-layout model cache folder is needed to start a service")
    bad_env = [e for e in args.env if "=" not in e]
    if bad_env:
        p.error(f"--env: expected KEY=VALUE, got {bad_env}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    extra_env = dict(e.split("=", 1) for e in args.env)
    images = previews(args.images)
    started_at = datetime.now(timezone.utc)
    load_before = loadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-peer-"))
    try:
        with ExitStack() as stack:
            services: dict[str, Service] = {}
            if not args.ours_only:
                log("starting the official service ..." if not args.peer_url else f"official service at {args.peer_url}")
                services["official"] = start_official(stack, args, work, extra_env)
            log("starting hailo-immich serve --backend cpu ..." if not args.ours_url else f"ours at {args.ours_url}")
            services["ours"] = start_ours(stack, args, work, extra_env)
            progress = log if args.verbose else (lambda _m: None)
            tests = {k: load_test(s, args, images, progress) for k, s in services.items()}
            identity = {k: t.identify() for k, t in tests.items()}
            agree = None
            if "official" in services and not args.no_agreement:
                log("comparing answers ...")
                agree = agreement(services["official"], services["ours"], args.tasks, images, args.timeout)
            log("client ceiling ...")
            control = {k: t.control() for k, t in tests.items()}
            log(f"timing: {args.rounds} rounds x {args.round_seconds:g} s per service and cell, interleaved")
            cells = interleaved(tests, args, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = loadavg()
    report = {
        "tool": "scripts/bench_serve_peer.py",
        "started": started_at.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": host_info(),
        "loadavg_before_after": [load_before, load_after],
        "services": {k: {"url": s.url, "version": s.version, **s.details, "identify": identity[k]} for k, s in services.items()},
        "previews": {"size": list(PREVIEW_SIZE), "quality": PREVIEW_QUALITY, "photos": [n for n, _ in images],
                     "bytes": [len(b) for _, b in images]},
        "options": {"tasks": args.tasks, "concurrency": args.concurrency, "rounds": args.rounds, "round_seconds": args.round_seconds,
                    "round_count": args.round_count, "warmup": args.warmup, "env": extra_env},
        "control": control,
        "agreement": agree,
        "cells": cells,
    }
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if agree is None or all(v["agree"] for v in agree.values()) else 1


def render(report: dict[str, Any]) -> str:
    host = report["host"]
    svc = report["services"]
    lines = [
        f"hailo-immich serve --backend cpu {svc['ours']['version']}"
        + (f" vs official Immich ML {svc['official']['version']}" if "official" in svc else " (alone)"),
        f"host: {host['cpu_model']}, {host['cores_usable']} usable cores; load average before/after "
        f"{report['loadavg_before_after'][0]} / {report['loadavg_before_after'][1]} (other work on the machine shares the CPU)",
        f"previews: {len(report['previews']['photos'])} photos at {report['previews']['size'][0]}x{report['previews']['size'][1]} "
        f"q{report['previews']['quality']}, {np.mean(report['previews']['bytes']) / 1024:.0f} KiB on average; "
        f"{report['options']['rounds']} timed round(s) of {report['options']['round_seconds']:g} s per service and cell"
        + (", the services taking turns" if "official" in svc else ""),
        "client ceiling (rejected requests): " + ", ".join(
            f"{k} {v['client_ceiling']['calls_per_s']:.0f} req/s" for k, v in report["control"].items()),
        "",
        table(report["cells"]),
    ]
    if report["agreement"]:
        lines += ["", "answers for the same request:"] + [agreement_line(t, d) for t, d in report["agreement"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
