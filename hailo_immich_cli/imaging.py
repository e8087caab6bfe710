"""Decode images the way Immich's service does (Pillow, RGB), with bounds that keep bad input harmless."""

from __future__ import annotations

import io
import threading
import warnings
from concurrent.futures import wait
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hailo_immich_cli import cores
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


HOST_PATHS = ("exact", "fast")


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
    """One decoded image: the decoder's own Pillow image (`keep_pil`), a NumPy array, or both.

    Pillow-based steps (Immich's CLIP and OCR resizes) take `pil` as it is; `rgb` is made from it on
    first use, once, so a request never copies its pixels back and forth between the two.
    """

    width: int  # full-resolution size, as Immich reports imageWidth (oriented only if asked)
    height: int
    format: str
    orientation: int = 1
    pil: Image.Image | None = field(default=None, repr=False)
    array: np.ndarray | None = field(default=None, repr=False)

    @cached_property
    def rgb(self) -> np.ndarray:
        """HxWx3 uint8, C-contiguous; smaller than width x height after a draft decode."""
        if self.array is not None:
            return self.array
        assert self.pil is not None
        return np.ascontiguousarray(np.asarray(self.pil, dtype=np.uint8))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the decoded pixels."""
        if self.array is not None:
            return int(self.array.shape[1]), int(self.array.shape[0])
        assert self.pil is not None
        return self.pil.size

    def for_pillow_steps(self, host_path: str) -> "Image.Image | np.ndarray":
        """What Pillow-based steps take: the decoder's own image on the exact path, else the array."""
        return self.pil if host_path == "exact" and self.pil is not None else self.rgb

    @property
    def reduction(self) -> float:
        """Full-resolution pixels per decoded pixel (1.0 unless a draft decode shrank it)."""
        return self.width / self.size[0]


def draft_request(width: int, height: int, min_side: int | None) -> tuple[int, int] | None:
    """The size to ask the JPEG decoder for so its shorter side stays >= min_side (None: full size).

    The decoder scales by 1/2, 1/4 or 1/8 in the DCT and picks the smallest scale not below the
    request, so the decoded image always covers min_side.
    """
    if not min_side:
        return None
    scale = min(width, height) / min_side
    if scale < 2:
        return None
    return max(1, int(width / scale)), max(1, int(height / scale))


