"""User-facing errors: anything raised as UserError is printed as one line and exits non-zero."""
from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable


class UserError(Exception):
    """A problem with the user's input (data, config, run folder), reported as one line."""


class DataError(UserError):
    """Missing, corrupt or malformed data: a source, a beton, a subset."""


def cli(main: Callable[[], object]) -> Callable[[], None]:
    """Wrap a script's main: UserError -> 'error: ...' on stderr, exit status 2."""

    @functools.wraps(main)
    def wrapper() -> None:
        try:
            main()
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
