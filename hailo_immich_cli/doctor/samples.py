"""The photos `doctor --compare` runs both recipes on: three small bundled photos (public domain /
CC0, see samples/README.md) and a text page drawn here, so no download is needed."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
# Zero-shot labels, one per photo (in SAMPLES order) plus the drawn page.
LABELS = ("a photo of an astronaut", "a photo of a cat", "a photo of a cup of coffee", "a page of printed text")
PROMPTS = LABELS + ("a dog on a beach", "a red car parked near a house", "snow in the city at night")
TEXT_LINES = ("Hailo-Immich", "QUICK BROWN", "doctor2026")  # one space: a lost space class shows, but barely
# The face in astronaut.jpg (5 points: eyes, nose, mouth corners), found by a CPU detector; the
# recognition check aligns both recognisers' crops with these, so it does not depend on detection.
ASTRONAUT_LANDMARKS = np.array([[156.5, 77.7], [200.4, 82.8], [176.2, 102.0], [155.3, 118.2], [192.9, 122.3]], np.float32)


@dataclass(frozen=True)
class Sample:
    name: str
    rgb: np.ndarray


def _load(name: str) -> Sample:
    with Image.open(SAMPLES_DIR / f"{name}.jpg") as img:
        return Sample(name, np.ascontiguousarray(np.asarray(img.convert("RGB"))))


def text_page(width: int = 640, height: int = 300) -> np.ndarray:
    """Black text on white, one line per TEXT_LINES entry, in Pillow's bundled font."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=40)
    for i, line in enumerate(TEXT_LINES):
        draw.text((30, 30 + 90 * i), line, fill="black", font=font)
    return np.asarray(img)


@lru_cache(maxsize=1)
def photos() -> tuple[Sample, ...]:
    return tuple(_load(n) for n in ("astronaut", "chelsea", "coffee"))


def all_samples() -> tuple[Sample, ...]:
    return (*photos(), Sample("text-page", text_page()))
