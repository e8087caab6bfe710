"""Synthetic text images with known ground truth, and the character error rate, for OCR tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansCondensed.ttf")


def font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = FONT_DIR / name
    if path.is_file():
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


@dataclass(frozen=True)
class Sample:
    name: str
    rgb: np.ndarray
    lines: tuple[str, ...]  # ground truth in reading order

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.lines).split())


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(predicted: str, truth: str) -> float:
    """Character error rate: edit distance / ground-truth length."""
    return levenshtein(predicted, truth) / max(1, len(truth))


def render_lines(
    lines: list[str],
    size: tuple[int, int],
    *,
    font_name: str = "DejaVuSans.ttf",
    font_size: int = 32,
    fg: tuple[int, int, int] = (20, 20, 20),
    bg: tuple[int, int, int] = (245, 245, 240),
    origin: tuple[int, int] = (30, 30),
    spacing: float = 1.8,
    angle: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """RGB image (w, h = size) with one text line per entry, optionally rotated by `angle` degrees and noised."""
    w, h = size
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    f = font(font_name, font_size)
    x, y = origin
    for line in lines:
        draw.text((x, y), line, font=f, fill=fg)
        y += int(font_size * spacing)
    arr = np.asarray(img).copy()
    if angle:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        arr = cv2.warpAffine(arr, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=bg)
    if noise:
        rng = np.random.default_rng(seed)
        arr = np.clip(arr.astype(np.float32) + rng.normal(0, noise, arr.shape), 0, 255).astype(np.uint8)
    return arr


def gradient_background(size: tuple[int, int], c0: tuple[int, int, int], c1: tuple[int, int, int]) -> np.ndarray:
    w, h = size
    t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    row = (1 - t) * np.asarray(c0, np.float32) + t * np.asarray(c1, np.float32)
    return np.repeat(row, h, axis=0).astype(np.uint8)


def put_text_cv2(rgb: np.ndarray, lines: list[str], origin: tuple[int, int], scale: float, color: tuple[int, int, int], step: int, thickness: int = 2) -> np.ndarray:
    out = rgb.copy()
    x, y = origin
    for line in lines:
        cv2.putText(out, line, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)
        y += step
    return out


def samples() -> list[Sample]:
    """A fixed set covering fonts, sizes, colours, backgrounds, small rotations, punctuation, digits, multi-line, portrait."""
    out: list[Sample] = []
    lines = ["Invoice 2024-07-15", "Total: 42.50 EUR", "Thank you, see you soon!"]
    out.append(Sample("sans-dark-on-light", render_lines(lines, (900, 300)), tuple(lines)))
    lines = ["The quick brown fox", "jumps over the lazy dog"]
    out.append(Sample("serif-light-on-dark", render_lines(lines, (820, 220), font_name="DejaVuSerif.ttf", font_size=40, fg=(250, 250, 250), bg=(30, 40, 60)), tuple(lines)))
    lines = ["def main(): return 0", "x = [1, 2, 3]"]
    out.append(Sample("mono-code", render_lines(lines, (760, 200), font_name="DejaVuSansMono.ttf", font_size=30, fg=(0, 90, 0), bg=(255, 255, 255)), tuple(lines)))
    lines = ["Platform 9", "Departure 17:45"]
    out.append(Sample("bold-rotated-3deg", render_lines(lines, (700, 260), font_name="DejaVuSans-Bold.ttf", font_size=44, fg=(200, 30, 30), bg=(250, 240, 220), origin=(60, 50), angle=3.0), tuple(lines)))
    lines = ["Open daily 9am to 6pm", "Call 555-0199 for info"]
    out.append(Sample("italic-rotated-minus4deg-noisy", render_lines(lines, (800, 260), font_name="DejaVuSerif-Italic.ttf", font_size=36, fg=(40, 40, 160), bg=(235, 235, 235), origin=(50, 60), angle=-4.0, noise=6.0), tuple(lines)))
    lines = ["Welcome Home", "Main Street 221B"]
    bg = gradient_background((760, 240), (255, 220, 150), (150, 200, 255))
    out.append(Sample("cv2-on-gradient", put_text_cv2(bg, lines, (40, 90), 1.4, (10, 10, 10), 90, 3), tuple(lines)))
    lines = ["Chapter 12", "It was a bright cold day", "in April, and the clocks", "were striking thirteen."]
    out.append(Sample("portrait-page", render_lines(lines, (600, 1100), font_name="DejaVuSansCondensed.ttf", font_size=30, origin=(40, 200), spacing=2.2), tuple(lines)))
    lines = ["small print: 100% cotton, wash at 30 C"]
    out.append(Sample("small-text", render_lines(lines, (520, 80), font_size=18, origin=(12, 25)), tuple(lines)))
    return out


def normalise(text: str) -> str:
    """Whitespace collapsed: a line split into word boxes reads the same as one box."""
    return " ".join(text.split())


def read_all(lines) -> str:
    return normalise(" ".join(line.text for line in lines))
