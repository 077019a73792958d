"""One training run end to end, read top to bottom in `train_run`: the run folder claimed, the
data checked, the engine built, the epoch loop with history, checkpoints and divergence checks,
then the outputs, metrics.json last. scripts/train.py wires it; engine.py builds what trains.

Under torchrun every process runs this; rank 0 alone holds the folder, prints and writes, and the
checks are agreed by all (a failure in one process stops every one with the same status)."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import torch

from . import distributed as D
from . import loop as T
from . import recipe as R
from ..config import as_dict
from ..device import device_name, resolve_device
from ..errors import DiskFull, TrainingFailed, UserError, say
from ..finished.checkpoint import save_model
from ..finished.evaluate import find_errors
from ..finished.settings import TrainSettings, recipe_of, resolved
from ..records import Errors, Metrics, Session, TestError, write_json
from ..finished.label_issues import label_issues, write_test_probs
from ..run_folder import (CHECKPOINT, CURVES, DYNAMICS, ERRORS, HISTORY, METRICS, STATE,
                          TEST_PROBS, RunConfig, RunFolder, new_run_id, read_config,
                          show_progress, write_history)
from ..timing import Stopwatch
from .checkpoint import ResumePoint, load_state, restore, save_state
from .curves import plot_curves
from .dynamics import write_dynamics
from .engine import Engine, build_engine, check_data


def _quiet(*_args, **_kwargs) -> None:
    """What other processes than rank 0 print: nothing."""


def train_run(cfg: TrainSettings, started: float | None = None, log=say) -> Metrics | None:
    """Train one run into cfg.run.dir (new, overwritten or resumed); return its metrics (None
    in the other processes than rank 0 of a torchrun run)."""
    started = time.perf_counter() if started is None else started
    w = D.world()
    log = log if w.main else _quiet
    device = D.agreed(lambda: _device(cfg, w), w)
    cfg = dataclasses.replace(cfg, training=resolved(cfg.training, device))  # no 'auto' left
    tc = cfg.training
    with contextlib.ExitStack() as stack:
        folder, state = D.agreed(lambda: _claim(cfg.run, stack, w), w)
        meta = D.agreed(lambda: _checked_data(cfg, state, w), w)
        if cfg.run.resume and w.active:  # the others get rank 0's last.pt (no shared disk needed)
            state = D.from_main(lambda: state, w)
        e = D.agreed(lambda: build_engine(cfg, meta, device, log, w), w)
        run = RunProgress(cfg, folder, e, state, started, log)
        where = f"{w.size} processes of {device.type}" if w.active else f"device {device}"
        log(f"run {run.run_id}: {where}, precision {tc.precision}, compile {tc.compile}, "
            f"loader {cfg.data.loader}, {len(e.data.batches)} batches/epoch, peak LR "
            f"{R.peak_lr(tc):.4g}; warm-up {e.compile_seconds:.1f} s\n{T.HEADER}")
        bar = w.main and show_progress(cfg.run.progress, device.type)
        run.startup = time.perf_counter() - started
        try:
            loop = T.Epochs(e.step, e.data.batches, e.augment, e.evaluate, device,
                            lambda t: D.sum_over(t, w), bar)
            history, logits, m = T.fit(loop, run.on_epoch, run.history)
            D.check_same_weights(e.model, w)
            return D.agreed(lambda: run.finish(history, logits, m), w)
        except TrainingFailed as err:
            raise run.failure(err) from None
        except DiskFull as err:
            raise run.disk_full(err) from None


def _device(cfg: TrainSettings, w: D.World) -> torch.device:
    """This process's device (cuda:LOCAL_RANK under torchrun)."""
    device = D.place(resolve_device(cfg.training.device), w)
    if cfg.training.sync_bn and w.active and device.type != "cuda":
        raise UserError("--training.sync_bn true needs CUDA devices (SyncBatchNorm has no CPU "
                        "kernels)")
    return device


