"""Decode images the way Immich's service does (Pillow, RGB), with bounds that keep bad input harmless."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hailo_immich_cli.errors import BadInputError, ImageTooLargeError

_HEIF_REGISTERED = False

# decode_image checks its own max_pixels (HAILO_IMMICH_MAX_IMAGE_PIXELS) on the header's size before
# anything is decoded. Pillow's built-in bound (89,478,485 px warning, twice that an error) would
# otherwise fire first with its own number, so it is switched off for this process.
Image.MAX_IMAGE_PIXELS = None


def _register_heif() -> None:
    global _HEIF_REGISTERED
    if not _HEIF_REGISTERED:
        try:
            from pillow_heif import register_heif_opener

            register_heif_opener()
        except ImportError:  # pragma: no cover - pillow-heif is a dependency; HEIC then fails clearly
            pass
        _HEIF_REGISTERED = True


def too_many_pixels(label: str, width: int, height: int, max_pixels: int) -> str:
    return f"{label}: {width}x{height} is {width * height} pixels, more than the {max_pixels}-pixel limit (HAILO_IMMICH_MAX_IMAGE_PIXELS)"


def header_pixels(data: bytes) -> int:
    """Pixels the image's header claims (0 if unreadable): what decoding it will hold, known before decoding."""
    _register_heif()
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # undecodable input is decode_image's to report
        return 0
    return width * height


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # HxWx3 uint8, C-contiguous; smaller than width x height after a draft decode
    width: int  # full-resolution size, as Immich reports imageWidth (oriented only if asked)
    height: int
    format: str
    orientation: int = 1

    @property
    def reduction(self) -> float:
        """Full-resolution pixels per decoded pixel (1.0 unless a draft decode shrank it)."""
        return self.width / self.rgb.shape[1]


def decode_image(
    source: bytes | Path | str,
    max_pixels: int = 100_000_000,
    exif_transpose: bool = False,
    draft_min_side: int | None = None,
) -> DecodedImage:
    """Decode to RGB uint8.

    exif_transpose=False matches Immich's service (its previews are already upright);
    batch mode passes True because camera originals are not. draft_min_side lets the JPEG
    decoder scale by 1/2..1/8 in the DCT when the model needs far fewer pixels.
    """
    _register_heif()
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise BadInputError("empty image")
        fp: io.BytesIO | Path = io.BytesIO(bytes(source))
        label = "image"
    else:
        fp = Path(source)
        label = str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLargeError(too_many_pixels(label, width, height, max_pixels))
            orientation = 1
            try:
                orientation = int(img.getexif().get(0x0112, 1) or 1)
            except Exception:
                orientation = 1
            if draft_min_side and img.format == "JPEG":
                scale = min(width, height) / draft_min_side
                if scale >= 2:
                    img.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
            img.load()
            fmt = img.format or "unknown"
            if exif_transpose and orientation != 1:
                img = ImageOps.exif_transpose(img)
            if img.mode != "RGB":
                img = img.convert("RGB")
            rgb = np.asarray(img, dtype=np.uint8)
    except (ImageTooLargeError, BadInputError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{label}: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise BadInputError(f"{label}: not a decodable image") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(f"{label}: corrupt image: {exc}") from exc
    rgb = np.ascontiguousarray(rgb)
    if exif_transpose and orientation in (5, 6, 7, 8):
        width, height = height, width
    return DecodedImage(rgb=rgb, width=width, height=height, format=fmt, orientation=orientation)
