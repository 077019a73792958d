"""predictions.html: one self-contained page (works from file://, nothing fetched): each image as
given, its 32x32 view, the map over it and the top-k bars, then what could not be predicted."""
from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

from PIL import Image

from ..explain.report import script_json
from ..png import array_png_bytes
from .images import Decoded

TEMPLATE = Path(__file__).with_name("predict_page.html")


def _uri(png: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(png).decode()


def _jpeg(rgb) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def render_page(record: dict, decoded: list[Decoded], overlays: list[bytes]) -> str:
    """The page of predictions.json's content `record`, with the images inside it."""
    rows = [{**r, "given": _uri(_jpeg(d.thumb), "jpeg"), "view": _uri(array_png_bytes(d.view)),
             "overlay_uri": _uri(o) if record["method"] else None}
            for r, d, o in zip(record["predictions"], decoded, overlays)]
    fields = {"run_id": html.escape(record["run_id"], quote=True),
              "data": script_json({**record, "predictions": rows})}
    return re.sub(r"\{\{(run_id|data)\}\}", lambda m: fields[m.group(1)], TEMPLATE.read_text())
