"""One training run end to end: config checks, the run folder, data, warm-up, the epoch loop with
checkpoints and divergence checks, and the outputs, metrics.json last. scripts/train.py wires it.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from . import recipe as R
from . import train as T
from .augment import AugmentConfig, BatchAugment
from .betons import beton_path, checked_metadata
from .checkpoint import load_state, restore, save_model, save_state
from .config import ConfigError, DataConfig, as_dict, flatten, parse
from .errors import TrainingFailed, UserError, say
from .evaluate import find_errors, metrics, predict
from .figures import plot_curves
from .loaders import Batches, load_all, subset_indices, train_batches
from .model import resnet18, summary
from .records import Errors, Metrics, Session, TestError, TestSet, write_json
from .run import (CHECKPOINT, CURVES, ERRORS, HISTORY, METRICS, STATE, RunConfig, RunFolder,
                  new_run_id, read_config, write_history)
from .timing import Stopwatch, device_name, resolve_device

SECTIONS = {"data": DataConfig, "augment": AugmentConfig, "training": R.TrainConfig,
            "run": RunConfig}
# What a resumed run may set anew: where and how it runs, never what it computes.
RESUMABLE = {"run.dir", "run.resume", "run.overwrite", "run.progress", "run.summary",
             "run.checkpoint_every", "data.dir", "data.workers", "data.os_cache",
             "training.compile_cache", "training.device"}


def _recipe(config: dict) -> dict:
    """{"section.name": value} of what a run computes (RESUMABLE left out)."""
    return {k: v for k, v in flatten(config).items() if k not in RESUMABLE}


def parse_config(argv: Sequence[str] | None = None, description: str = "") -> dict[str, Any]:
    """Command line -> checked config; with --run.resume, the run's own config.yaml is the base
    and an option that would change what it computes is an error."""
    cfg = parse(SECTIONS, argv, description)
    if not cfg["run"].resume:
        return cfg
    stored = flatten(read_config(Path(cfg["run"].dir)))
    cfg = parse(SECTIONS, argv, description, base=stored)
    device = resolve_device(cfg["training"].device)  # compare 'auto' as this device resolves it
    now = flatten(as_dict({**cfg, "training": R.resolved(cfg["training"], device)}))
    for key in sorted(set(stored) - RESUMABLE):
        if key in now and now[key] != stored[key]:
            raise ConfigError(f"--{key} {now[key]!r} differs from the resumed run's "
                              f"{stored[key]!r}: a resumed run keeps its recipe")
    return cfg


@dataclass
class RunData:
    """Everything a run reads: training batches and the test split on the device."""
    meta: dict
    batches: Batches
    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,)
    index: torch.Tensor  # (N,) test-split index of each image
    test: TestSet


def check_data(cfg: dict) -> dict:
    """The betons' metadata, after checking that an epoch holds at least one batch."""
    data, tc = cfg["data"], cfg["training"]
    meta = checked_metadata(Path(data.dir))
    n = data.train_subset or meta["counts"]["train"]
    if data.train_subset > meta["counts"]["train"]:
        raise UserError(f"--data.train_subset {data.train_subset}: the training split has "
                        f"only {meta['counts']['train']} images")
    if data.test_subset > meta["counts"]["test"]:
        raise UserError(f"--data.test_subset {data.test_subset}: the test split has only "
                        f"{meta['counts']['test']} images")
    if tc.batch_size > n:
        raise UserError(f"--training.batch_size {tc.batch_size} is more than the {n} training "
                        "images: an epoch would hold no batch")
    return meta


