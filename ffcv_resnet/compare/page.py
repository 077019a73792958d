"""compare.html: one self-contained page (works from file://, nothing fetched) with the verdict,
the tables, and the fixed and broken images as tiles from one PNG inside the page."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from ..explain.report import script_json
from ..png import array_png_bytes
from .tiles import Tiles

TEMPLATE = Path(__file__).with_name("compare_page.html")


def render_page(c: dict, tiles: Tiles, summary: str) -> str:
    """The page for comparison `c` (compare.json's content) with its tiles."""
    sheet = ("data:image/png;base64," + base64.b64encode(array_png_bytes(tiles.sheet)).decode()
             if len(tiles.index) else "")
    data = {**c, "summary": summary, "tiles": tiles.rows(c["classes"]), "maps": tiles.maps,
            "sheet": sheet}
    title = f"{c['a'][0]['run_id']} and {c['b'][0]['run_id']}"
    fields = {"title": html.escape(title, quote=True), "data": script_json(data)}
    return re.sub(r"\{\{(title|data)\}\}", lambda m: fields[m.group(1)], TEMPLATE.read_text())
