"""predictions.html: one self-contained page (works from file://, nothing fetched): each image as
given, its 32x32 view, the map over it and the top-k bars, then what could not be predicted."""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from ..pages import data_uri, fill_page
from ..png import array_png_bytes
from .images import Decoded

TEMPLATE = Path(__file__).with_name("predict_page.html")


def _jpeg(rgb) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def render_page(record: dict, decoded: list[Decoded], overlays: list[bytes]) -> str:
    """The page of predictions.json's content `record`, with the images inside it."""
    rows = [{**r, "given": data_uri(_jpeg(d.thumb), "jpeg"),
             "view": data_uri(array_png_bytes(d.view)),
             "overlay_uri": data_uri(o) if record["method"] else None}
            for r, d, o in zip(record["predictions"], decoded, overlays)]
    return fill_page(TEMPLATE, {**record, "predictions": rows}, run_id=record["run_id"])
