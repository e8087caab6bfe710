#!/usr/bin/env python3
"""Host CPU per image request, exact vs fast host path, and how far the fast answers are from the exact ones.

1. EMULATED Hailo (tests/fakes/hailo_platform, HEFs written to match the shipped recipes) with a
   device that takes no time: twins return fixed outputs, five faces planted in SCRFD's maps. What
   is left is the host's work per request: decode, resize, the model input, post-processing, the
   aligned crops and the JSON answer. Targets for one 1440x1920 q80 preview on the fast path:
   CLIP visual <= 6 ms, faces (detection + 5 aligned crops) <= 10 ms.
2. CPU backend on an Immich model cache (--cache; ViT-B-32__openai, buffalo_l, PP-OCRv5_mobile),
   both paths, and the fast path's agreement with the exact one on real photos (CLIP cosine, face
   box IoU, OCR text).

Both use `hailo-immich bench`'s host-path measurement (hailo_immich_cli/host_bench.py). Everything
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

from hailo_immich_cli import host_bench  # noqa: E402
from hailo_immich_cli.recipes import RecipeBook  # noqa: E402

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
    from skimage import data

    def rgb(img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3])

    return {"astronaut": rgb(data.astronaut()), "coffee": rgb(data.coffee()), "chelsea": rgb(data.chelsea()),
            "camera": rgb(data.camera()), "page": rgb(data.page())}


def emulated(data: bytes, count: int) -> list[dict]:
    from tests.helpers.faces import PlantedFace, scrfd_hailo_twin
    from tests.helpers.hailo import install_double, make_hailo_session, uninstall_double

    install_double()
    try:
        book = RecipeBook.load()
        det = book.get(HAILO_STAGES["faces"]["face-detection"])
        kps = np.array([[-12, -10], [12, -10], [0, 2], [-9, 14], [9, 14]], np.float32)
        planted = [PlantedFace(stride=16, row=r, col=c, anchor=1, score=0.9, ltrb=(40.0, 48.0, 40.0, 48.0), kps=kps)
                   for r, c in ((8, 8), (8, 20), (20, 10), (30, 22), (34, 6))]
        twin, calibration = scrfd_hailo_twin(det, planted)
        recipes = [book.get(rid) for stages in HAILO_STAGES.values() for rid in stages.values()]
        cells = []
        with tempfile.TemporaryDirectory() as tmp, \
                make_hailo_session(recipes, {det.id: twin}, Path(tmp), book=book, calibration={det.id: calibration}) as session:
            fixed = _fixed_outputs(session, recipes)
            for task, stages in HAILO_STAGES.items():
                resolved = {t: session.recipes.get(rid) for t, rid in stages.items()}
                for path in ("exact", "fast"):
                    with fixed:
                        cells.append(host_bench.measure(session, task, resolved, data, path, count=count))
        return cells
    finally:
        uninstall_double()


class _FixedTwins:
    """While active, every emulated HEF answers its first output again: a device that takes no time."""

    def __init__(self, emulator, keys):
        self.emulator, self.keys, self.saved = emulator, keys, {}

    def __enter__(self):
        for key in self.keys:
            twin = self.emulator.MACHINE.twins[key]
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


def _fixed_outputs(session, recipes) -> _FixedTwins:
    from tests.helpers.hailo import emulator

    return _FixedTwins(emulator(), list(emulator().MACHINE.twins))


def cpu(cache: Path, data: bytes, count: int) -> tuple[list[dict], dict]:
    from hailo_immich_cli.session import SessionManager
    from hailo_immich_cli.settings import Settings

    with tempfile.TemporaryDirectory() as empty:
        settings = Settings.load(env={}, backend="cpu", models_dir=Path(empty), immich_cache_folder=cache)
        with SessionManager(settings) as session:
            stages = {task: {t: session.resolve(t, name) for t, name in names.items()} for task, names in CACHE_NAMES.items()}
            cells = [host_bench.measure(session, task, st, data, path, count=count if task != "ocr" else max(3, count // 8))
                     for task, st in stages.items() for path in ("exact", "fast")]
            agree: dict = {}
            for name, photo in photos().items():
                for size in ((1440, 1920), (1920, 1440)):
                    jpeg = preview_jpeg(photo, size)
                    for task, st in stages.items():
                        agree.setdefault(task, []).append({"photo": name, "size": f"{size[0]}x{size[1]}",
                                                           **host_bench.agreement(session, task, st, jpeg)})
    return cells, agree


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
    for part, title in (("emulated_hailo", "EMULATED Hailo, device takes no time"), ("cpu", "CPU backend, Immich cache")):
        if part not in report:
            continue
        print(f"\n{title}: host CPU ms per request (p50; mean; min), device-call CPU apart")
        print(f"{'task':6s} {'path':6s} {'decoded':>10s} {'found':>5s} {'host p50':>9s} {'mean':>7s} {'min':>7s} {'device':>7s}")
        for c in report[part]:
            h = c["host_cpu_ms"]
            print(f"{c['task']:6s} {c['host_path']:6s} {c['decoded']:>10s} {c['found']:>5d} {h['p50']:>9.2f} {h['mean']:>7.2f} "
                  f"{h['min']:>7.2f} {c['device_call_cpu_ms']:>7.2f}")
        for row in host_bench.compare(report[part]):
            print(f"  {row['task']}: exact {row['exact_ms']} ms, fast {row['fast_ms']} ms -> exact/fast {row['exact_over_fast']}x")
    if "agreement_summary" in report:
        print("\nfast vs exact on the CPU models, 5 photos x 2 preview orientations:", json.dumps(report["agreement_summary"]))


if __name__ == "__main__":
    main()
