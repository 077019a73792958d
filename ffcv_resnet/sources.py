"""CIFAR-10 sources -> validated uint8 arrays.

Sources: the official python archive (downloaded and MD5-checked, or a local copy), its extracted
`cifar-10-batches-py/` folder, or an image folder `train/<class>/*`, `test/<class>/*` (plain, or as a
.tar/.tar.gz read without extracting). Everything is read and checked before anything is written. The pickled official batches are
read in `pickled.py`.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from .errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
SPLITS = ("train", "test")


@dataclass
class Split:
    """One split: images (N, 32, 32, 3) uint8 RGB and labels (N,) int64 in 0..9."""
    images: np.ndarray
    labels: np.ndarray


def _checked(split: Split, where: str) -> Split:
    if len(split.labels) != len(split.images):
        raise DataError(f"{where}: {len(split.images)} images but {len(split.labels)} labels")
    if len(split.images) == 0:
        raise DataError(f"{where}: empty split")
    bad = (split.labels < 0) | (split.labels >= len(CLASSES))
    if bad.any():
        raise DataError(f"{where}: label {int(split.labels[bad][0])} out of range 0..9")
    return split


def _concat(parts: list[Split], where: str) -> Split:
    return _checked(Split(np.concatenate([p.images for p in parts]),
                          np.concatenate([p.labels for p in parts])), where)


def _tar_files(path: Path) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) for every regular file in a .tar/.tar.gz, streamed, never extracted."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isfile():
                    yield member.name, tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{path}: truncated or corrupt archive ({e})") from None


def decode_image(raw: bytes, where: str) -> np.ndarray:
    """Image bytes (any format Pillow reads) -> (32, 32, 3) uint8; anything else is an error."""
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            if im.mode != "RGB" or im.size != (32, 32):
                raise DataError(f"{where}: image is {im.size[0]}x{im.size[1]} {im.mode}, "
                                "expected 32x32 RGB")
            return np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{where}: unreadable image ({e})") from None


def _image_entries(items: Iterator[tuple[str, bytes]], where: str) -> dict[str, Split]:
    """(relative path, bytes) of an image folder -> splits, sorted by class then file name."""
    found: dict[str, list[tuple[int, str, bytes]]] = {s: [] for s in SPLITS}
    for name, raw in items:
        parts = Path(name).parts
        if len(parts) < 3 or parts[-3] not in SPLITS or parts[-1].startswith("."):
            continue  # READMEs, hidden files, anything outside train/ and test/
        split, cls, fname = parts[-3:]
        if cls not in CLASSES:
            raise DataError(f"{where}: unknown class folder '{split}/{cls}' "
                            f"(expected {', '.join(CLASSES)})")
        found[split].append((CLASSES.index(cls), fname, raw))
    out = {}
    for split, entries in found.items():
        if not entries:
            raise DataError(f"{where}: empty split, no images under '{split}/'")
        present = {label for label, _, _ in entries}
        missing = [c for i, c in enumerate(CLASSES) if i not in present]
        if missing:
            raise DataError(f"{where}: missing class folder '{split}/{missing[0]}'")
        entries.sort(key=lambda e: (e[0], e[1]))
        images = np.stack([decode_image(raw, f"{where}:{split}/{CLASSES[label]}/{fname}")
                           for label, fname, raw in entries])
        out[split] = _checked(Split(images, np.array([e[0] for e in entries], dtype=np.int64)),
                              f"{where} ({split})")
    return out


def _folder_files(root: Path) -> Iterator[tuple[str, bytes]]:
    for split in SPLITS:
        for path in sorted((root / split).rglob("*")):
            if path.is_file():
                yield str(path.relative_to(root)), path.read_bytes()


def detect(source: Path) -> str:
    """What `source` is: python-archive, batches-folder, image-folder or image-tar."""
    if source.is_dir():
        if (source / "data_batch_1").exists():
            return "batches-folder"
        if (source / "cifar-10-batches-py" / "data_batch_1").exists():
            return "batches-folder"
        if (source / "train").is_dir() or (source / "test").is_dir():
            return "image-folder"
        raise DataError(f"{source}: neither a cifar-10-batches-py folder nor an image folder "
                        "with train/ and test/")
    if source.is_file():
        if not tarfile.is_tarfile(source):
            raise DataError(f"{source}: not a .tar/.tar.gz archive (truncated or corrupt?)")
        for name, _ in _tar_files(source):
            if os.path.basename(name).startswith("data_batch_"):
                return "python-archive"
            if any(p in SPLITS for p in Path(name).parts[:-1]):
                return "image-tar"
        raise DataError(f"{source}: archive holds neither CIFAR-10 batches nor train/ and test/")
    raise DataError(f"{source}: no such file or folder")


def read_source(source: Path, kind: str) -> dict[str, Split]:
    """Read and validate every image of a detected source."""
    from .pickled import read_batches_folder, read_python_archive
    if kind == "python-archive":
        return read_python_archive(source)
    if kind == "batches-folder":
        sub = source / "cifar-10-batches-py"
        return read_batches_folder(sub if sub.is_dir() else source)
    if kind == "image-tar":
        return _image_entries(_tar_files(source), str(source))
    return _image_entries(_folder_files(source), str(source))


def fingerprint(source: Path) -> str:
    """Cheap identity of a source (paths, sizes, mtimes), to tell whether betons came from it."""
    h = hashlib.sha256(str(source.resolve()).encode())
    paths = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(source) if source.is_dir() else p.name}:{st.st_size}:"
                 f"{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(dest_dir: Path, url: str = URL) -> Path:
    """The official archive in `dest_dir`, downloaded (to a temporary name) and MD5-checked."""
    target = dest_dir / ARCHIVE_NAME
    if target.is_file() and md5sum(target) == MD5:
        return target
    created = not dest_dir.exists()
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    print(f"downloading {url} -> {target}")
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if created:
            dest_dir.rmdir()  # leave nothing behind
        raise DataError(f"could not download {url} ({getattr(e, 'reason', e)}); offline? copy "
                        "cifar-10-python.tar.gz here or pass --data.source PATH (the archive, its "
                        "cifar-10-batches-py/ folder, or an image folder or its .tar.gz)") from None
    if md5sum(tmp) != MD5:
        tmp.unlink()
        raise DataError(f"{url}: downloaded archive failed its MD5 check ({MD5}); try again")
    os.replace(tmp, target)
    return target
