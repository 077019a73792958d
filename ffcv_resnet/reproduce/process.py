"""A stage's process: a script run in a process group of its own, its output in its log, stopped
with everything it started at its time limit or when reproduce itself is stopped, and (on
Linux) killed by the kernel if reproduce dies first, so no stage outlives the command."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..errors import TrainingFailed, UserError

# the exit statuses a stage's script reports (ffcv_resnet.errors), and ours for a time-out
OK = 0
BAD_INPUT = UserError.exit_code
DIVERGED = TrainingFailed.exit_code
TIMED_OUT = 124
NOT_RETRIED = (OK, BAD_INPUT, DIVERGED)  # compile off would not change these

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int):
    """For the child, before it runs: the kernel sends it SIGKILL when its parent dies."""
    def set_up() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            return  # not Linux: the process group is still stopped on a time-out
        if os.getppid() != parent:  # the parent died before prctl: do not run on alone
            os._exit(1)
    return set_up


def _stop(p: subprocess.Popen) -> None:
    """SIGKILL the stage's whole process group (its own children too) and reap it."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def run_script(args: list[str], log: Path, cwd: Path, timeout: float) -> int:
    """`python args...` in its own process group, stdout and stderr to `log`; its exit status,
    or TIMED_OUT after `timeout` seconds (the group killed, a line in the log). Ctrl-C or
    SIGTERM of this process stops the stage's group before it is passed on."""
    with open(log, "w") as f:
        p = subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=f,
                             stderr=subprocess.STDOUT, start_new_session=True,
                             preexec_fn=_die_with_parent(os.getpid()))
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(p)
            f.write(f"\nerror: stopped after {timeout:.0f} s (its limit)\n")
            return TIMED_OUT
        except BaseException:
            _stop(p)
            raise


def last_error(log: Path) -> str:
    """The last `error:` line of a stage's log, or its last line."""
    try:
        lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    errors = [x for x in lines if x.startswith("error:") or "Error" in x.split(":")[0]]
    return (errors or lines or ["no output"])[-1][:300]
