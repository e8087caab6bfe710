"""OCR pipeline: detect text lines, crop them, recognise them; plain dataclasses out.

`read_text` is what commands and the server call. On the CPU recipes it reproduces Immich's
official pipeline (same boxes, texts and scores on the same decoded image); on Hailo recipes the
detector runs on overlapping fixed-size tiles and the recogniser on fixed 48x320 crops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from hailo_immich_cli.backends.base import Provenance
from hailo_immich_cli.errors import BadInputError, ImageTooLargeError
from hailo_immich_cli.ocr.detect import bounded_resolution, detect_text
from hailo_immich_cli.ocr.order import immich_order, reading_order
from hailo_immich_cli.ocr.recognize import crop_lines, crop_lines_fast, recognize


@dataclass(frozen=True)
class OcrLine:
    text: str
    box: np.ndarray  # (4, 2) float32 pixels: TL, TR, BR, BL
    box_score: float
    text_score: float
    det_index: int = -1  # position of this box in OcrResult.detections (detector order)


@dataclass(frozen=True)
class OcrResult:
    lines: list[OcrLine]  # reading order, all fields aligned
    width: int
    height: int
    detector: Provenance
    recognizer: Provenance
    # Every box the detector kept, before recognition filtering, in detector (contour) order.
    # Only the server's Immich-compatibility path needs these (see immich_response_order).
    detections: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 2), np.float32))
    detection_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    tiles: int = 1  # detector runs this image took
    # Said about this image's run, e.g. that its detector resolution was lowered (see bounded_resolution).
    notes: tuple[str, ...] = ()

    @property
    def texts(self) -> list[str]:
        return [line.text for line in self.lines]


def _check_image(rgb: np.ndarray | Image.Image, max_pixels: int) -> None:
    if isinstance(rgb, Image.Image):
        if rgb.mode != "RGB":
            raise BadInputError(f"OCR needs an RGB image, got mode {rgb.mode}")
        if rgb.width * rgb.height > max_pixels:
            raise ImageTooLargeError(f"{rgb.width}x{rgb.height} is more than {max_pixels} pixels")
        return
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        raise BadInputError(f"OCR needs an HxWx3 uint8 RGB array, got {type(rgb).__name__} {shape}")
    if rgb.shape[0] * rgb.shape[1] > max_pixels:
        raise ImageTooLargeError(f"{rgb.shape[1]}x{rgb.shape[0]} is more than {max_pixels} pixels")


def read_text(
    session,
    rgb: np.ndarray | Image.Image,
    *,
    detector: str | None = None,
    recognizer: str | None = None,
    min_det_score: float | None = None,
    max_resolution: int | None = None,
    min_rec_score: float | None = None,
    host_path: str = "exact",
) -> OcrResult:
    """Text lines of one RGB image with boxes in its pixels; lines scoring <= min_rec_score are dropped.

    The detector's input is held to HAILO_IMMICH_OCR_MAX_RESOLUTION squared (`bounded_resolution`);
    when that lowers max_resolution, `notes` says so.

    A Pillow image is used as it is (Immich's resize and crops are Pillow's; no array copy is made
    unless the detector tiles). host_path "fast" resizes and crops with OpenCV instead (not exact).
    """
    _check_image(rgb, session.settings.max_image_pixels)
    det_recipe = session.resolve("ocr-detection", detector)
    rec_recipe = session.resolve("ocr-recognition", recognizer)
    if max_resolution is not None and max_resolution < 32:
        raise BadInputError(f"maxResolution must be at least 32, got {max_resolution}")
    tiles = det_recipe.preprocess.get("resize", "short-side") == "tiles"
    fast = host_path == "fast"
    pil = rgb if isinstance(rgb, Image.Image) else None
    array = None if pil is not None else np.ascontiguousarray(rgb)
    if array is None and (tiles or fast):
        with session.host_time(det_recipe.id):
            array = np.asarray(pil, dtype=np.uint8)
    if pil is None and not (tiles or fast):
        with session.host_time(det_recipe.id):
            pil = Image.fromarray(array)
    width, height = pil.size if pil is not None else (array.shape[1], array.shape[0])
    notes: tuple[str, ...] = ()
    if not tiles:  # tiled detection holds its own bound (max_tiles)
        requested = int(max_resolution if max_resolution is not None else det_recipe.preprocess.get("max_resolution", 736))
        max_resolution, lowered = bounded_resolution(requested, width, height, session.settings.ocr_max_resolution,
                                                     int(det_recipe.preprocess.get("multiple", 32)))
        notes = (lowered,) if lowered else ()
    det = detect_text(session, det_recipe, array, None if fast else pil, min_score=min_det_score, max_resolution=max_resolution,
                      width=width, height=height)
    rec_model = session.model(rec_recipe.id)
    if len(det.boxes) == 0:
        return OcrResult([], width, height, det.provenance, rec_model.provenance, det.boxes, det.scores, det.tiles, notes)
    # Crops go to the recogniser in Immich's order: batch composition (and so padding) then matches.
    crop_order = immich_order(det.boxes)
    with session.host_time(rec_recipe.id):
        if fast:
            crops = crop_lines_fast(array, det.boxes[crop_order])
        else:
            pil = pil if pil is not None else Image.fromarray(array)
            crops = crop_lines(pil, det.boxes[crop_order])
    rec = recognize(session, rec_recipe, crops)
    texts: dict[int, tuple[str, float]] = {int(i): (t, s) for i, t, s in zip(crop_order.tolist(), rec.texts, rec.scores)}
    threshold = float(min_rec_score if min_rec_score is not None else rec_recipe.postprocess.get("min_score", 0.8))
    lines = [
        OcrLine(texts[i][0], det.boxes[i].copy(), float(det.scores[i]), texts[i][1], i)
        for i in reading_order(det.boxes).tolist()
        if texts[i][1] > threshold
    ]
    return OcrResult(lines, width, height, det.provenance, rec.provenance, det.boxes, det.scores, det.tiles, notes)


def immich_response_order(result: OcrResult) -> list[tuple[OcrLine, float]]:
    """(line, reported boxScore) in the order Immich's official service answers, quirks included.

    Immich sorts its boxes with a line sort that indexes line ids twice (not a reading order), and
    returns box scores in the detector's order, unsorted: the i-th reported boxScore belongs to the
    i-th detected box, not to the i-th reported box. The server's protocol module uses this to
    answer byte-for-byte like the official service; everything else uses `result.lines`.
    """
    by_index = {line.det_index: line for line in result.lines}
    out = []
    for position, det_index in enumerate(immich_order(result.detections).tolist()):
        line = by_index.get(det_index)
        if line is not None:
            out.append((line, float(result.detection_scores[position])))
    return out
