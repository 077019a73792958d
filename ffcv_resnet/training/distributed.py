"""Data-parallel training over the processes torchrun starts: the process group, each process's
device, the DDP wrapper, and the few collectives a run needs to act as one (agreeing on errors
and on stopping, sharing what rank 0 read or computed).

Without torchrun (WORLD_SIZE unset or 1) nothing here starts a process group and every helper is
the identity, so a single process runs exactly as before. The training batch is global; each of
the N processes trains on batch/N images of its own shard per step, and DDP averages gradients.
Rank 0 owns the run folder, the table and the evaluation.
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..config import ConfigError
from ..errors import TrainingFailed, UserError, exit_at_once, launch_size

T = TypeVar("T")
TIMEOUT_ENV = "FFCV_RESNET_DIST_TIMEOUT"  # seconds a collective may wait for a peer
DEFAULT_TIMEOUT = 600  # covers rank 0 compiling and running the evaluation while others wait


class PeerFailed(UserError):
    """An error one process hit, raised in every process so all stop with the same status;
    printed once, by rank 0."""

    shared = True

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class PeerLost(UserError):
    """A collective failed: another process of the run died, or did not answer in time."""

    exit_code = 4


def _lost_peer(e: RuntimeError) -> bool:
    """Whether a RuntimeError comes from the process group (gloo, NCCL, the store, a timeout),
    not from this process's own computation (whose traceback must stay visible)."""
    text = str(e).lower()
    return isinstance(e, dist.DistError) or any(
        word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout"))


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes (rank 0 of 1 without torchrun)."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # processes on this machine (they share its cores)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world() -> World:
    """The current process group's view, or a single process when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    env = os.environ
    return World(dist.get_rank(), dist.get_world_size(), int(env.get("LOCAL_RANK", 0)),
                 int(env.get("LOCAL_WORLD_SIZE", 0)) or dist.get_world_size())


def _launch() -> tuple[int, int]:
    """(WORLD_SIZE, timeout) from the environment torchrun sets; ConfigError when it is unusable
    (raised alike in every process, so rank 0 alone prints it)."""
    env = os.environ
    size, raw = launch_size(), env.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT))
    if size is None:
        raise ConfigError(f"WORLD_SIZE={env['WORLD_SIZE']!r}: expected a whole number of "
                          "processes")
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected a whole number of seconds >= 1")
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in env]
    if size > 1 and missing:
        raise ConfigError(f"WORLD_SIZE={size} but no {missing[0]}: start several processes with "
                          "torchrun, or unset WORLD_SIZE for one")
    return size, int(raw)


def _join(backend: str, timeout: int) -> None:
    """init_process_group in a helper thread, so that Ctrl-C and SIGTERM stop the wait for the
    other processes at once (a C++ wait holds Python's signal handlers until it returns)."""
    failure: list[BaseException] = []

    def rendezvous() -> None:
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
        except BaseException as e:  # noqa: B902 (handed to the main thread)
            failure.append(e)

    thread = threading.Thread(target=rendezvous, daemon=True, name="rendezvous")
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        exit_at_once()  # the rendezvous thread may still wait: leave without joining it
        raise
    if failure:
        raise PeerLost(f"could not join the other processes within {timeout} s "
                       f"({_detail(failure[0])})")


def _detail(e: BaseException) -> str:
    """The first line of a library error, without gloo's source-file prefix."""
    line = (str(e).splitlines() or [type(e).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", line)[:160]


def bind_gpu() -> None:
    """cuda:LOCAL_RANK becomes this process's device when it exists. A process started beyond
    the GPUs gets none: `place`, called by every process once the group is up, then stops all
    of them with one line instead of a raw CUDA error in one."""
    local = int(os.environ["LOCAL_RANK"])
    if local < torch.cuda.device_count():
        torch.cuda.set_device(local)


@contextlib.contextmanager
def session() -> Iterator[World]:
    """Join torchrun's process group for the block (gloo for CPU tensors, NCCL for CUDA ones);
    a collective that waits longer than the timeout, or loses a peer, raises instead of hanging."""
    size, timeout = _launch()
    if size <= 1:
        yield World()
        return
    cuda = torch.cuda.is_available()
    if cuda:
        bind_gpu()
    _join("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout)
    exit_at_once()  # gloo's threads can abort the interpreter's shutdown (SIGABRT): skip it
    try:
        yield world()
    except RuntimeError as e:
        if not _lost_peer(e):
            raise
        raise PeerLost(f"training stopped: another process of the run ended or did not "
                       f"answer (timeout {timeout} s): {_detail(e)}") from None
    dist.destroy_process_group()  # after an error the process just exits: no wait on peers


def place(device: torch.device, w: World) -> torch.device:
    """Each process's device: cuda -> cuda:LOCAL_RANK under torchrun (one GPU per process)."""
    if not w.active or device.type != "cuda":
        return device
    if device.index not in (None, w.local_rank):
        raise UserError(f"device {device} asked for, but under torchrun each process uses "
                        f"cuda:LOCAL_RANK; pass --training.device cuda or auto")
    if w.local_rank >= torch.cuda.device_count():
        raise UserError(f"local rank {w.local_rank} has no GPU ({torch.cuda.device_count()} "
                        "visible): start at most that many processes per machine")
    return torch.device("cuda", w.local_rank)


def agreed(fn: Callable[[], T], w: World) -> T:
    """Run `fn` in every process; if it raised a UserError (or exited) in any, every process
    raises the first one, so all stop with one status and rank 0 prints one line."""
    try:
        result, failure = fn(), None
    except (UserError, SystemExit) as e:
        if not w.active:
            raise
        code = e.exit_code if isinstance(e, UserError) else e.code
        result, failure = None, (str(e) if isinstance(e, UserError) else "",
                                 code if isinstance(code, int) else 1)
    if not w.active:
        return result
    for rank, f in enumerate(gather(failure, w)):
        if f is not None:
            if not f[0]:  # argparse's --help (0) or usage error: it printed already
                raise SystemExit(f[1])
            raise PeerFailed(f[0] if rank == 0 else f"rank {rank}: {f[0]}", f[1])
    return result


def from_main(fn: Callable[[], T], w: World) -> T:
    """`fn()` computed by rank 0 (the others do not call it) and given to every process."""
    if not w.active:
        return fn()
    box = [agreed(lambda: fn() if w.main else None, w)]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, w: World) -> list[Any]:
    """Every process's `obj`, in rank order (a collective: all processes call it)."""
    if not w.active:
        return [obj]
    out = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def sum_over(t: torch.Tensor, w: World) -> torch.Tensor:
    """The element-wise sum of `t` over every process (in place; the identity alone)."""
    if w.active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def wrap(model: nn.Module, device: torch.device, w: World, sync_bn: bool) -> nn.Module:
    """DDP around the model (optionally with SyncBatchNorm), or the model itself alone.

    Gradients are views into DDP's buckets (no copy), and each bucket is all-reduced as soon as
    backward has filled it, overlapping communication with the rest of backward."""
    if not w.active:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)


def check_same_weights(model: nn.Module, w: World) -> None:
    """TrainingFailed unless every process holds the same weights (DDP keeps them equal; this
    checks it once, at the end, with one small all-gather)."""
    if not w.active:
        return
    with torch.no_grad():
        sums = torch.stack([p.double().sum() for p in model.parameters()]).cpu()
    mine = sums.numpy().tobytes()
    if len(set(gather(mine, w))) != 1:
        raise TrainingFailed("the processes' weights differ after training: data-parallel "
                             "training went out of step")