def decode_image(
    source: bytes | Path | str,
    max_pixels: int = 100_000_000,
    exif_transpose: bool = False,
    draft_min_side: int | Callable[[int, int], int | None] | None = None,
    keep_pil: bool = False,
    decoder: str = "pil",
) -> DecodedImage:
    """Decode to RGB uint8.

    exif_transpose=False matches Immich's service (its previews are already upright);
    batch mode passes True because camera originals are not. draft_min_side lets the JPEG
    decoder scale by 1/2..1/8 in the DCT when the model needs far fewer pixels; it may be a function
    of the full (width, height). keep_pil=True keeps the decoder's Pillow image (no array copy until
    `rgb` is asked for): the server's exact path feeds it to Immich's Pillow resizes as it is.
    decoder="fast" (the fast host path) decodes JPEGs with libjpeg-turbo (simplejpeg) straight into
    an RGB array, DCT-scaled like a draft, with its fast IDCT and upsampling (not Pillow's pixels).
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
            request = None
            if draft_min_side and img.format == "JPEG":
                want = draft_min_side(width, height) if callable(draft_min_side) else draft_min_side
                request = draft_request(width, height, want)
            if decoder == "fast" and img.format == "JPEG" and not exif_transpose:
                array = _fast_jpeg(source if isinstance(fp, io.BytesIO) else Path(fp).read_bytes(), width, height, request)
                if array is not None:
                    return DecodedImage(width, height, "JPEG", orientation, array=array)
            if (not keep_pil and decoder == "pil" and request is None and img.format == "JPEG" and img.mode in ("RGB", "L")
                    and not (exif_transpose and orientation != 1)):
                array = _exact_jpeg(source if isinstance(fp, io.BytesIO) else Path(fp).read_bytes())
                if array is not None:
                    return DecodedImage(width, height, "JPEG", orientation, array=array)
            if request is not None:
                img.draft("RGB", request)
            img.load()
            fmt = img.format or "unknown"
            if exif_transpose and orientation != 1:
                img = ImageOps.exif_transpose(img)
            if img.mode != "RGB":
                img = img.convert("RGB")
            rgb = None if keep_pil else np.asarray(img, dtype=np.uint8)
    except (ImageTooLargeError, BadInputError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{label}: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise BadInputError(f"{label}: not a decodable image") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(f"{label}: corrupt image: {exc}") from exc
    if exif_transpose and orientation in (5, 6, 7, 8):
        width, height = height, width
    if keep_pil:
        return DecodedImage(width, height, fmt, orientation, pil=img)
    return DecodedImage(width, height, fmt, orientation, array=np.ascontiguousarray(rgb))


def _exact_jpeg(data: bytes | bytearray | memoryview) -> np.ndarray | None:
    """A JPEG's RGB pixels exactly as Pillow decodes them (the same libjpeg-turbo with the same
    accurate IDCT and smooth upsampling; tested equal on every chroma subsampling, progressive,
    restart markers and greyscale), straight into one array: less decoding, and no Pillow image to
    allocate and copy out of. For array consumers only: a Pillow image made from it would cost
    another full-size allocation. None when simplejpeg refuses the file (CMYK, any libjpeg
    warning): Pillow then decodes it, or says why it cannot."""
    import simplejpeg

    try:
        array = simplejpeg.decode_jpeg(bytes(data), "RGB", fastdct=False, fastupsample=False)
    except (ValueError, RuntimeError, OSError):
        return None
    return array if array.ndim == 3 and array.shape[2] == 3 else None


def _fast_jpeg(data: bytes | bytearray | memoryview, width: int, height: int, request: tuple[int, int] | None) -> np.ndarray | None:
    """RGB array of a JPEG at the largest DCT reduction (1/2, 1/4, 1/8) still >= request, with
    libjpeg-turbo's fast IDCT and upsampling; None if it cannot decode it (Pillow then says why)."""
    import simplejpeg

    factor = 1
    if request is not None:
        factor = next((f for f in (8, 4, 2) if -(-width // f) >= request[0] and -(-height // f) >= request[1]), 1)
    try:
        # min sizes of exactly 1/factor make libjpeg-turbo pick that power-of-two scale (its M/8 scales are slower)
        array = simplejpeg.decode_jpeg(bytes(data), "RGB", fastdct=True, fastupsample=True,
                                       min_width=-(-width // factor), min_height=-(-height // factor))
    except (ValueError, RuntimeError, OSError):
        return None
    if array.ndim != 3 or array.shape[2] != 3:
        return None
    return array


def fast_resize(src: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Resize for the fast host path: exact 2x area halvings (OpenCV's quick integer path) while the
    image is still at least twice the target, then one bilinear step; written into `out` if given."""
    import cv2

    width, height = size
    while src.shape[1] >= 2 * width and src.shape[0] >= 2 * height:
        src = cv2.resize(src, (src.shape[1] // 2, src.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if src.shape[1] == width and src.shape[0] == height:
        if out is None:
            return src
        out[...] = src
        return out
    resized = cv2.resize(src, (width, height), dst=out, interpolation=cv2.INTER_LINEAR)
    if out is not None and resized is not out:  # OpenCV writes in place only into a matching contiguous buffer
        out[...] = resized
        return out
    return resized



# ---- Pillow's steps as Immich's Pillow runs them, on idle cores ------------------------------------
_SPLIT_MIN_PIXELS = 1_000_000  # below this, handing rows to another thread costs more than it saves
T = TypeVar("T")
R = TypeVar("R")


_MAP_MIN_PIXELS = 20_000  # a bicubic perspective crop of this size takes ~1 ms


def pil_map(work: Callable[[T], R], items: Sequence[T], pixels: int) -> list[R]:
    """[work(item) for item in items], shared with idle cores when no other split step runs and
    the `pixels` to produce are worth a hand-off (`cores.claim`). `work` must release the GIL (Pillow's resize and
    transform do); each item's result is the same either way."""
    with cores.claim() as parts:
        if parts < 2 or len(items) < 2 or pixels < _MAP_MIN_PIXELS:
            return [work(item) for item in items]
        results: list[R | None] = [None] * len(items)
        order = iter(range(len(items)))
        lock = threading.Lock()

        def stop() -> None:
            with lock:
                for _ in order:  # nothing more is handed out
                    pass

        def drain() -> None:
            while True:
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                try:
                    results[i] = work(items[i])
                except BaseException:
                    stop()
                    raise

        helpers = [cores.pool().submit(drain) for _ in range(min(parts, len(items)) - 1)]
        try:
            drain()
        finally:  # no helper outlives the call
            wait(helpers)
        for helper in helpers:
            helper.result()
        return results  # type: ignore[return-value]


def _horizontal(img: Image.Image, width: int, top: int, bottom: int, resample: int) -> Image.Image:
    # Pillow skips the vertical pass when the height is unchanged; a row's output depends on that row only.
    band = img if (top, bottom) == (0, img.height) else img.crop((0, top, img.width, bottom))
    return band.resize((width, bottom - top), resample)


def _vertical(wide: Image.Image, height: int, left: int, right: int, resample: int) -> Image.Image:
    # Only the vertical pass runs when the width is unchanged; a column's output depends on that column only.
    return wide.crop((left, 0, right, wide.height)).resize((right - left, height), resample)


def pil_resize(img: Image.Image, size: tuple[int, int], resample: int, keep_rows: tuple[int, int] | None = None) -> Image.Image:
    """Pillow's two-pass resize in the order Immich's Pillow (<= 12) runs it: horizontal, then
    vertical, through an 8-bit image. Pillow 13 runs the vertical pass first for some shapes, which
    moves a few pixel values; calling the passes one by one keeps Immich's pixels on any Pillow.

    When no other heavy step is running (`cores.claim`), the horizontal pass runs on row bands and the
    vertical pass on column bands in parallel threads (Pillow releases the GIL): same pixels, less
    wall time for a lone request, at the price of copying the bands (~10% more CPU).

    `keep_rows` (output rows [first, last)) says the caller crops the result to those rows: the
    horizontal pass then runs only on the source rows their vertical filter reads (`source_rows`),
    the others are left black, and the kept rows are Pillow's own pixels. For a portrait CLIP input
    that skips about a quarter of the work.
    """
    width, height = img.size
    if size[0] == width or size[1] == height:  # one pass only: no order to keep
        return img.resize(size, resample)
    top, bottom = source_rows(height, size[1], keep_rows, resample) if keep_rows else (0, height)
    with cores.claim() as parts:
        split = parts >= 2
        if not split or width * (bottom - top) < _SPLIT_MIN_PIXELS:
            band = _horizontal(img, size[0], top, bottom, resample)
            bands, cuts = [band], [top]
        else:
            cuts = [top + round(i * (bottom - top) / parts) for i in range(parts + 1)]
            bands = cores.fan_out([partial(_horizontal, img, size[0], a, b, resample) for a, b in zip(cuts, cuts[1:])])
        if (top, bottom) == (0, height) and len(bands) == 1:
            wide = bands[0]
        else:
            wide = Image.new(img.mode, (size[0], height))
            for first, band in zip(cuts, bands):
                wide.paste(band, (0, first))
        if not split or size[0] * height < _SPLIT_MIN_PIXELS:
            return wide.resize(size, resample)
        cols = [round(i * size[0] / parts) for i in range(parts + 1)]
        bands = cores.fan_out([partial(_vertical, wide, size[1], a, b, resample) for a, b in zip(cols, cols[1:])])
        out = Image.new(img.mode, size)
        for left, band in zip(cols, bands):
            out.paste(band, (left, 0))
        return out


_SUPPORT = {Image.Resampling.NEAREST: 0.5, Image.Resampling.BOX: 0.5, Image.Resampling.BILINEAR: 1.0,
            Image.Resampling.HAMMING: 1.0, Image.Resampling.BICUBIC: 2.0, Image.Resampling.LANCZOS: 3.0}


def source_rows(in_size: int, out_size: int, keep: tuple[int, int], resample: int) -> tuple[int, int]:
    """Source rows [first, last) that Pillow's vertical pass reads for output rows `keep`.

    The same window arithmetic as Pillow's coefficient table (centre +- support, each end rounded
    and clamped to the image), widened by one row on each side so rounding can never drop one.
    """
    scale = in_size / out_size
    support = _SUPPORT.get(resample, 3.0) * max(scale, 1.0)
    first = int((keep[0] + 0.5) * scale - support + 0.5)
    last = int((keep[1] - 0.5) * scale + support + 0.5)
    return max(0, first - 1), min(in_size, last + 1)
