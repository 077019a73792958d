"""scripts/explain.py's command: its options, the checked run and data, the explain pass
(analysis.py) over every error, then its outputs (gallery, manifest, figures, report, screenshot,
explain.json) built whole beside the previous pass's and swapped in only then: a pass that fails
or is interrupted leaves the previous report as it was, and nothing training wrote is touched.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..device import resolve_device
from ..errors import UserError, say
from ..finished.run import (FinishedRun, check_data_matches, load_error_images,
                            load_finished_run)
from ..precision import resolve_precision
from ..records import write_json
from ..run_folder import (CHECKPOINT, CURVES, ERRORS, EXPLAIN_JSON, MANIFEST, METRICS, OVERVIEW,
                          REPORT, SCREENSHOT, SUMMARY, SUSPECTS_CSV, SUSPECTS_HTML, RunFolder,
                          show_progress)
from ..timing import Stopwatch
from .activations import check_layer
from .analysis import PassConfig, PassResult, explain_errors
from .options import ExplainConfig, ExplainSettings
from .browser import screenshot_report, screenshot_skipped
from .gallery import Explained, confusion_from_errors
from .labels import LabelEvidence, human_labels
from .render import overview_images, publish, render_outputs, staging_folder
from .report import ReportContext
from .scores import summarise
from .suspects import TrainDynamics, read_dynamics, suspects, write_suspects

@dataclass(frozen=True)
class Where:
    """Where a pass's outputs go and what drawing them needs."""
    run_dir: Path
    data_dir: Path
    train_count: int  # the training images the overview draws from
    device: torch.device
    no_screenshot: str | None  # why no screenshot is taken (None: one is)
    labels: LabelEvidence  # each error's label: cleanlab's flag, people's votes, the audit
    dynamics: TrainDynamics | None  # every training image's dynamics, for the suspect-labels page


def report_context(run: FinishedRun, e: Explained, settings: dict,
                   where: Where) -> ReportContext:
    """What the report shows about the run and about this explain pass."""
    suspects = [SUSPECTS_HTML, SUSPECTS_CSV] if where.dynamics is not None else []
    return ReportContext(
        run.run_id, run.classes, confusion_from_errors(e, run.test.class_counts),
        run.metrics.to_dict(), run.history, run.config, settings, settings["page_size"],
        [MANIFEST, CURVES, SUMMARY] + ([OVERVIEW] if settings["overview"] else []) +
        suspects + [ERRORS, METRICS, EXPLAIN_JSON], where.labels)


def pass_config(ex: ExplainConfig, precision: str, tta: str) -> PassConfig:
    """The pass's settings from the command's options (and the run's own TTA)."""
    return PassConfig(ex.method_names, ex.metric_names, ex.layer, ex.batch_size, precision, tta,
                      ex.noise, ex.steps, ex.seed)


def pass_settings(ex: ExplainConfig, cfg: PassConfig, result: PassResult, device: torch.device,
                  classes: list[str]) -> dict:
    """explain.json's account of the pass (the report shows it too)."""
    e = result.explained
    return {"layer": cfg.layer, "precision": cfg.precision, "device": str(device),
            "methods": list(cfg.methods), "metrics": list(cfg.metrics), "errors": len(e.index),
            "scored": result.scored, "noise": cfg.noise, "steps": cfg.steps, "seed": cfg.seed,
            "page_size": ex.page_size, "overview": ex.overview,
            "cams_seconds": result.cams_seconds, "scores_seconds": result.scores_seconds,
            "explain_seconds": result.cams_seconds + result.scores_seconds,
            "faithfulness": summarise(e, classes)}