def _claim(rc: RunConfig, stack: contextlib.ExitStack,
           w: D.World) -> tuple[RunFolder | None, dict | None]:
    """Rank 0 takes the run folder (held until the run ends) and, to resume, its last.pt; the
    other processes never touch the folder."""
    if not w.main:
        return None, None
    folder = stack.enter_context(RunFolder(Path(rc.dir)))
    folder.claim(rc.overwrite, rc.resume)
    state = load_state(folder.path / STATE) if rc.resume else None
    if state is not None:
        _check_resumable(folder, state, w)
    return folder, state


def _check_resumable(folder: RunFolder, state: dict, w: D.World) -> None:
    """last.pt belongs to this folder's run, its recipe is config.yaml's, and it runs in as
    many processes as before (each has its own augmentation draws)."""
    if state["run_id"] != folder.run_id():
        raise UserError(f"{folder.path}: {STATE} and config.yaml come from different runs")
    saved, written = recipe_of(state["config"]), recipe_of(read_config(folder.path))
    changed = sorted(k for k in saved.keys() | written.keys() if saved.get(k) != written.get(k))
    if changed:
        raise UserError(f"{folder.path / 'config.yaml'}: {changed[0]} is {written.get(changed[0])!r}"
                        f" but the run trained with {saved.get(changed[0])!r}; restore it")
    before = state["progress"].get("processes", 1)
    if before != w.size:
        raise UserError(f"{folder.path}: the run trained in {before} process(es), not {w.size}: "
                        "resume it with as many ("
                        + (f"torchrun --nproc_per_node {before})" if before > 1
                           else "one process, without torchrun)"))


def _checked_data(cfg: TrainSettings, state: dict | None, w: D.World) -> dict:
    """The betons' metadata (see `check_data`); a resumed run's must be its own data."""
    meta = check_data(cfg, w)
    if state is not None and state["progress"].get("fingerprint") != meta["source"]["fingerprint"]:
        raise UserError(f"{cfg.data.dir}: not the data the resumed run was trained on")
    return meta


