"""PNG files of a run: figures and pixel arrays as PNG bytes, stamped with the run id in a text
chunk (so a picture can be traced to its run), and reading that stamp back."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_write_bytes  # noqa: E402


def png_bytes(fig, run_id: str | None = None, dpi: int = 110, tight: bool = True) -> bytes:
    """Render a figure to PNG (closing it), with the run id as a text chunk when given. `tight`
    crops to the drawn content, which costs a second draw: figures laid out exactly skip it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None,
                metadata={"run_id": run_id} if run_id else None)
    plt.close(fig)
    return buf.getvalue()


def array_png_bytes(rgb: np.ndarray, run_id: str | None = None) -> bytes:
    """uint8 (H, W, 3) pixels as PNG, exactly, with the run id in the same text chunk."""
    from PIL import Image, PngImagePlugin
    info = PngImagePlugin.PngInfo()
    if run_id:
        info.add_text("run_id", run_id)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def png_run_id(path: Path) -> str | None:
    """The run id a PNG of ours carries (None when it has none or is unreadable)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.text.get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def save_figure(fig, path: Path, run_id: str | None = None, dpi: int = 110) -> None:
    """Render to PNG and write it atomically."""
    atomic_write_bytes(Path(path), png_bytes(fig, run_id, dpi))
