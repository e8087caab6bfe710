#!/usr/bin/env python3
"""Batch-mode benchmark: reduced-size JPEG decoding, end-to-end files/s, and memory vs folder size.

Everything is measured in the same run against its own baseline:
  1. decode + preprocess of generated 12 MP JPEGs: full-resolution decode vs the reduced-size
     decode `index` uses (shorter side >= what the models need), both EXIF-rotated and resized to
     the largest model input; ratio reported (target >= 3x).
  2. end-to-end `index` files/s on the CPU backend over the same 12 MP photos (real CenterFace and
     PP-OCRv5 models; faces are detected only when no recogniser is on disk).
  3. peak RSS of `index` on a folder of N files and of 10 N files (should stay flat).

    python scripts/bench_decode.py [--photos 12] [--small 200] [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hailo_immich_cli.imaging import decode_image  # noqa: E402

TARGET = 736  # the largest input of the default models (PP-OCRv5 det max side); index decodes to at least this


def source_photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def make_12mp(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    base = cv2.resize(source_photo(), (4000, 3000), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        noisy = np.clip(base.astype(np.int16) + rng.integers(-6, 7, base.shape, dtype=np.int16), 0, 255).astype(np.uint8)
        img = Image.fromarray(noisy)
        exif = Image.Exif()
        exif[0x0112] = (1, 6)[i % 2]  # half of them stored sideways, as phones do
        path = folder / f"IMG_{i:04d}.jpg"
        img.save(path, "JPEG", quality=92, exif=exif.tobytes())
        paths.append(path)
    return paths


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """What the pipelines do next: resize so the longer side is TARGET."""
    h, w = rgb.shape[:2]
    s = TARGET / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def bench_decode(paths: list[Path], rounds: int) -> dict:
    results = {}
    for label, min_side in (("full", None), ("reduced", TARGET)):
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for p in paths:
                img = decode_image(p, exif_transpose=True, draft_min_side=min_side)
                preprocess(img.rgb)
            best = min(best, time.perf_counter() - start)
        results[label] = {"seconds": round(best, 3), "images_per_s": round(len(paths) / best, 2), "decoded_shape": list(img.rgb.shape)}
    results["speedup"] = round(results["reduced"]["images_per_s"] / results["full"]["images_per_s"], 2)
    return results


def run_index(folder: Path, db: Path, tasks: str, extra: list[str] | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HAILO_IMMICH_BACKEND": "cpu", "NO_COLOR": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hailo_immich_cli", "index", str(folder), "--db", str(db), "--tasks", tasks,
                             "--no-progress", *(extra or [])], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"index failed:\n{err}")
    n = sum(1 for _ in folder.rglob("*.jpg"))
    return {"files": n, "seconds": round(elapsed, 2), "files_per_s": round(n / elapsed, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def make_small(folder: Path, n: int) -> None:
    """n distinct small JPEGs in nested folders (distinct bytes: a counter in the COM segment)."""
    small = cv2.resize(source_photo(), (96, 96), interpolation=cv2.INTER_AREA)
    buf = bytearray(cv2.imencode(".jpg", small[..., ::-1])[1].tobytes())
    for i in range(n):
        sub = folder / f"d{i // 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        comment = f"bench-{i}".encode()
        seg = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        (sub / f"p{i:06d}.jpg").write_bytes(bytes(buf[:2]) + seg + bytes(buf[2:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=12, help="12 MP JPEGs to generate")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--small", type=int, default=200, help="N for the memory test (runs N and 10 N)")
    ap.add_argument("--tasks", default="faces,ocr", help="tasks for the end-to-end run")
    ap.add_argument("--skip-memory", action="store_true", help="skip the N / 10 N memory runs")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-decode-"))
    report: dict = {"cpu_count": os.cpu_count()}
    photos = make_12mp(work / "photos12mp", args.photos)
    report["decode_12mp"] = bench_decode(photos, args.rounds)
    report["index_12mp"] = run_index(work / "photos12mp", work / "e2e.db", args.tasks)
    report["index_12mp_full_decode"] = run_index(work / "photos12mp", work / "e2e_full.db", args.tasks, ["--decode-min-side", "0"])
    mem = {}
    for n in () if args.skip_memory else (args.small, args.small * 10):
        folder = work / f"small{n}"
        make_small(folder, n)
        mem[n] = run_index(folder, work / f"small{n}.db", "faces")
    report["memory"] = mem
    if mem:
        report["memory_ratio_10x"] = round(mem[args.small * 10]["peak_rss_mb"] / mem[args.small]["peak_rss_mb"], 3)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    d = report["decode_12mp"]
    print(f"decode+preprocess 12 MP JPEG: full {d['full']['images_per_s']} img/s, reduced {d['reduced']['images_per_s']} img/s "
          f"-> {d['speedup']}x (decoded {d['reduced']['decoded_shape']} instead of {d['full']['decoded_shape']})")
    for key in ("index_12mp", "index_12mp_full_decode"):
        e = report[key]
        print(f"{key} ({args.tasks}, cpu): {e['files']} files in {e['seconds']} s = {e['files_per_s']} files/s, peak RSS {e['peak_rss_mb']} MB")
    for n, m in mem.items():
        print(f"index faces on {n} files: {m['files_per_s']} files/s, peak RSS {m['peak_rss_mb']} MB")
    if mem:
        print(f"peak RSS ratio for 10x the files: {report['memory_ratio_10x']}")


if __name__ == "__main__":
    main()