class RunProgress:
    """A run's files while it trains: history after every epoch, last.pt when due, and each
    process's share of the time (sessions). Starts a new run or restores a resumed one.
    Under torchrun only rank 0 has a folder and writes; every process restores the state."""

    def __init__(self, cfg: TrainSettings, folder: RunFolder | None, e: Engine, state: dict | None,
                 started: float, log=say):
        self.cfg, self.folder, self.e, self.started, self.log = cfg, folder, e, started, log
        if state is None:
            self.run_id, self.history = D.from_main(new_run_id, e.world), []
            self.progress = {"sessions": [], "checkpoint_seconds": 0.0,
                             "fingerprint": e.data.meta["source"]["fingerprint"],
                             "processes": e.world.size}
            if folder is not None:
                folder.start(self.run_id, as_dict(cfg))
        else:
            self.run_id, self.history, self.progress = (state["run_id"], state["history"],
                                                        state["progress"])
            restore(state, e.model, e.step, e.augment, e.data.batches, e.world.rank)
            log(f"resuming run {self.run_id} after epoch {state['epoch']}")
        self.first, self.done = len(self.history) + 1, len(self.history)
        self.saved = state["epoch"] if state else None  # the epoch last.pt holds
        self.startup = 0.0  # set when training starts

    def session(self, last: int) -> dict:
        """This process's share of the run so far."""
        return dataclasses.asdict(Session(self.first, last, self.e.compile_seconds, self.startup,
                                          time.perf_counter() - self.started))

    def on_epoch(self, rows: list[dict]) -> None:
        """After each epoch: the history, its table row, and last.pt when due."""
        if self.folder is not None:
            write_history(self.folder.path / HISTORY, self.run_id, rows)
        self.log(T.row(rows[-1]), flush=True)
        every, epoch = self.cfg.run.checkpoint_every, rows[-1]["epoch"]
        self.done = epoch
        if every and (epoch % every == 0 or epoch == self.cfg.training.epochs):
            e = self.e
            with Stopwatch(e.data.images.device) as t:
                draws = D.gather(e.augment.state_dict(), e.world)  # each process's generator
                if self.folder is not None:
                    point = ResumePoint(self.run_id, epoch, rows, {
                        **self.progress, "sessions": self.progress["sessions"]
                        + [self.session(epoch)]}, as_dict(self.cfg))
                    save_state(self.folder.path / STATE, point, e.model, e.step,
                               e.data.batches, draws)
            self.progress["checkpoint_seconds"] += t.seconds
            self.saved = epoch

    def finish(self, history: list[dict], logits: torch.Tensor, m: dict) -> Metrics | None:
        """model.pt, errors.json, curves.png, then metrics.json: the run is complete (rank 0;
        None elsewhere). last.pt, only a resume point, goes unless --run.keep_last."""
        if self.folder is None:
            return None
        run_dir, d, tc = self.folder.path, self.e.data, self.cfg.training
        classes = d.meta["classes"]
        probs = logits.float().softmax(1).cpu().numpy()
        labels, index = d.labels.cpu().numpy(), d.index.cpu().numpy()
        doubtful, said = label_issues(labels, probs)
        self.log(said)
        flagged = set(index[doubtful].tolist()) if doubtful is not None else None
        errors = [TestError(**e, label_issue=None if flagged is None else e["index"] in flagged)
                  for e in find_errors(logits, d.labels, d.index)]
        save_model(run_dir / CHECKPOINT, self.e.model, self.run_id, d.test, classes)
        write_json(run_dir / ERRORS, Errors(self.run_id, classes, d.test, errors).to_dict())
        plot_curves(history, run_dir / CURVES, self.run_id)
        write_test_probs(run_dir / TEST_PROBS, probs, index, labels, self.run_id)
        if self.e.step.dynamics is not None:
            write_dynamics(run_dir / DYNAMICS, self.e.step.dynamics, self.run_id)
        sessions = [Session(**s) for s in self.progress["sessions"]
                    + [self.session(len(history))]]  # this one's wall time ends here
        train_seconds = sum(h["train_seconds"] for h in history)
        images = sum(h["train_images"] for h in history)
        result = Metrics(
            run_id=self.run_id, test_accuracy=m["accuracy"], test_loss=m["loss"],
            per_class_accuracy=dict(zip(classes, m["per_class_accuracy"])), errors=len(errors),
            epochs=len(history), train_seconds=train_seconds,
            eval_seconds=sum(h.get("eval_seconds", 0.0) for h in history),
            compile_seconds=sum(s.compile_seconds for s in sessions),
            startup_seconds=sessions[0].startup_seconds,
            checkpoint_seconds=self.progress["checkpoint_seconds"],
            total_seconds=sum(s.wall_seconds for s in sessions),
            images_per_second=images / train_seconds, train_images=images,
            test_images=d.test.count, peak_lr=R.peak_lr(tc),
            device=device_name(d.images.device), torch=torch.__version__, seed=tc.seed,
            precision=tc.precision, compile=tc.compile, compile_mode=tc.compile_mode,
            loader=self.cfg.data.loader, data_source=d.meta["source"]["kind"],
            sessions=sessions, processes=self.progress.get("processes", 1))
        write_json(run_dir / METRICS, result.to_dict())
        if not self.cfg.run.keep_last:
            (run_dir / STATE).unlink(missing_ok=True)  # after metrics.json: never a run unresumable
        return result

    def disk_full(self, e: DiskFull) -> DiskFull:
        """A full disk's line, with where the run can be resumed from."""
        where = (f"the run can be resumed from epoch {self.saved} (--run.resume true)"
                 if self.saved else f"no {STATE} was written: nothing to resume")
        return DiskFull(f"{e}; {where}")

    def failure(self, e: TrainingFailed) -> TrainingFailed:
        """The divergence message, with what was completed and what last.pt holds."""
        kept = (f"{Path(self.cfg.run.dir) / STATE} holds epoch {self.saved}" if self.saved
                else f"no {STATE} was written")
        return TrainingFailed(f"{e}; no model.pt or metrics.json written; {self.done} "
                              f"epoch(s) completed, {kept}")
