#!/usr/bin/env python
"""Measure the Hailo OCR detector strategy: overlapping 544x960 tiles vs letterboxing into one canvas.

No Hailo device is needed or used: both strategies run the real PP-OCRv5 mobile ONNX weights in the
HEF's fixed layout on the CPU (tests/helpers/ocr_emulation.py), so this measures geometry only
(text size reaching the detector), not quantisation. Reference: Immich's own CPU pipeline.

Images: photo-sized canvases (portrait 3024x4032, landscape 4032x3024, panorama 8000x1800, square
3000x3000) with lines of small print rendered at known positions; the score is the character error
rate (CER) of everything read against the ground truth, plus detector runs (tiles) per image.

    HAILO_IMMICH_WHEEL_CACHE=/work/wheels /work/venv/bin/python scripts/bench_ocr_tiling.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hailo_immich_cli.ocr import read_text  # noqa: E402
from hailo_immich_cli.settings import Settings  # noqa: E402
from tests.helpers.ocr import cer, normalise, read_all, render_lines  # noqa: E402
from tests.helpers.ocr_emulation import DET_ID, FULL_TILES_DET_ID, LETTERBOX_DET_ID, REC_ID, emulation_session  # noqa: E402

TEXT = [
    "Receipt 0042 Market Hall",
    "2 coffee 7.20 EUR",
    "1 croissant 2.10",
    "Card payment accepted",
    "Thank you and goodbye",
]


def cases() -> list[tuple[str, object, str]]:
    out = []
    for name, size in (
        ("portrait 3024x4032", (3024, 4032)),
        ("landscape 4032x3024", (4032, 3024)),
        ("panorama 8000x1800", (8000, 1800)),
        ("tall 1200x4000", (1200, 4000)),
    ):
        for font_size in (24, 32, 44):
            img = render_lines(TEXT, size, font_size=font_size, origin=(size[0] // 8, size[1] // 3), spacing=2.0)
            out.append((f"{name} {font_size}px", img, normalise(" ".join(TEXT))))
    return out


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        session = emulation_session(Settings.load(env={}, backend="cpu", models_dir=REPO / "models"), Path(tmp))
        strategies = {
            "immich-cpu (reference)": ("ppocrv5-mobile-det-cpu", "ppocrv5-mobile-rec-cpu"),
            "hailo layout: tiles": (DET_ID, REC_ID),
            "hailo layout: tiles, min_scale 1": (FULL_TILES_DET_ID, REC_ID),
            "hailo layout: letterbox": (LETTERBOX_DET_ID, REC_ID),
        }
        print(f"{'image':27s} {'strategy':34s} {'tiles':>5s} {'CER':>6s} {'ms':>6s}  text read")
        totals: dict[str, list[float]] = {k: [] for k in strategies}
        for name, img, truth in cases():
            for label, (det, rec) in strategies.items():
                session.model(det), session.model(rec)  # load outside the timing
                start = time.perf_counter()
                result = read_text(session, img, detector=det, recognizer=rec)
                ms = (time.perf_counter() - start) * 1000
                got = read_all(result.lines)
                c = cer(got, truth)
                totals[label].append(c)
                print(f"{name:27s} {label:34s} {result.tiles:5d} {c:6.3f} {ms:6.0f}  {got[:60]!r}")
        print()
        for label, values in totals.items():
            print(f"mean CER {label:34s} {sum(values) / len(values):.3f}")
        session.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