def write_outputs(run: FinishedRun, e: Explained, ex: ExplainConfig, settings: dict,
                  where: Where) -> None:
    """Gallery, manifest, figures, report, screenshot and explain.json, built in a staging
    folder inside the run folder and swapped in whole (render.publish); on any failure or
    interruption the staging folder goes and the previous pass's outputs stay."""
    rid, run_dir = run.run_id, where.run_dir
    staging = staging_folder(run_dir)
    try:
        with Stopwatch(where.device) as render_time:
            ctx = report_context(run, e, settings, where)
            overview = overview_images(where.data_dir, run.classes, where.train_count) \
                if ex.overview else None
            bar = show_progress("auto", "cpu")  # the gallery is drawn on the CPU, whatever the device
            pages = render_outputs(e, ctx, staging, overview, bar)
            if where.dynamics is not None:  # the page the report links to
                pc = pass_config(ex, settings["precision"], run.test.tta)
                s = suspects(run.model, where.data_dir, where.dynamics, ex.suspects, pc)
                write_suspects(staging, s, where.dynamics, run.classes, rid,
                               (SUSPECTS_HTML, SUSPECTS_CSV))
        say(f"rendering: {len(pages)} page(s), sprites, manifest, figures and report in "
            f"{render_time.seconds:.1f} s -> {run_dir / REPORT}")
        for name in (CURVES, ERRORS, METRICS):  # what the report links to, for the screenshot
            (staging / name).symlink_to(run_dir / name)
        said = screenshot_report(staging / REPORT, staging / SCREENSHOT, rid, ex.screenshot,
                                 where.no_screenshot)
        say(said.replace(str(staging), str(run_dir)))  # where it will be once swapped in
        for name in (CURVES, ERRORS, METRICS):
            (staging / name).unlink()
        best = settings["faithfulness"].get("most_faithful")
        say(f"most faithful method by {', '.join(settings['metrics'])}: {best}" if best else
            settings["faithfulness"].get("verdict", ""))
        write_json(staging / EXPLAIN_JSON, {
            "run_id": rid, **{k: v for k, v in settings.items() if k not in ("page_size",
                                                                            "overview")},
            "render_seconds": render_time.seconds, "pages": len(pages),
            "flat_maps": e.flat_counts(),  # per method: [of the predicted, of the true class]
            "screenshot": (staging / SCREENSHOT).is_file(), "torch": torch.__version__})
        publish(staging, run_dir)
    finally:
        staging_folder(run_dir, create=False)  # gone whatever happened


def explain_run(cfg: ExplainSettings) -> None:
    """Check the run folder, the run and its data, then explain every error into the folder."""
    ex, run_dir, data_dir = cfg.explain, Path(cfg.run.dir), Path(cfg.data.dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    no_screenshot = screenshot_skipped(ex.screenshot)  # 'on' without a browser: refused now
    device = resolve_device(ex.device)
    precision = resolve_precision(ex.precision, device)
    with RunFolder(run_dir) as folder:
        run = load_finished_run(folder, device)
        run.model.to(memory_format=torch.channels_last)  # the layout of the batches it gets
        check_layer(run.model, ex.layer)
        meta = check_data_matches(run.test, data_dir)
        train_count = meta["counts"]["train"]
        images = load_error_images(data_dir, run.errors, device)
        human, human_said = human_labels(data_dir, meta) if ex.human_labels == "auto" else (
            None, "human labels: off (--explain.human_labels off)")
        say(human_said)
        dynamics, said = read_dynamics(run_dir, run.run_id, train_count) if ex.suspects else (
            None, "no suspect-labels page (--explain.suspects 0)")
        say(said)
        pc = pass_config(ex, precision, run.test.tta)
        n = len(run.errors)
        result = explain_errors(run.model, images, run.errors, pc,
                                ex.scored_count(n, device), warm_up=True)
        if not result.finite:
            raise UserError(f"{run_dir / CHECKPOINT}: the model gives NaN or inf probabilities "
                            "or maps; nothing was drawn")
        maps = 2 * n * len(pc.methods)
        say(f"maps ({', '.join(pc.methods)}; {pc.layer}, {precision}, {device}): {n} errors x "
            f"2 classes x {len(pc.methods)} methods in {result.cams_seconds:.3f} s "
            f"({maps / max(result.cams_seconds, 1e-9):.0f} maps/s)")
        if pc.metrics:
            say(f"scores ({', '.join(pc.metrics)}): {result.scored} of {n} errors, "
                f"{2 * result.scored * len(pc.methods)} maps, in {result.scores_seconds:.3f} s"
                + ("" if result.scored == n else " (a seeded sample: --explain.scored all "
                   "scores every error)"))
        settings = pass_settings(ex, pc, result, device, run.classes)
        labels = LabelEvidence.of(run.errors, human, human_said)
        settings["labels"] = labels.summary
        write_outputs(run, result.explained, ex, settings,
                      Where(run_dir, data_dir, train_count, device, no_screenshot, labels,
                            dynamics))
