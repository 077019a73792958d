"""Your images as the model takes them: files, folders and globs found, each decoded by Pillow
(in a thread pool), converted to RGB (grayscale and palette expanded, alpha composited on white)
and made 32x32 the documented way: the shorter side resized to 32 with antialiasing (Pillow's
bilinear filter widened to the scale, as torchvision's `Resize(32, antialias=True)`), then the
centre 32x32 cropped. A file that cannot be used is a `Failed` with one line saying why."""
from __future__ import annotations

import glob
import os
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

SIZE = 32  # the model's input side
THUMB = 160  # the longest side of the page's copy of an image as given
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's decompression-bomb limit


@dataclass
class Decoded:
    """One usable image: the 32x32 view and a small copy of the image as given."""
    path: str
    view: np.ndarray  # (32, 32, 3) uint8
    thumb: np.ndarray  # (h, w, 3) uint8, longest side <= THUMB
    size: tuple[int, int]  # width, height as given
    mode: str  # Pillow's mode as given (RGB, L, P, RGBA, ...)


@dataclass
class Failed:
    path: str
    error: str


def image_extensions() -> set[str]:
    """Every file extension Pillow can open (lower case, with the dot)."""
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def special(path: str) -> str | None:
    """What a path is when it is no regular file (a FIFO, a socket, a device), else None:
    opening one for reading can wait forever, so none is ever opened."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), None)


def find_inputs(inputs: list[str]) -> tuple[list[str], list[Failed]]:
    """Files as given (always tried), folders searched recursively for image files (hidden
    files and folders skipped), globs expanded; (paths in order, each once; what was not
    found, and special files, named and never opened)."""
    exts, paths, missing = image_extensions(), [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [str(Path(root) / f) for f in sorted(files)
                          if not f.startswith(".") and Path(f).suffix.lower() in exts]
            if not found:
                missing.append(Failed(item, "a folder with no image files"))
            paths += found
        elif p.exists():
            paths.append(str(p))
        elif glob.has_magic(item):
            found = sorted(glob.glob(item, recursive=True))
            files = [f for f in found if Path(f).is_file()]
            if not files:
                missing.append(Failed(item, "no file matches"))
            paths += files
        else:
            missing.append(Failed(item, "no such file or folder"))
    first: dict[str, str] = {}  # each file once, where it first appears
    for x in paths:
        first.setdefault(os.path.realpath(x), x)
    kept = []
    for x in first.values():
        kind = special(x)
        if kind:
            missing.append(Failed(x, f"{kind}, not an image file (never opened)"))
        else:
            kept.append(x)
    return kept, missing


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB, with transparency composited on white and 16-bit grey scaled to 8 bits."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        im = Image.fromarray((np.asarray(im, dtype=np.uint16) // 257).astype(np.uint8))
    elif im.mode in ("I", "F"):  # 32-bit: assume 0..255 (clipped), as Pillow's convert("L")
        im = Image.fromarray(np.asarray(im, dtype=np.float64).clip(0, 255).astype(np.uint8))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert("RGB")
    return im.convert("RGB")


def to_view(im: Image.Image) -> Image.Image:
    """The shorter side resized to 32 (antialiased bilinear), then the centre 32x32."""
    w, h = im.size
    if min(w, h) != SIZE:
        short, long = min(w, h), max(w, h)
        long = int(SIZE * long / short)  # truncated, as torchvision's Resize
        size = (SIZE, long) if w <= h else (long, SIZE)
        im = im.resize(size, Image.Resampling.BILINEAR)
        w, h = im.size
    left, top = int(round((w - SIZE) / 2.0)), int(round((h - SIZE) / 2.0))
    return im.crop((left, top, left + SIZE, top + SIZE))


def prepare(im: Image.Image, path: str = "") -> Decoded:
    """A PIL image (any size and mode) as the model takes it, with its page thumbnail."""
    size, mode = im.size, im.mode
    rgb = to_rgb(im)
    thumb = rgb.copy()
    thumb.thumbnail((THUMB, THUMB), Image.Resampling.BILINEAR)
    return Decoded(path, np.asarray(to_view(rgb), dtype=np.uint8).copy(),
                   np.asarray(thumb, dtype=np.uint8).copy(), size, mode)


def _open_regular(path: str):
    """The file opened for reading without waiting on it (O_NONBLOCK) and checked to be a
    regular file (a FIFO swapped in after find_inputs looked is still refused)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(path) if os.path.isdir(path) else ValueError("not a regular file")
    return os.fdopen(fd, "rb")


def decode(path: str) -> Decoded | Failed:
    """One file, or why it cannot be used (one line)."""
    try:
        with _open_regular(path) as f, Image.open(f) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:  # checked before decoding: a bomb is never expanded
                return Failed(path, f"a decompression bomb? {w}x{h} pixels is more than "
                                    f"{MAX_PIXELS:,}")
            if w < 1 or h < 1:
                return Failed(path, f"an empty image ({w}x{h})")
            im.load()
            return prepare(im, path)
    except Image.DecompressionBombError as e:
        return Failed(path, f"a decompression bomb? ({e})")
    except UnidentifiedImageError:
        return Failed(path, "not an image Pillow can read")
    except IsADirectoryError:
        return Failed(path, "a folder, not an image")
    except PermissionError:
        return Failed(path, "permission denied")
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt data
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        return Failed(path, f"unreadable image, truncated or corrupt ({text[:120]})")


def decode_all(paths: list[str], threads: int = 0) -> list[Decoded | Failed]:
    """Every path decoded in a thread pool (Pillow releases the GIL while decoding), in order."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not grey pixels
    if not paths:
        return []
    workers = threads or min(16, os.cpu_count() or 1, len(paths))
    pool = ThreadPoolExecutor(max_workers=workers)
    # Pillow warns of a large image as it opens it; decode checks the size and says why, so
    # the warning (global state: set here, before the threads start) is not printed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            out = list(pool.map(decode, paths))
        except BaseException:  # Ctrl-C or SIGTERM: the images not started are dropped at once
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    return out
