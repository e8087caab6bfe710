"""Find image files under the paths a user gives, lazily, so a million-file folder costs no memory up front."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif", ".avif"}
)


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def iter_image_files(paths: Iterable[Path | str], recursive: bool = True) -> Iterator[Path]:
    """Yield image files: explicit files always (a bad one is reported later), folders by suffix, sorted."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from _walk(path, recursive)
        else:
            yield path


def _walk(folder: Path, recursive: bool) -> Iterator[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    yield from _walk(Path(entry.path), recursive)
            elif entry.is_file() and is_image_name(Path(entry.name)):
                yield Path(entry.path)
        except OSError:
            continue
