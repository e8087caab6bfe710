"""Requests as Immich's server sends them to /predict: the multipart form, and encoded images.

Immich's server posts with Node's fetch + FormData (undici): `entries` first, then either a file
part `image` (filename "blob", application/octet-stream) or a plain `text` field.
"""

from __future__ import annotations

import io
import json
import random
from typing import Any, Mapping

import numpy as np
from PIL import Image


def immich_form(entries: Mapping[str, Any] | str | None, image: bytes | None = None, text: str | None = None) -> tuple[bytes, str]:
    """(body, content type) of the multipart request Immich's server sends (undici's encoding)."""
    boundary = "----formdata-undici-0" + "".join(random.choice("0123456789") for _ in range(11))
    parts: list[bytes] = []
    if entries is not None:
        value = entries if isinstance(entries, str) else json.dumps(entries, separators=(",", ":"))
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="entries"\r\n\r\n'.encode() + value.encode() + b"\r\n")
    if image is not None:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="blob"\r\nContent-Type: application/octet-stream\r\n\r\n'
        parts.append(head.encode() + image + b"\r\n")
    if text is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\n'.encode() + text.encode() + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()

