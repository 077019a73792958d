"""compare.html: one self-contained page (works from file://, nothing fetched) with the verdict,
the tables, and the fixed and broken images as tiles from one PNG inside the page."""
from __future__ import annotations

from pathlib import Path

from ..pages import data_uri, fill_page
from ..png import array_png_bytes
from .tiles import Tiles

TEMPLATE = Path(__file__).with_name("compare_page.html")


def render_page(c: dict, tiles: Tiles, summary: str) -> str:
    """The page for comparison `c` (compare.json's content) with its tiles."""
    sheet = data_uri(array_png_bytes(tiles.sheet)) if len(tiles.index) else ""
    data = {**c, "summary": summary, "tiles": tiles.rows(c["classes"]), "maps": tiles.maps,
            "sheet": sheet}
    title = f"{c['a'][0]['run_id']} and {c['b'][0]['run_id']}"
    return fill_page(TEMPLATE, data, title=title)
