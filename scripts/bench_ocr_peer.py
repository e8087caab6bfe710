#!/usr/bin/env python
"""OCR throughput and accuracy against a peer pipeline from PyPI, same weights, same images, same run.

Peer: RapidOCR 3.6.0 (`rapidocr`, the engine Immich's own ML service uses), configured with our
PP-OCRv5 mobile det/rec ONNX files and dictionary, no angle classifier, the same ONNX Runtime thread
counts. It is a benchmark tool only, not a project dependency. Install it into the venv with:

    /work/venv/bin/pip install --no-deps rapidocr==3.6.0
    /work/venv/bin/pip install shapely omegaconf colorlog tqdm six pyyaml

(--no-deps because its wheel requires the non-headless opencv-python, which would clash with the
headless OpenCV the project uses.)

Reports images/s for both (ratio = ours / peer) and the character error rate (CER) on images whose
text is known; both pipelines receive the same decoded arrays.

    HAILO_IMMICH_WHEEL_CACHE=/work/wheels /work/venv/bin/python scripts/bench_ocr_peer.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hailo_immich_cli.ocr.pipeline import read_text  # noqa: E402
from hailo_immich_cli.session import SessionManager  # noqa: E402
from hailo_immich_cli.settings import Settings  # noqa: E402
from hailo_immich_cli.testkit.ocr_samples import cer, normalise, read_all, render_lines, samples  # noqa: E402


def photo_with_text(photo: np.ndarray, lines: list[str], size: tuple[int, int]) -> np.ndarray:
    """A photo-sized frame: a real photo scaled up with a caption block rendered on a light panel."""
    w, h = size
    canvas = cv2.resize(photo, (w, h), interpolation=cv2.INTER_CUBIC)
    panel = render_lines(lines, (w // 2, 60 * len(lines) + 40), font_size=30, origin=(20, 20), spacing=1.9)
    y0 = h // 2
    canvas[y0 : y0 + panel.shape[0], w // 4 : w // 4 + panel.shape[1]] = panel
    return canvas


def image_set() -> list[tuple[str, np.ndarray, str | None]]:
    from skimage import data

    out: list[tuple[str, np.ndarray, str | None]] = [(s.name, s.rgb, s.text) for s in samples()]
    page = data.page()
    out.append(("skimage-page", np.ascontiguousarray(np.stack([page] * 3, -1)), None))
    for name, photo in (("coffee", data.coffee()), ("astronaut", data.astronaut()), ("chelsea", data.chelsea())):
        lines = [f"{name.title()} shop open 8 to 18", "Phone 0123 456 789", "No entry after 19:30"]
        out.append((f"{name}-1600x1200-caption", photo_with_text(photo, lines, (1600, 1200)), normalise(" ".join(lines))))
        out.append((f"{name}-plain", np.ascontiguousarray(photo), None))
    return out


class Peer:
    """RapidOCR as configured above.

    Its default detector sizing (`limit_type: min`, 736) upscales small images until the shorter side
    is 736 and never downscales large ones, while Immich (and so we) only ever downscale. The
    `matched=True` variant removes that difference: large images are shrunk to a 736 shorter side
    before the call (time included) and `limit_type: max` stops the upscaling, so both pipelines run
    the detector on the same pixels and the ratio measures pipeline efficiency alone.
    """

    def __init__(self, det: Path, rec: Path, dictionary: Path, threads: int, matched: bool = False):
        self.prescale = matched
        from rapidocr import OCRVersion, RapidOCR

        self.engine = RapidOCR(params={
            "Global.use_cls": False,
            "Global.log_level": "error",
            "Global.text_score": 0.8,  # Immich's server threshold, as ours
            "Det.model_path": str(det),
            "Det.ocr_version": OCRVersion.PPOCRV5,
            "Rec.model_path": str(rec),
            "Rec.rec_keys_path": str(dictionary),
            "Rec.ocr_version": OCRVersion.PPOCRV5,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            **({"Det.limit_type": "max"} if matched else {}),
        })

    def __call__(self, rgb: np.ndarray) -> str:
        if self.prescale and min(rgb.shape[:2]) > 736:
            f = 736 / min(rgb.shape[:2])
            rgb = cv2.resize(rgb, (round(rgb.shape[1] * f), round(rgb.shape[0] * f)), interpolation=cv2.INTER_AREA)
        out = self.engine(np.ascontiguousarray(rgb[..., ::-1]))  # RapidOCR takes arrays as OpenCV BGR
        return normalise(" ".join(out.txts or ()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import rapidocr  # noqa: F401
    except ImportError:
        print(__doc__)
        return 2

    settings = Settings.load(env={}, backend="cpu", models_dir=REPO / "models")
    session = SessionManager(settings)
    det, rec = session.resolve("ocr-detection"), session.resolve("ocr-recognition")
    files = session.files
    paths = (files.require(det), files.require(rec), files.require(rec, "dictionary"), settings.ort_intra_op_threads)
    peer, peer_matched = Peer(*paths), Peer(*paths, matched=True)
    images = image_set()
    ours = lambda rgb: read_all(read_text(session, rgb).lines)  # noqa: E731

    runners = {"ours": ours, "peer": peer, "peer-matched-res": peer_matched}
    for fn in runners.values():
        for _, rgb, _ in images[:3]:
            fn(rgb)  # warm-up: model load, ORT arena
    texts = {label: [fn(rgb) for _, rgb, _ in images] for label, fn in runners.items()}
    # Interleaved timing: every image goes through every pipeline in turn (rotating who goes first), so
    # load from other processes on the machine falls on all pipelines alike.
    spent = {label: 0.0 for label in runners}
    labels = list(runners)
    for r in range(args.rounds):
        for i, (_, rgb, _) in enumerate(images):
            k = (r + i) % len(labels)
            for label in labels[k:] + labels[:k]:
                start = time.perf_counter()
                runners[label](rgb)
                spent[label] += time.perf_counter() - start
    results: dict[str, dict[str, float]] = {}
    for label in runners:
        known = [(got, truth) for got, (_, _, truth) in zip(texts[label], images) if truth is not None]
        edits = sum(round(cer(g, t) * len(t)) for g, t in known)
        chars = sum(len(t) for _, t in known)
        results[label] = {"ips": args.rounds * len(images) / spent[label], "cer": edits / chars}

    print(f"{len(images)} images x {args.rounds} rounds, ONNX Runtime {settings.ort_intra_op_threads} intra-op threads, same PP-OCRv5 mobile files")
    print(f"{'image':34s} " + " ".join(f"{k + ' CER':>19s}" for k in runners))
    for i, (name, _, truth) in enumerate(images):
        if truth is None:
            outs = [texts[k][i] for k in runners]
            same = "same text" if len(set(outs)) == 1 else "DIFFERENT: " + " | ".join(f"{k} {o[:30]!r}" for k, o in zip(runners, outs))
            print(f"{name:34s} {'(no ground truth)':>19s}  {same}")
        else:
            print(f"{name:34s} " + " ".join(f"{cer(texts[k][i], truth):19.3f}" for k in runners))
    print()
    for label in runners:
        print(f"{label:15s} {results[label]['ips']:.2f} images/s, CER {results[label]['cer']:.4f}")
    for label in ("peer", "peer-matched-res"):
        print(f"throughput ratio ours/{label}: {results['ours']['ips'] / results[label]['ips']:.2f}x")
    session.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
