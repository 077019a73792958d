"""Every headline figure in one command, built for one short GPU call: the data, then the plan's
stages (plan.py) in priority order, each within what is left of a time budget, run by one loop.

The record is written before anything runs (the device, versions and the plan, the command
marked running) and after every stage; the console goes to a log beside it. Each stage other
than the data runs in its own process group with its own log and limit (process.py), so a CUDA
error, an out-of-memory, a divergence, a crash or a hang ends that stage only: it is recorded
with its one-line error and log, and the next stage runs (a failure with compile on is retried
once eager). A stage's run folder is replaced only when that stage starts. At the end the
command is marked finished (interrupted on Ctrl-C or SIGTERM; a record still marked running
after its command is gone was cut short). The exit status is 1 when any stage failed.
"""
from __future__ import annotations

import datetime
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

from ..data.convert import prepare
from ..device import PROJECT_ROOT, provenance, resolve_device
from ..errors import DataError, UserError, say
from ..finished.settings import parse_config
from . import plan as P
from .bundle import bundle
from .checks import COMPILE_CACHE, check_ffcv, check_folders, checked_recipe
from .kinds import RUNNERS, always_wrong_page
from .options import ReproduceConfig
from .process import run_script
from .record import FINISHED, INTERRUPTED, Record, StageState, record_name, write_record

SMOKE = {"train_subset": 256, "test_subset": 100}  # CPU smoke mode: tiny subsets, 1 epoch
LOGS, ALWAYS_WRONG = "logs", "always-wrong.png"


class StageFailed(UserError):
    """A stage failed (recorded with its error and log); the others ran: exit status 1."""

    exit_code = 1


class Budget:
    """Wall time left of the budget; `fits(stage, seconds)` says whether a stage may start."""

    def __init__(self, minutes: float):
        self.start, self.seconds = time.perf_counter(), minutes * 60
        self.skipped: list[dict] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def fits(self, stage: str, estimate: float) -> bool:
        left = self.left()
        if estimate <= left:
            return True
        self.skipped.append({"stage": stage, "estimated_seconds": round(estimate, 1),
                             "seconds_left": round(left, 1)})
        say(f"skipping {stage}: needs ~{estimate:.0f} s, {max(left, 0):.0f} s of the budget left")
        return False


class Tee:
    """stdout copied to a log file as it is written (the console of a call may be cut)."""

    def __init__(self, stream, path: Path):
        self.stream, self.file = stream, open(path, "w", buffering=1)

    def write(self, text: str) -> int:
        self.file.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.file.flush()
        self.stream.flush()

    def close(self) -> None:
        self.file.close()

    def __getattr__(self, name):
        return getattr(self.stream, name)


