"""Writing files so that a reader never sees half of one: the one atomic write of the project.

Everything goes to a temporary name beside its target (`.NAME.PID.tmp`: hidden, and naming the
process that writes it) and is renamed onto the target only once complete. A folder replaces
the old one whole. An exception, Ctrl-C or SIGTERM on the way removes the temporary.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

from .errors import DiskFull

LOW_SPACE = 1 << 20  # bytes: a failed write with less than this free is called a full disk


def _full(e: BaseException, where: Path) -> bool:
    """Whether a failed write was a full disk: ENOSPC or EDQUOT, or a library's own error
    (torch.save raises RuntimeError) with next to no space left where it wrote."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(e, (OSError, RuntimeError)):
        try:
            return shutil.disk_usage(where).free < LOW_SPACE
        except OSError:
            return False
    return False


def temporary_name(path: Path) -> Path:
    """Where `path` is written before it is renamed into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove(path: Path) -> None:
    """Remove a file, link or folder if it is there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write a file or a folder to; renamed onto `path` when
    the block ends normally (a folder replacing the old one whole), removed otherwise."""
    path = Path(path)
    tmp = temporary_name(path)
    remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            path.rename(old)
            tmp.rename(path)
            remove(old)
        else:
            os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if not _full(e, path.parent):
            raise
        remove(tmp)  # before saying so: what it held is the space asked for
        raise DiskFull(f"no space left on the device of {path.parent} while writing "
                       f"{path.name}") from None
    finally:
        remove(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`data` as the whole content of `path`, or `path` left as it was."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
