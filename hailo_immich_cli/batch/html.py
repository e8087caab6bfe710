"""Results you can look at: one self-contained HTML page for search, people and duplicates.

Thumbnails are made once per content and size and cached beside the database (`<db>.thumbs/`),
then embedded in the page as data URIs, so the page opens from the file system anywhere, with no
server and no script. Face boxes are drawn over the thumbnails in CSS percentages of the upright
photo, so the cached thumbnails serve every page. A grid that reflows keeps it usable at a phone's
width. Every page names the model and backend that produced what it shows.
"""

from __future__ import annotations

import base64
import html
import io
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from hailo_immich_cli.errors import BadInputError

THUMB_SIDE = 320
_MISSING = ("data:image/svg+xml;base64," + base64.b64encode(
    b'<svg xmlns="http://www.w3.org/2000/svg" width="320" height="240"><rect width="320" height="240" fill="#ddd"/>'
    b'<text x="160" y="125" font-size="18" text-anchor="middle" fill="#555">not readable</text></svg>').decode())


def thumbs_dir(db_path: Path | str) -> Path:
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + ".thumbs")


@dataclass
class Card:
    """One photo on a page: where it is, what to say under it, which face boxes to draw."""

    path: str
    lines: list[str]
    boxes: list[list[float]] = field(default_factory=list)
    badge: str | None = None


@dataclass
class Section:
    title: str
    cards: list[Card]


class Thumbnails:
    """Cached JPEG thumbnails keyed by content hash (a renamed photo reuses its thumbnail)."""

    def __init__(self, db_path: Path | str, conn: sqlite3.Connection, side: int = THUMB_SIDE):
        self.dir = thumbs_dir(db_path)
        self.conn = conn
        self.side = side
        self.made = 0

    def facts(self, path: str) -> tuple[str | None, int | None, int | None]:
        row = self.conn.execute("SELECT hash, width, height FROM files WHERE path = ?", (path,)).fetchone()
        return (row[0], row[1], row[2]) if row else (None, None, None)

    def data_uri(self, path: str, content: str | None) -> str:
        cached = self.dir / f"{content}-{self.side}.jpg" if content else None
        if cached is None or not cached.is_file():
            data = self._make(path)
            if data is None:
                return _MISSING
            if cached is not None:
                try:
                    self.dir.mkdir(parents=True, exist_ok=True)
                    tmp = cached.with_suffix(".tmp")
                    tmp.write_bytes(data)
                    tmp.replace(cached)
                except OSError:
                    pass  # a read-only place: the page still gets the thumbnail, it is just not kept
            self.made += 1
        else:
            data = cached.read_bytes()
        return "data:image/jpeg;base64," + base64.b64encode(data).decode()

    def _make(self, path: str) -> bytes | None:
        from hailo_immich_cli.imaging import decode_image

        try:
            image = decode_image(Path(path), exif_transpose=True, draft_min_side=self.side)
        except (BadInputError, OSError):
            return None
        img = Image.fromarray(image.rgb)
        img.thumbnail((self.side, self.side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=82)
        return out.getvalue()


_CSS = """
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,sans-serif;color:#222;background:#f6f6f6}
header{padding:12px 16px;background:#fff;border-bottom:1px solid #ddd}h1{font-size:18px;margin:0 0 4px;overflow-wrap:anywhere}
.meta{color:#555;font-size:12px;overflow-wrap:anywhere}h2{font-size:15px;margin:16px 16px 8px;overflow-wrap:anywhere}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;padding:0 16px 16px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;overflow:hidden;min-width:0}
.card.keep{border:2px solid #2a7d2a}.pic{position:relative;line-height:0}.pic img{width:100%;height:auto;display:block}
.box{position:absolute;border:2px solid #ff3b30;border-radius:2px}
.cap{padding:6px 8px;font-size:12px}.cap div{overflow-wrap:anywhere}.path{color:#555}
.badge{display:inline-block;background:#2a7d2a;color:#fff;border-radius:3px;padding:0 5px;font-size:11px}
"""


def _card_html(card: Card, thumbs: Thumbnails) -> str:
    content, width, height = thumbs.facts(card.path)
    src = thumbs.data_uri(card.path, content)
    boxes = ""
    if width and height:
        for x1, y1, x2, y2 in card.boxes:
            style = (f"left:{100 * x1 / width:.2f}%;top:{100 * y1 / height:.2f}%;"
                     f"width:{100 * (x2 - x1) / width:.2f}%;height:{100 * (y2 - y1) / height:.2f}%")
            boxes += f'<span class="box" style="{style}"></span>'
    badge = f'<span class="badge">{html.escape(card.badge)}</span> ' if card.badge else ""
    lines = "".join(f"<div>{html.escape(line)}</div>" for line in card.lines)
    keep = " keep" if card.badge == "keep" else ""
    return (f'<div class="card{keep}"><div class="pic"><img src="{src}" alt="{html.escape(Path(card.path).name)}">{boxes}</div>'
            f'<div class="cap">{badge}{lines}<div class="path">{html.escape(card.path)}</div></div></div>')


def write_page(out: Path | str, db_path: Path | str, conn: sqlite3.Connection, title: str, facts: dict[str, Any],
               sections: Iterable[Section]) -> dict[str, int]:
    """Write the page atomically; returns how many cards and how many thumbnails had to be made."""
    thumbs = Thumbnails(db_path, conn)
    meta = " · ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in facts.items() if v is not None)
    body, cards = [], 0
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2><div class=\"grid\">")
        body += [_card_html(c, thumbs) for c in section.cards]
        cards += len(section.cards)
        body.append("</div>")
    if not cards:
        body.append('<h2>nothing found</h2>')
    page = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title><link rel=\"icon\" href=\"data:,\"><style>{_CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><div class=\"meta\">{meta}</div>"
        f"<div class=\"meta\">made {time.strftime('%Y-%m-%d %H:%M:%S')} by hailo-immich from {html.escape(str(db_path))}</div>"
        f"</header>{''.join(body)}</body></html>"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return {"cards": cards, "thumbnails_made": thumbs.made}
