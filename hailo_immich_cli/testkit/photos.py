"""Real sample photos (they ship inside scikit-image, no download) and a photo library built from
them: every format the indexer reads, EXIF orientations, nested folders, a corrupt file and a
non-image, so an index run sees what a real folder holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def sample_photos() -> dict[str, np.ndarray]:
    """Five real photos as RGB uint8 (needs scikit-image, a test extra)."""
    from skimage import data

    def rgb(img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3])

    return {
        "astronaut": rgb(data.astronaut()),  # one face
        "camera": rgb(data.camera()),  # one face (cameraman)
        "chelsea": rgb(data.chelsea()),  # a cat, no face
        "coffee": rgb(data.coffee()),  # no face
        "page": rgb(data.page()),  # printed text
    }


FORMATS = (("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("tif", "TIFF"), ("heic", "HEIF"))


# EXIF orientation -> how to turn the upright image into the stored pixels (the viewer undoes it).
ORIENT_STORE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def save_image(img: Image.Image, path: Path, fmt: str, orientation: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    kwargs: dict[str, Any] = {}
    if fmt in ("JPEG", "WEBP", "HEIF"):
        kwargs["quality"] = 90
    if orientation != 1:
        img = img.transpose(ORIENT_STORE[orientation])
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    img.save(path, fmt, **kwargs)
    return path


def variant(rgb: np.ndarray, i: int, max_side: int) -> Image.Image:
    """A distinct, deterministic variant of a photo: crop, flip, brightness, size."""
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(i)
    cut = int(rng.integers(0, 4))
    top, left = cut * h // 40, cut * w // 40
    crop = rgb[top:h - (3 - cut) * h // 40, left:w - (3 - cut) * w // 40]
    if i % 2:
        crop = crop[:, ::-1]
    gain = 0.85 + 0.3 * rng.random()
    crop = np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(crop))
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)
    return img


SIGN_WORDS = ("HARBOUR MARKET", "OPEN SUNDAY", "PLATFORM 9", "NO PARKING")


def sign(words: str, width: int = 480, height: int = 160) -> Image.Image:
    """A photo of a sign: dark words on a light board, for OCR."""
    import cv2

    img = np.full((height, width, 3), 235, np.uint8)
    cv2.putText(img, words, (16, height // 2 + 18), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (20, 20, 20), 3, cv2.LINE_AA)
    return Image.fromarray(img)


def make_library(root: Path, photos: dict[str, np.ndarray], count: int = 300, max_side: int = 256) -> dict[str, Any]:
    """`count` real images under nested folders, plus a corrupt JPEG and a text file. Returns a manifest."""
    names = sorted(photos)
    manifest: dict[str, Any] = {"images": [], "corrupt": None, "non_image": None, "rotated": [], "sizes": {}}
    for i in range(count):
        name = names[i % len(names)]
        ext, fmt = FORMATS[(i // len(names)) % len(FORMATS)]
        folder = root / f"album{i % 4}" / (f"sub{i % 3}" if i % 2 else "")
        orientation = (1, 6, 3, 8)[(i // 7) % 4] if fmt == "JPEG" else 1
        img = variant(photos[name], i, max_side)
        path = save_image(img, folder / f"{name}_{i:04d}.{ext}", fmt, orientation)
        manifest["images"].append(str(path))
        manifest["sizes"][str(path)] = img.size
        if orientation != 1:
            manifest["rotated"].append((str(path), orientation))
    manifest["signs"] = {}
    for j, words in enumerate(SIGN_WORDS):
        path = save_image(sign(words), root / "signs" / f"sign_{j}.{('png', 'jpg')[j % 2]}", ("PNG", "JPEG")[j % 2])
        manifest["signs"][words] = str(path)
    corrupt = root / "album0" / "broken.jpg"
    good = Path(manifest["images"][0]).read_bytes()
    corrupt.write_bytes(good[: len(good) // 3] + b"\x00garbage")
    corrupt2 = root / "album1" / "not_really.png"
    corrupt2.write_bytes(b"this is not a PNG at all")
    notes = root / "album2" / "notes.txt"
    notes.write_text("not an image")
    manifest["corrupt"] = [str(corrupt), str(corrupt2)]
    manifest["non_image"] = str(notes)
    return manifest

