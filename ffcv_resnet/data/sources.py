"""CIFAR-10 sources -> validated uint8 arrays: which kind a source is, reading it, its
fingerprint, and the official download (MD5-checked).

Sources: the official python archive (downloaded, or a local copy) and its extracted
`cifar-10-batches-py/` folder (read in pickled.py), or an image folder `train/<class>/*`,
`test/<class>/*`, plain or as a .tar/.tar.gz read without extracting (imagefolder.py).
Everything is read and checked before anything is written.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
from pathlib import Path, PurePosixPath

from .cifar import SPLITS, Split, tar_names
from ..errors import DataError
from ..io import atomic_path
from .imagefolder import read_image_folder, read_image_tar
from .pickled import read_batches_folder, read_python_archive

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"


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
        for name in tar_names(source):
            if os.path.basename(name).startswith("data_batch_"):
                return "python-archive"
            if any(p in SPLITS for p in PurePosixPath(name).parts[:-1]):
                return "image-tar"
        raise DataError(f"{source}: archive holds neither CIFAR-10 batches nor train/ and test/")
    raise DataError(f"{source}: no such file or folder")


def read_source(source: Path, kind: str, log=print) -> dict[str, Split]:
    """Read and validate every image of a detected source."""
    if kind == "python-archive":
        return read_python_archive(source)
    if kind == "batches-folder":
        sub = source / "cifar-10-batches-py"
        return read_batches_folder(sub if sub.is_dir() else source)
    if kind == "image-tar":
        return read_image_tar(source, log)
    return read_image_folder(source, log)


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


def download(dest_dir: Path, url: str = "") -> Path:
    """The official archive in `dest_dir`, downloaded (to a temporary name) and MD5-checked."""
    url = url or URL  # looked up here, so the tests' stand-in server can replace it
    target = dest_dir / ARCHIVE_NAME
    if target.is_file() and md5sum(target) == MD5:
        return target
    created = not dest_dir.exists()
    dest_dir.mkdir(parents=True, exist_ok=True)
    print(f"downloading {url} -> {target}")
    try:
        with atomic_path(target) as tmp:
            try:
                with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f, 1 << 20)
            except OSError as e:
                raise DataError(f"could not download {url} ({getattr(e, 'reason', e)}); "
                                "offline? copy cifar-10-python.tar.gz here or pass --data.source "
                                "PATH (the archive, its cifar-10-batches-py/ folder, or an image "
                                "folder or its .tar.gz)") from None
            if md5sum(tmp) != MD5:
                raise DataError(f"{url}: downloaded archive failed its MD5 check ({MD5}); "
                                "try again")
    except BaseException:
        if created:
            dest_dir.rmdir()  # leave nothing behind
        raise
    return target
