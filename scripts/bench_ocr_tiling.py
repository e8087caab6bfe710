#!/usr/bin/env python
"""Measure the Hailo OCR layout strategies with the real PP-OCRv5 weights (emulated layout, CPU).

1. Detector (fixed 544x960 landscape canvas): overlapping tiles at min_scale 0.7 / 0.85 / 1.0 of
   Immich's resolution vs letterboxing the whole photo into one canvas.
2. Recogniser (fixed 48x320 input, 40 CTC steps): long lines split at column gaps vs squeezed to 320 px.

No Hailo device is needed or used: the strategies run the ONNX weights in the HEF's fixed layouts on
the CPU (hailo_immich_cli/testkit/ocr_emulation.py), so this measures geometry only (text size reaching the
models), not quantisation. Reference: Immich's own CPU pipeline. Score: character error rate (CER)
of everything read against the rendered ground truth; "runs" = detector tiles per image.

    HAILO_IMMICH_WHEEL_CACHE=/work/wheels /work/venv/bin/python scripts/bench_ocr_tiling.py [--part det|rec|all]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hailo_immich_cli.ocr.pipeline import read_text  # noqa: E402
from hailo_immich_cli.settings import Settings  # noqa: E402
from hailo_immich_cli.testkit.ocr_samples import cer, normalise, read_all, render_lines  # noqa: E402
from hailo_immich_cli.testkit.ocr_emulation import (  # noqa: E402
    DET_ID, FULL_TILES_DET_ID, LETTERBOX_DET_ID, MID_TILES_DET_ID, REC_ID, REC_SQUEEZE_ID, emulation_session,
)

TEXT = ["Receipt 0042 Market Hall", "2 coffee 7.20 EUR", "1 croissant 2.10", "Card payment accepted", "Thank you and goodbye"]
LONG = "The annual general meeting of the garden society takes place on Friday 14 March at 19:30 in the town hall"


def det_cases():
    for name, size in (("portrait 3024x4032", (3024, 4032)), ("landscape 4032x3024", (4032, 3024)),
                       ("panorama 8000x1800", (8000, 1800)), ("tall 1200x4000", (1200, 4000))):
        for font_size in (24, 32, 44):
            img = render_lines(TEXT, size, font_size=font_size, origin=(size[0] // 8, size[1] // 3), spacing=2.0)
            yield f"{name} {font_size}px", img, normalise(" ".join(TEXT))


def rec_cases():
    for chars in (20, 40, 60, 80, 104):
        line = LONG[:chars].strip()
        img = render_lines([line], (40 + 19 * len(line), 110), font_size=32, origin=(20, 30))
        yield f"line of {len(line)} chars", img, line


def run(session, cases, strategies):
    totals = {k: [] for k in strategies}
    print(f"{'image':27s} {'strategy':34s} {'runs':>4s} {'CER':>6s} {'ms':>6s}  text read")
    for name, img, truth in cases:
        for label, (det, rec) in strategies.items():
            session.model(det), session.model(rec)  # load outside the timing
            start = time.perf_counter()
            result = read_text(session, img, detector=det, recognizer=rec)
            ms = (time.perf_counter() - start) * 1000
            got = read_all(result.lines)
            c = cer(got, truth)
            totals[label].append((c, result.tiles))
            print(f"{name:27s} {label:34s} {result.tiles:4d} {c:6.3f} {ms:6.0f}  {got[:60]!r}")
    print()
    for label, values in totals.items():
        print(f"mean CER {label:34s} {sum(c for c, _ in values) / len(values):.3f}   mean runs {sum(t for _, t in values) / len(values):.2f}")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("det", "rec", "all"), default="all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        session = emulation_session(Settings.load(env={}, backend="cpu", models_dir=REPO / "models"), Path(tmp))
        reference = ("ppocrv5-mobile-det-cpu", "ppocrv5-mobile-rec-cpu")
        if args.part in ("det", "all"):
            run(session, det_cases(), {
                "immich-cpu (reference)": reference,
                "tiles, min_scale 0.7": (DET_ID, REC_ID),
                "tiles, min_scale 0.85 (recipe)": (MID_TILES_DET_ID, REC_ID),
                "tiles, min_scale 1.0": (FULL_TILES_DET_ID, REC_ID),
                "letterbox (one canvas)": (LETTERBOX_DET_ID, REC_ID),
            })
        if args.part in ("rec", "all"):
            run(session, rec_cases(), {
                "immich-cpu (reference)": reference,
                "48x320, long lines split (recipe)": ("ppocrv5-mobile-det-cpu", REC_ID),
                "48x320, long lines squeezed": ("ppocrv5-mobile-det-cpu", REC_SQUEEZE_ID),
            })
        session.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
