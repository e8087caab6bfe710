#!/usr/bin/env python3
"""Host CPU per image request, exact vs fast host path, and how far the fast answers are from the exact ones.

1. EMULATED Hailo (hailo_immich_cli/testkit/hailo_double, HEFs written to match the shipped recipes) with a
   device that takes no time: twins return fixed outputs, five faces planted in SCRFD's maps. What
   is left is the host's work per request: decode, resize, the model input, post-processing, the
   aligned crops and the JSON answer. Targets for one 1440x1920 q80 preview on the fast path:
   CLIP visual <= 6 ms, faces (detection + 5 aligned crops) <= 10 ms.
2. CPU backend on an Immich model cache (--cache; ViT-B-32__openai, buffalo_l, PP-OCRv5_mobile),
   both paths, and the fast path's agreement with the exact one on real photos (CLIP cosine, face
   box IoU, OCR text).

Part 1 runs on the hailo_platform test double and HEF writer of hailo_immich_cli/testkit/ (put on
sys.path only here, never in place of a real hailo_platform). Both use `hailo-immich bench`'s host-path measurement (hailo_immich_cli/bench/host_paths.py). Everything
from part 1 is EMULATED: it measures this host's CPU, never the NPU.

    python scripts/bench_host_path.py [--image preview.jpg] [--cache /path/to/immich/cache] [--count 40] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hailo_immich_cli.bench import host_paths as host_bench  # noqa: E402
from hailo_immich_cli.models.recipes import RecipeBook  # noqa: E402

HAILO_STAGES = {"clip": {"clip-visual": "clip-vit-b32-visual-hailo"},
                "faces": {"face-detection": "scrfd-2.5g-hailo8", "face-recognition": "arcface-mobilefacenet-hailo8"}}
CACHE_NAMES = {"clip": {"clip-visual": "ViT-B-32__openai"},
               "faces": {"face-detection": "buffalo_l", "face-recognition": "buffalo_l"},
               "ocr": {"ocr-detection": "PP-OCRv5_mobile", "ocr-recognition": "PP-OCRv5_mobile"}}


def preview_jpeg(photo: np.ndarray, size: tuple[int, int] = (1440, 1920), quality: int = 80) -> bytes:
    """A photo at an Immich preview size (w, h), JPEG q80 as Immich writes its previews."""
    import cv2
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def photos() -> dict[str, np.ndarray]:
    from hailo_immich_cli.testkit.photos import sample_photos

    return sample_photos()


def run_bench(settings, book, task_recipes: dict, data: bytes, count: int) -> dict:
    """`hailo-immich bench --host-path exact,fast` (the same Bench), host-path cells only."""
    from hailo_immich_cli.bench.local import Bench, BenchOptions

    opts = BenchOptions(tasks=tuple(task_recipes), recipes=tuple(r for stages in task_recipes.values() for r in stages.values()),
                        warmup=3, duration_s=None, count=count, device_only=False, end_to_end=False, host_paths=("exact", "fast"))
    return Bench(settings, book, opts, progress=lambda msg: print(msg, file=sys.stderr), encoded=data).run()


def emulated(data: bytes, count: int) -> dict:
    from hailo_immich_cli.testkit.face_models import PlantedFace
    from hailo_immich_cli.testkit.face_models import scrfd_hailo_twin
    from hailo_immich_cli.testkit.hailo_emulation import emulator, install_double, make_hailo_session, uninstall_double

    install_double()
    try:
        book = RecipeBook.load()
        det = book.get(HAILO_STAGES["faces"]["face-detection"])
        kps = np.array([[-12, -10], [12, -10], [0, 2], [-9, 14], [9, 14]], np.float32)
        planted = [PlantedFace(stride=16, row=r, col=c, anchor=1, score=0.9, ltrb=(40.0, 48.0, 40.0, 48.0), kps=kps)
                   for r, c in ((8, 8), (8, 20), (20, 10), (30, 22), (34, 6))]
        twin, calibration = scrfd_hailo_twin(det, planted)
        recipes = [book.get(rid) for stages in HAILO_STAGES.values() for rid in stages.values()]
        with tempfile.TemporaryDirectory() as tmp, \
                make_hailo_session(recipes, {det.id: twin}, Path(tmp), book=book, calibration={det.id: calibration}) as session, \
                FixedTwins(emulator()):
            return run_bench(session.settings, session.recipes, HAILO_STAGES, data, count)
    finally:
        uninstall_double()


class FixedTwins:
    """While active, every emulated HEF answers from a cache of its twin's output: a device that takes no time."""

    def __init__(self, emulator):
        self.emulator, self.saved = emulator, {}

    def __enter__(self):
        for key, twin in list(self.emulator.MACHINE.twins.items()):
            cache: dict = {}

            def fixed(inputs, twin=twin, cache=cache):
                n = next(iter(inputs.values())).shape[0]
                if n not in cache:
                    cache[n] = twin(inputs)
                return cache[n]

            self.saved[key] = twin
            self.emulator.MACHINE.twins[key] = fixed
        return self

    def __exit__(self, *exc):
        self.emulator.MACHINE.twins.update(self.saved)


