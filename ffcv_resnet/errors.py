"""User-facing errors: anything raised as UserError is printed as one line and exits non-zero."""
from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Callable


class UserError(Exception):
    """A problem with the user's input (data, config, run folder), reported as one line."""

    exit_code = 2
    shared = False  # raised alike in every process of a torchrun run: only rank 0 prints it


class DataError(UserError):
    """Missing, corrupt or malformed data: a source, a beton, a subset."""


class TrainingFailed(UserError):
    """Training ran but did not succeed (a NaN or inf loss or weights): exit status 3."""

    exit_code = 3
    shared = True  # the processes agree on stopping before any of them raises it


class DiskFull(UserError):
    """A file could not be written for lack of space (or quota): nothing half-written is left."""

    # exit status 2, as for bad input: the user frees space and runs again


class Interrupted(KeyboardInterrupt):
    """SIGTERM (what `kill`, `timeout` and schedulers send), handled like Ctrl-C."""


_EXIT_AT_ONCE = []  # set once a library left multiprocessing state that may block exit


def exit_at_once() -> None:
    """Ask `cli` to end the process without the interpreter's exit hooks (after an interrupted
    FFCV write, multiprocessing's hooks can wait forever on a dead writer's pipe; after
    a torchrun process group, gloo's threads can abort the shutdown)."""
    _EXIT_AT_ONCE.append(True)


def _leave(code: int) -> None:
    if _EXIT_AT_ONCE:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # our own files are already cleaned up by then
    sys.exit(code)


def _on_sigterm(signum, frame) -> None:
    raise Interrupted()


def handle_sigterm() -> None:
    """From now on SIGTERM stops this process as Ctrl-C does (finally blocks run, exit 143)."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def say(*args, **kwargs) -> None:
    """print; when stdout is closed (`| head`), further output is dropped and the work goes on."""
    try:
        print(*args, **kwargs)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def launch_size() -> int | None:
    """The process count torchrun set in WORLD_SIZE (1 when unset; None when not a count)."""
    size = os.environ.get("WORLD_SIZE", "1")
    return int(size) if size.isdigit() and int(size) >= 1 else None


def _rank() -> int:
    """This process's rank when torchrun started several (0 otherwise, whatever RANK says)."""
    rank = os.environ.get("RANK", "")
    return int(rank) if (launch_size() or 1) > 1 and rank.isdigit() else 0


def cli(main: Callable[[], object]) -> Callable[[], None]:
    """Wrap a script's main: UserError -> 'error: ...' on stderr and its exit status (2, or 3
    for a failed run); Ctrl-C -> 130, SIGTERM (once `handle_sigterm()`) -> 143; one line each.
    Under torchrun, other ranks than 0 print only errors of their own, naming their rank."""

    @functools.wraps(main)
    def wrapper() -> None:
        rank = _rank()
        try:
            main()
            if _EXIT_AT_ONCE:
                _leave(0)
        except UserError as e:
            if rank == 0 or not e.shared:
                print(f"error: {'' if rank == 0 else f'rank {rank}: '}{e}", file=sys.stderr)
            _leave(e.exit_code)
        except KeyboardInterrupt as e:
            term = isinstance(e, Interrupted)
            if rank == 0:  # torchrun passes the signal to every process: one line is enough
                print(f"interrupted ({'SIGTERM' if term else 'Ctrl-C'})", file=sys.stderr)
            _leave(143 if term else 130)

    return wrapper
