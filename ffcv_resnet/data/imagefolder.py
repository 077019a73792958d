"""Image folders `train/<class>/<file>`, `test/<class>/<file>` (plain, or as a .tar/.tar.gz read
without extracting) -> validated splits.

Strict layout: exactly one dataset root; every file under a split sits at split/class/file in
one of CIFAR-10's class folders, once. Obvious litter (.DS_Store, ._* AppleDouble files,
Thumbs.db, __MACOSX/) and files outside train/ and test/ are skipped and counted; anything else is
an error. Every image must be 32x32 RGB.
"""
from __future__ import annotations

import io
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
from PIL import Image

from .cifar import (CLASSES, MAX_IMAGE_FILE_BYTES, MAX_SPLIT_IMAGES, SPLITS, Split,
                    check_split, tar_members)
from ..errors import DataError

LITTER = {".DS_Store", "Thumbs.db", "desktop.ini"}


def decode_image(raw: bytes, where: str) -> np.ndarray:
    """Image bytes (any format Pillow reads) -> (32, 32, 3) uint8; anything else is an error."""
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.mode != "RGB" or im.size != (32, 32):  # checked before decoding the pixels
                raise DataError(f"{where}: image is {im.size[0]}x{im.size[1]} {im.mode}, "
                                "expected 32x32 RGB")
            if getattr(im, "n_frames", 1) > 1:
                raise DataError(f"{where}: an animated image ({im.n_frames} frames)")
            im.load()
            return np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{where}: unreadable image ({e})") from None


def _is_litter(parts: tuple[str, ...]) -> bool:
    return "__MACOSX" in parts or parts[-1] in LITTER or parts[-1].startswith("._")


def _place(name: str, where: str) -> tuple[tuple[str, ...], str, str, str] | None:
    """(root, split, class, file) of a member path; None when it lies outside train/ and test/."""
    parts = PurePosixPath(name).parts
    at = next((i for i, p in enumerate(parts[:-1]) if p in SPLITS), None)
    if at is None:
        return None
    rest = parts[at + 1:]
    if len(rest) != 2:
        raise DataError(f"{where}: '{name}' is not at split/class/file (nested or misplaced)")
    if rest[0] not in CLASSES:
        raise DataError(f"{where}: unknown class folder '{parts[at]}/{rest[0]}' "
                        f"(expected {', '.join(CLASSES)})")
    return parts[:at], parts[at], rest[0], rest[1]


class _Layout:
    """Checks member paths one by one: one root, split/class/file, each once; counts the rest."""

    def __init__(self, where: str):
        self.where, self.roots, self.seen, self.skipped = where, set(), set(), []

    def wanted(self, name: str) -> bool:
        """True for an image to read; False (counted) for litter and files outside the splits."""
        parts = PurePosixPath(name).parts
        placed = None if _is_litter(parts) else _place(name, self.where)
        if placed is None:
            self.skipped.append(name)
            return False
        root, split, cls, fname = placed
        self.roots.add(root)
        if len(self.roots) > 1:
            a, b = sorted("/".join(r) or "." for r in self.roots)[:2]
            raise DataError(f"{self.where}: two dataset roots, '{a}' and '{b}' (expected one)")
        if (split, cls, fname) in self.seen:
            raise DataError(f"{self.where}: '{split}/{cls}/{fname}' appears twice")
        self.seen.add((split, cls, fname))
        return True


def _read(items: Iterator[tuple[str, bytes]], layout: _Layout, log) -> dict[str, Split]:
    """(path, bytes) of the wanted images -> splits, sorted by class then file name. Each image
    is decoded as it arrives, so memory holds pixels, never a pile of undecoded files."""
    found: dict[str, list[tuple[int, str, np.ndarray]]] = {s: [] for s in SPLITS}
    for name, raw in items:
        _, split, cls, fname = _place(name, layout.where)
        if len(found[split]) >= MAX_SPLIT_IMAGES:
            raise DataError(f"{layout.where}: more than {MAX_SPLIT_IMAGES} images under "
                            f"'{split}/', far more than CIFAR-10 holds")
        found[split].append((CLASSES.index(cls), fname, decode_image(raw, f"{layout.where}:{name}")))
    if layout.skipped:
        n = len(layout.skipped)
        log(f"skipped {n} file{'s' if n > 1 else ''} outside split/class/file or litter "
            f"(e.g. {layout.skipped[0]})")
    return {split: _stack(entries, split, layout.where) for split, entries in found.items()}


def _stack(entries: list[tuple[int, str, np.ndarray]], split: str, where: str) -> Split:
    if not entries:
        raise DataError(f"{where}: empty split, no images under '{split}/'")
    present = {label for label, _, _ in entries}
    missing = [c for i, c in enumerate(CLASSES) if i not in present]
    if missing:
        raise DataError(f"{where}: missing class folder '{split}/{missing[0]}'")
    entries.sort(key=lambda e: (e[0], e[1]))
    images = np.stack([image for _, _, image in entries])
    return check_split(Split(images, np.array([e[0] for e in entries], dtype=np.int64)),
                       f"{where} ({split})")


def read_image_folder(root: Path, log=print) -> dict[str, Split]:
    """An image folder root/{train,test}/<class>/<file> -> splits."""
    layout = _Layout(str(root))

    def items() -> Iterator[tuple[str, bytes]]:
        for path in sorted(root.rglob("*")):  # everything: what lies outside the splits counts
            name = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise DataError(f"{path}: a symbolic link (only regular files are read)")
            if path.is_dir():
                continue
            if not path.is_file():
                raise DataError(f"{path}: a special file (only regular files are read)")
            if layout.wanted(name):
                if path.stat().st_size > MAX_IMAGE_FILE_BYTES:
                    raise DataError(f"{path}: {path.stat().st_size} bytes, too large for a "
                                    "32x32 image")
                yield name, path.read_bytes()

    return _read(items(), layout, log)


def read_image_tar(path: Path, log=print) -> dict[str, Split]:
    """A .tar/.tar.gz of an image folder (under any one root) -> splits, never extracted."""
    layout = _Layout(str(path))
    return _read(tar_members(path, layout.wanted, MAX_IMAGE_FILE_BYTES), layout, log)