def cpu(cache: Path, data: bytes, count: int) -> tuple[dict, dict]:
    from hailo_immich_cli.session import SessionManager
    from hailo_immich_cli.settings import Settings

    with tempfile.TemporaryDirectory() as empty:
        settings = Settings.load(env={}, backend="cpu", models_dir=Path(empty), immich_cache_folder=cache)
        with SessionManager(settings) as session:
            stages = {task: {t: session.resolve(t, name) for t, name in names.items()} for task, names in CACHE_NAMES.items()}
            report = run_bench(settings, session.recipes, {task: {t: r.id for t, r in st.items()} for task, st in stages.items()},
                               data, count)
            agree: dict = {}
            for name, photo in photos().items():
                for size in ((1440, 1920), (1920, 1440)):
                    jpeg = preview_jpeg(photo, size)
                    for task, st in stages.items():
                        agree.setdefault(task, []).append({"photo": name, "size": f"{size[0]}x{size[1]}",
                                                           **host_bench.agreement(session, task, st, jpeg)})
    return report, agree


def summary(agree: dict) -> dict:
    out = {}
    if "clip" in agree:
        out["clip_min_cosine"] = round(min(a["cosine"] for a in agree["clip"]), 5)
    if "faces" in agree:
        faces = [a for a in agree["faces"] if a["exact_faces"]]
        out["faces_min_iou"] = round(min((a["min_iou"] for a in faces), default=1.0), 4)
        out["faces_mean_iou"] = round(float(np.mean([a["mean_iou"] for a in faces])) if faces else 1.0, 4)
        out["faces_same_count"] = sum(a["exact_faces"] == a["fast_faces"] for a in agree["faces"]) / len(agree["faces"])
    if "ocr" in agree:
        out["ocr_identical_images"] = sum(a["identical"] for a in agree["ocr"]) / len(agree["ocr"])
        out["ocr_lines_matched"] = round(float(np.mean([a["lines_matched"] for a in agree["ocr"]])), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", type=Path, help="a JPEG preview (default: scikit-image's astronaut at 1440x1920 q80)")
    ap.add_argument("--cache", type=Path, help="an Immich model cache for part 2 (skipped without it)")
    ap.add_argument("--count", type=int, default=40, help="requests per cell")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    data = args.image.read_bytes() if args.image else preview_jpeg(photos()["astronaut"])
    report: dict = {"emulated_hailo": emulated(data, args.count)}
    if args.cache:
        report["cpu"], agree = cpu(args.cache, data, args.count)
        report["agreement"] = agree
        report["agreement_summary"] = summary(agree)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    from rich.console import Console

    from hailo_immich_cli.commands.bench import render

    console = Console(width=150)
    for part, title in (("emulated_hailo", "EMULATED Hailo, device takes no time"), ("cpu", "CPU backend, Immich cache")):
        if part in report:
            console.rule(title)
            render(console, report[part])
    if "agreement_summary" in report:
        print("\nfast vs exact on the CPU models, 5 photos x 2 preview orientations:", json.dumps(report["agreement_summary"]))


if __name__ == "__main__":
    main()
