"""The pages people open from disk (the report, compare.html, predictions.html): one template
each, filled here with its title, its data as script-safe JSON and the style they share; the
heat-map overlay they all draw; images as data: URIs."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps

from .records import dumps

# the style every page shares, in each template as {{page_style}} (a page sets --page-width)
PAGE_STYLE = """:root { --line: #d0d4da; --muted: #5b6470; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, "DejaVu Sans", sans-serif; margin: 0 auto; padding: 12px 24px;
       max-width: var(--page-width, 1400px); color: #1b1f24; }
h1 { font-size: 21px; margin: 4px 0; } h2 { font-size: 17px; margin: 18px 0 6px; }
.muted { color: var(--muted); }
table { border-collapse: collapse; }
code { font-size: 13px; }"""

# the helpers every page's script starts with, in each template as {{page_script}}
PAGE_SCRIPT = """"use strict";
const $ = (id) => document.getElementById(id);
function el(tag, props, ...children) {
  const node = Object.assign(document.createElement(tag), props || {});
  node.append(...children);
  return node;
}"""


def script_json(obj: Any) -> str:
    """Strict JSON that cannot end its <script> element early: <, > and & become \\u escapes,
    which JSON.parse reads back as the same characters."""
    text = dumps(obj, indent=None)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def fill_page(template: Path, data: Any, **text: str) -> str:
    """`template` with {{data}} (script-safe JSON), {{page_style}}, {{page_script}} and each
    {{name}} of `text` (HTML-escaped); a placeholder nothing fills is an error, not a blank."""
    fields = {**{k: html.escape(v, quote=True) for k, v in text.items()},
              "data": script_json(data), "page_style": PAGE_STYLE,
              "page_script": PAGE_SCRIPT}
    return re.sub(r"\{\{(\w+)\}\}", lambda m: fields[m.group(1)], Path(template).read_text())


def data_uri(data: bytes, kind: str = "png") -> str:
    """An image inside the page: data:image/<kind>;base64,..."""
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A jet-coloured map blended onto the image, as float RGB in [0, 1] (batches too)."""
    heat = colormaps["jet"](cam)[..., :3]
    return (1 - alpha) * image.astype(np.float32) / 255 + alpha * heat
