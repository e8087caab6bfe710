"""Twins for the PaddleOCR Hailo recipes on the hailo_platform test double. EMULATED, never hardware.

The test images are white with "text boxes" painted in pure red whose blue channel carries a code:
- the detection twin marks p = (R - G) / 255 per pixel of the 544x960 tile it is given, so wherever
  the pipeline puts a box (scaled, tiled, stitched), its probability map follows it exactly;
- the recognition twin reads the code from the red pixels of the 48x320 crop it is given and emits
  40 per-timestep class distributions that spell STRINGS[code] (character k of the dictionary is
  class k + 1, blank 0, space the last class), so CTC decoding is checked from the device output on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CODE_STEP = 40  # blue value of string k's boxes: 20 + CODE_STEP * k
CHAR_P, BLANK_P = 0.92, 0.97  # the twin's probability for the character / the blank at a step


@dataclass(frozen=True)
class TextBox:
    """A painted box in original pixels: x0, y0 (top-left), width, height; code selects the string."""

    x: int
    y: int
    w: int
    h: int
    code: int

    def paint(self, rgb: np.ndarray) -> None:
        rgb[self.y : self.y + self.h, self.x : self.x + self.w] = (255, 0, 20 + CODE_STEP * self.code)

    def expected_quad(self, unclip_ratio: float) -> np.ndarray:
        """The box DB returns: the marked rectangle grown by area * ratio / perimeter on every side
        (scale-free: growing in detector pixels and mapping back gives the same in original pixels)."""
        d = self.w * self.h * unclip_ratio / (2.0 * (self.w + self.h))
        x0, y0, x1, y1 = self.x - d, self.y - d, self.x + self.w + d, self.y + self.h + d
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def page(width: int, height: int, boxes: Sequence[TextBox]) -> np.ndarray:
    rgb = np.full((height, width, 3), 255, np.uint8)
    for box in boxes:
        box.paint(rgb)
    return rgb


class DetectionTwin:
    """(N, 544, 960, 3) pixels -> (N, 544, 960, 1) text probability; records every frame it saw."""

    def __init__(self, layer_in: str, layer_out: str):
        self.layer_in, self.layer_out = layer_in, layer_out
        self.frames: list[np.ndarray] = []

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(inputs[self.layer_in], np.float32)
        self.frames.extend(x)
        return {self.layer_out: np.clip((x[..., :1] - x[..., 1:2]) / 255.0, 0.0, 1.0)}


def class_steps(text: str, dictionary: Sequence[str], steps: int, space_class: int) -> list[int]:
    """CTC path for `text`: each character twice then a blank (so repeats collapse and doubled
    letters survive), blank-padded to `steps`."""
    index = {ch: i + 1 for i, ch in enumerate(dictionary)}  # class 0 is the blank
    path: list[int] = []
    for ch in text:
        cls = space_class if ch == " " else index[ch]
        path += [cls, cls, 0]
    if len(path) > steps:
        raise ValueError(f"{text!r} needs {len(path)} steps, the recogniser has {steps}")
    return path + [0] * (steps - len(path))


class RecognitionTwin:
    """(N, 48, 320, 3) crops -> (N, 1, steps, classes) per-step class distributions spelling STRINGS[code]."""

    def __init__(self, layer_in: str, layer_out: str, strings: Sequence[str], dictionary: Sequence[str], steps: int, classes: int):
        self.layer_in, self.layer_out, self.steps, self.classes = layer_in, layer_out, steps, classes
        self.paths = [class_steps(s, dictionary, steps, classes - 1) for s in strings]
        self.codes: list[int] = []

    def code_of(self, crop: np.ndarray) -> int:
        red = (crop[..., 0] - crop[..., 1]) > 128
        if not red.any():
            return 0
        return int(np.clip(np.rint((np.median(crop[..., 2][red]) - 20) / CODE_STEP), 0, len(self.paths) - 1))

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(inputs[self.layer_in], np.float32)
        out = np.zeros((len(x), 1, self.steps, self.classes), np.float32)
        for n, crop in enumerate(x):
            code = self.code_of(crop)
            self.codes.append(code)
            for t, cls in enumerate(self.paths[code]):
                top = BLANK_P if cls == 0 else CHAR_P
                out[n, 0, t, :] = (1.0 - top) / (self.classes - 1)
                out[n, 0, t, cls] = top
        return {self.layer_out: out}