def load_data(cfg: dict, meta: dict, device: torch.device) -> RunData:
    """Checked betons -> training batches (either path) and the test split on the device."""
    data, tc, data_dir = cfg["data"], cfg["training"], Path(cfg["data"].dir)
    counts = meta["counts"]
    train_idx = subset_indices(counts["train"], data.train_subset, tc.seed)
    test_idx = subset_indices(counts["test"], data.test_subset, 0)
    batches = train_batches(data.loader, beton_path(data_dir, "train"), tc.batch_size, device,
                            order=data.order, seed=tc.seed, os_cache=data.os_cache,
                            indices=train_idx, workers=data.workers)
    images, labels = load_all(beton_path(data_dir, "test"), device, test_idx)
    index = torch.as_tensor(test_idx if test_idx is not None else range(counts["test"]),
                            device=device)
    test = TestSet(count=int(len(labels)), fingerprint=meta["source"]["fingerprint"],
                   subset=None if test_idx is None else test_idx.tolist(), tta=tc.tta,
                   class_counts=torch.bincount(labels, minlength=len(meta["classes"])).tolist())
    return RunData(meta, batches, images, labels, index, test)


def train_run(cfg: dict, started: float | None = None, log=say) -> Metrics:
    """Train one run into cfg["run"].dir (new, overwritten or resumed); return its metrics."""
    started = time.perf_counter() if started is None else started
    rc = cfg["run"]
    device = resolve_device(cfg["training"].device)
    tc = cfg["training"] = R.resolved(cfg["training"], device)
    meta = check_data(cfg)
    with RunFolder(Path(rc.dir)) as folder:
        folder.claim(rc.overwrite, rc.resume)
        state = load_state(folder.path / STATE) if rc.resume else None
        if state is not None:
            _check_resumable(folder, state, meta, cfg)
        return _train(cfg, tc, device, meta, folder, state, started, log)


def _check_resumable(folder: RunFolder, state: dict, meta: dict, cfg: dict) -> None:
    """last.pt belongs to this folder's run, its recipe is config.yaml's, the data is the same."""
    if state["run_id"] != folder.run_id():
        raise UserError(f"{folder.path}: {STATE} and config.yaml come from different runs")
    saved, written = _recipe(state["config"]), _recipe(read_config(folder.path))
    changed = sorted(k for k in saved.keys() | written.keys() if saved.get(k) != written.get(k))
    if changed:
        raise UserError(f"{folder.path / 'config.yaml'}: {changed[0]} is {written.get(changed[0])!r}"
                        f" but the run trained with {saved.get(changed[0])!r}; restore it")
    if state["progress"].get("fingerprint") != meta["source"]["fingerprint"]:
        raise UserError(f"{cfg['data'].dir}: not the data the resumed run was trained on")