class Reproduction:
    """One reproduce command: its plan, budget, record and files."""

    def __init__(self, rc: ReproduceConfig, data_dir: Path, results: Path, out: Path,
                 device: torch.device, stages: list[P.Stage]):
        self.rc, self.data_dir, self.results, self.out, self.device = (rc, data_dir, results,
                                                                        out, device)
        self.stages = stages
        self.budget = Budget(rc.budget_minutes)
        self.kind = "smoke" if rc.smoke else device.type
        self.logs = out / LOGS
        shutil.rmtree(self.logs, ignore_errors=True)  # the bundle packs this command's alone
        self.logs.mkdir(parents=True, exist_ok=True)
        (out / ALWAYS_WRONG).unlink(missing_ok=True)
        results.mkdir(parents=True, exist_ok=True)
        self.compile_cache = out / COMPILE_CACHE
        shutil.rmtree(self.compile_cache, ignore_errors=True)
        self.compiled_before = False  # has a run of this command filled the cache?
        self.preflight_compiled = False  # did the preflight compile the training step there?
        self.record = Record(
            **provenance(device), command=" ".join(sys.argv),
            started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            smoke=rc.smoke, budget_minutes=rc.budget_minutes,
            stages=[StageState(s.name, s.kind) for s in stages],
            disabled=[name for name, on in (
                ("calibration", bool(rc.calibration)), ("explain", rc.explain),
                ("bench", rc.bench), ("ablations", any(rc.ablations))) if not on])
        self.log_path = results / f"reproduce-{'smoke-' if rc.smoke else ''}" \
                                  f"{self.slug()}.log"

    def seconds_left(self) -> float:
        return self.budget.left()

    def slug(self) -> str:
        return record_name(self.record).removeprefix("reproduce-").removeprefix("smoke-")

    # --- the record, after every stage ---
    def save(self) -> tuple[Path, Path]:
        r = self.record
        r.refresh()
        r.skipped = self.budget.skipped
        r.seconds = self.budget.elapsed()
        paths = write_record(r, self.results)
        if self.rc.bundle:
            bundle(Path(self.rc.bundle), r, [*paths, self.log_path], self.out, self.results,
                   self.rc.bundle_mb)
        return paths

    def failed(self, stage: str, error: str, log: Path | None, **extra) -> None:
        self.record.failed.append({"stage": stage, "error": error,
                                   "log": str(log) if log else None, **extra})
        say(f"[{stage}] failed: {error}" + (f" (log: {log})" if log else ""))

    def run(self, stage: P.Stage, args: list[str], limit: float | None = None,
            log_name: str = "") -> tuple[int, Path]:
        """A script in its own process group; stopped a minute past the budget or at `limit`."""
        log = self.logs / (log_name or stage.log_name)
        timeout = max(60.0, self.budget.left() + 60.0)
        return run_script(args, log, PROJECT_ROOT, min(timeout, limit) if limit else timeout), log

    # --- the loop ---
    def data(self, source: str) -> dict:
        t = time.perf_counter()
        meta = prepare(self.data_dir, source)
        self.record.data = {"source_kind": meta["source"]["kind"],
                            "source": meta["source"]["path"], "counts": meta["counts"],
                            "prepare_seconds": time.perf_counter() - t}
        return meta

    def run_stage(self, stage: P.Stage) -> None:
        """One stage of the plan, if it fits: its old output removed, run, recorded."""
        state = self.record.stage(stage.name)
        seeds = [s.total_seconds for s in self.record.seeds]
        if stage.kind == "explain" and not self.record.seeds:
            state.state, state.note = "skipped", "no seed was trained"
            self.budget.skipped.append({"stage": "explain", "reason": state.note})
            return
        if not self.budget.fits(stage.name, P.estimate(stage, self.kind, seeds)):
            state.state, state.note = "skipped", "did not fit in the budget"
            return
        state.state = "running"
        self.save()  # a kill from now on leaves this stage marked running
        started, failures = time.perf_counter(), len(self.record.failed)
        say(f"[{stage.name}]")
        RUNNERS[stage.kind](self, stage)
        state.seconds = time.perf_counter() - started
        state.state = "failed" if len(self.record.failed) > failures else "done"
        if state.state == "failed":
            state.note = self.record.failed[-1]["error"]

    def common(self) -> list[str]:
        """The options every training run gets; one compile cache for this command, emptied
        at its start, so the first run's compile is cold and the record can say which were
        warm."""
        args = ["--data.dir", str(self.data_dir), "--training.device", self.rc.device,
                "--run.progress", "off", "--training.compile_cache", str(self.compile_cache)]
        if self.rc.smoke:
            counts = self.record.data["counts"]
            args += ["--data.train_subset", str(min(SMOKE["train_subset"], counts["train"])),
                     "--data.test_subset", str(min(SMOKE["test_subset"], counts["test"])),
                     "--training.epochs", "1", "--training.batch_size",
                     str(max(1, min(32, counts["train"] // 2))), "--training.eval_batch_size",
                     "50"]
        return args + shlex.split(self.rc.train_args)



def reproduce(rc: ReproduceConfig, data_dir: Path, source: str) -> tuple[Record, Path, Path]:
    """Every stage of the plan that fits the budget, the record written before the first and
    after each; (record, json, md). StageFailed (exit 1) at the end when any stage failed."""
    device = resolve_device(rc.device)
    # absolute paths: explain.py and the benchmarks run from the repository root
    out, results, data_dir = Path(rc.out).resolve(), Path(rc.results).resolve(), data_dir.resolve()
    check_ffcv()
    stages = P.plan(2 if rc.smoke else rc.seeds, rc.explain, rc.bench,
                    checked_recipe(rc.calibration),
                    [checked_recipe(a, "ablations") for a in rc.ablations if a])
    if rc.train_args:
        parse_config(shlex.split(rc.train_args))  # a bad extra option is found now
    check_folders(out, results, [s.folder for s in stages if s.folder])
    r = Reproduction(rc, data_dir, results, out, device, stages)
    tee = Tee(sys.stdout, r.log_path)
    sys.stdout = tee
    try:
        r.save()  # the device, versions and plan, marked running: before anything can hang
        try:
            meta = r.data(source)
        except DataError as e:
            r.failed("data", str(e), None)
            r.record.status = FINISHED
            r.save()
            raise StageFailed(f"the data stage failed: {e}") from None
        for stage in stages:
            r.run_stage(stage)
            r.save()
        if r.record.seeds:
            always_wrong_page(r.record.cross_seed["always_wrong"], data_dir, meta["classes"],
                              {s.seed: s.run_dir for s in r.record.seeds}, out / ALWAYS_WRONG)
        r.record.status = FINISHED
        json_path, md_path = r.save()
        say(md_path.read_text())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the running stage's group is already gone
        r.record.status = INTERRUPTED
        r.save()
        raise
    finally:
        sys.stdout = tee.stream
        tee.close()
    if r.record.failed:
        stages_failed = ", ".join(f["stage"] for f in r.record.failed)
        raise StageFailed(f"{len(r.record.failed)} stage(s) failed ({stages_failed}); each is "
                          f"recorded with its error and log in {json_path}")
    return r.record, json_path, md_path