def _train(cfg, tc, device, meta, folder: RunFolder, state, started, log) -> Metrics:
    T.use_compile_cache(tc.compile_cache)
    torch.manual_seed(tc.seed)
    d = load_data(cfg, meta, device)
    model = resnet18(len(meta["classes"]))
    if cfg["run"].summary:
        log(summary(model))
    runner = T.prepare_model(model, tc, device)
    step = T.make_step(model, runner, tc, device, len(d.batches))
    augment = BatchAugment(cfg["augment"], device, tc.seed)

    def evaluate(images=d.images):
        logits = predict(runner, images, batch_size=tc.eval_batch_size,
                         precision=tc.precision, tta=tc.tta)
        return logits, metrics(logits, d.labels[:len(images)], len(meta["classes"]))

    # compile on one evaluation batch: predict pads its tail, so that is the only shape it sees
    compile_seconds = T.warm_up(model, step, lambda: evaluate(d.images[:tc.eval_batch_size]),
                                device) if tc.compile == "on" else 0.0
    fingerprint = meta["source"]["fingerprint"]
    if state is None:
        run_id, history = new_run_id(), []
        progress = {"sessions": [], "checkpoint_seconds": 0.0, "fingerprint": fingerprint}
        folder.start(run_id, as_dict(cfg))
    else:
        run_id, history, progress = state["run_id"], state["history"], state["progress"]
        restore(state, model, step, augment, d.batches)
        log(f"resuming run {run_id} after epoch {state['epoch']}")
    first, saved = len(history) + 1, {"epoch": state["epoch"] if state else None,
                                      "done": len(history)}
    log(f"run {run_id}: device {device}, precision {tc.precision}, compile {tc.compile}, loader "
        f"{cfg['data'].loader}, {len(d.batches)} batches/epoch, peak LR {R.peak_lr(tc):.4g}; "
        f"warm-up {compile_seconds:.1f} s")
    log(T.HEADER)

    def session(last: int) -> dict:
        return dataclasses.asdict(Session(first, last, compile_seconds, startup,
                                          time.perf_counter() - started))

    def on_epoch(rows: list[dict]) -> None:
        write_history(folder.path / HISTORY, run_id, rows)
        log(T.row(rows[-1]), flush=True)
        every, epoch = cfg["run"].checkpoint_every, rows[-1]["epoch"]
        saved["done"] = epoch
        if every and (epoch % every == 0 or epoch == tc.epochs):
            with Stopwatch(device) as t:
                save_state(folder.path / STATE, run_id=run_id, epoch=epoch, model=model,
                           step=step, augment=augment, batches=d.batches, history=rows,
                           progress={**progress, "sessions": progress["sessions"]
                                     + [session(epoch)]}, config=as_dict(cfg))
            progress["checkpoint_seconds"] += t.seconds
            saved["epoch"] = epoch

    progress_bar = cfg["run"].progress == "on" or (cfg["run"].progress == "auto"
                                                   and device.type == "cpu")
    startup = time.perf_counter() - started
    try:
        history, logits, m = T.fit(step, d.batches, augment, evaluate, device, progress_bar,
                                   on_epoch, history)
    except TrainingFailed as e:
        kept = (f"{folder.path / STATE} holds epoch {saved['epoch']}" if saved["epoch"]
                else f"no {STATE} was written")
        raise TrainingFailed(f"{e}; no model.pt or metrics.json written; {saved['done']} "
                             f"epoch(s) completed, {kept}") from None
    return _write_outputs(folder.path, run_id, cfg, model, d, history, logits, m,
                          lambda: progress["sessions"] + [session(len(history))], progress,
                          device)


def _write_outputs(run_dir: Path, run_id: str, cfg: dict, model, d: RunData, history, logits,
                   m: dict, sessions, progress: dict, device: torch.device) -> Metrics:
    """model.pt, errors.json, curves.png, then metrics.json: the run is complete."""
    tc, classes = cfg["training"], d.meta["classes"]
    errors = [TestError(**e) for e in find_errors(logits, d.labels, d.index)]
    save_model(run_dir / CHECKPOINT, model, run_id, d.test, classes)
    write_json(run_dir / ERRORS, Errors(run_id, classes, d.test, errors).to_dict())
    plot_curves(history, run_dir / CURVES, run_id)
    sessions = [Session(**s) for s in sessions()]  # this one's wall time ends here
    train_seconds = sum(h["train_seconds"] for h in history)
    images = sum(h["train_images"] for h in history)
    result = Metrics(
        run_id=run_id, test_accuracy=m["accuracy"], test_loss=m["loss"],
        per_class_accuracy=dict(zip(classes, m["per_class_accuracy"])), errors=len(errors),
        epochs=len(history), train_seconds=train_seconds,
        eval_seconds=sum(h.get("eval_seconds", 0.0) for h in history),
        compile_seconds=sum(s.compile_seconds for s in sessions),
        startup_seconds=sessions[0].startup_seconds,
        checkpoint_seconds=progress["checkpoint_seconds"],
        total_seconds=sum(s.wall_seconds for s in sessions),
        images_per_second=images / train_seconds, train_images=images,
        test_images=d.test.count, peak_lr=R.peak_lr(tc), device=device_name(device),
        torch=torch.__version__, seed=tc.seed, precision=tc.precision, compile=tc.compile,
        compile_mode=tc.compile_mode, loader=cfg["data"].loader,
        data_source=d.meta["source"]["kind"], sessions=sessions)
    write_json(run_dir / METRICS, result.to_dict())
    return result
