"""Explain a run's test errors: batched Grad-CAM of every error, galleries, manifest and figures.

The run folder must hold one complete run (metrics.json written, every file of the same run id);
the outputs carry that run id too. Exit status: 0 done, 2 bad input, 130/143 interrupted.
"""
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ffcv_resnet.config import DataConfig, option, parse, require_range  # noqa: E402
from ffcv_resnet.errors import UserError, cli, handle_sigterm  # noqa: E402
from ffcv_resnet.evaluate import auto_precision  # noqa: E402
from ffcv_resnet.explain import (check_data_matches, explain, load_error_images,  # noqa: E402
                                 load_finished_run, overview_images)
from ffcv_resnet.figures import plot_overview, plot_summary  # noqa: E402
from ffcv_resnet.gallery import (confusion_from_errors, write_gallery, write_manifest,  # noqa: E402
                                 write_report)
from ffcv_resnet.gradcam import find_layer  # noqa: E402
from ffcv_resnet.records import write_json  # noqa: E402
from ffcv_resnet.run import RunConfig, RunFolder  # noqa: E402
from ffcv_resnet.timing import Stopwatch, resolve_device  # noqa: E402


@dataclass
class ExplainConfig:
    """Explain: Grad-CAM of every test error"""
    layer: str = option("layer3", "module whose activations Grad-CAM weighs (layer3 is 8x8)")
    batch_size: int = option(1024, "images per Grad-CAM forward/backward")
    page_size: int = option(24, "errors per gallery page")
    precision: str = option("auto", "auto: bf16 on CUDA and on CPUs with native bf16, else fp32",
                            ("auto", "bf16", "fp32"))
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    overview: bool = option(True, "also draw 10 random training images per class")

    def validate(self, prefix: str) -> None:
        require_range(prefix, self, "batch_size", 2)
        require_range(prefix, self, "page_size", 1)


@cli
def main() -> None:
    handle_sigterm()
    cfg = parse({"data": DataConfig, "explain": ExplainConfig, "run": RunConfig},
                description=__doc__)
    ex, run_dir, data_dir = cfg["explain"], Path(cfg["run"].dir), Path(cfg["data"].dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    device = resolve_device(ex.device)
    precision = auto_precision(device) if ex.precision == "auto" else ex.precision
    with RunFolder(run_dir) as folder:
        run = load_finished_run(folder, device)
        find_layer(run.model, ex.layer)
        train_count = check_data_matches(run.test, data_dir)["counts"]["train"]
        images = load_error_images(data_dir, run.errors, device)
        explain_run(run, images, ex, precision, device, run_dir, data_dir, train_count)


def explain_run(run, images, ex: ExplainConfig, precision: str, device, run_dir: Path,
                data_dir: Path, train_count: int) -> None:
    """Grad-CAM every error, then the gallery, manifest, figures, report and explain.json."""
    model, errors, classes, rid = run.model, run.errors, run.classes, run.run_id
    explain(model, images[:2], errors[:2], ex.layer, ex.batch_size, precision)  # warm-up
    with Stopwatch(device) as cam_time:
        e = explain(model, images, errors, ex.layer, ex.batch_size, precision, run.test.tta)
    print(f"Grad-CAM ({ex.layer}, {precision}, {device}): {len(errors)} errors x 2 classes in "
          f"{cam_time.seconds:.3f} s ({2 * len(errors) / max(cam_time.seconds, 1e-9):.0f} maps/s)")
    with Stopwatch(device) as render_time:
        pages = write_gallery(e, classes, run_dir / "gallery", ex.page_size, run_id=rid)
        write_manifest(e, classes, run_dir / "manifest.csv", ex.page_size, rid)
        plot_summary(confusion_from_errors(e, run.test.class_counts), classes,
                     run_dir / "summary.png", rid)
        if ex.overview:
            plot_overview(*overview_images(data_dir, classes, train_count), classes,
                          run_dir / "overview.png", run_id=rid)
        summary = (f"run {rid}: {len(errors)} errors of {run.test.count} test images; "
                   f"Grad-CAM at {ex.layer}; {int(e.pred_empty.sum())} empty predicted-class maps")
        write_report(run_dir, pages, summary, rid)
    write_json(run_dir / "explain.json", {
        "run_id": rid, "errors": len(errors), "layer": ex.layer, "precision": precision,
        "device": str(device), "gradcam_seconds": cam_time.seconds,
        "render_seconds": render_time.seconds, "pages": len(pages),
        "empty_pred_maps": int(e.pred_empty.sum()), "empty_true_maps": int(e.true_empty.sum()),
        "torch": torch.__version__})
    print(f"rendering: {len(pages)} pages, manifest, summary and overview in "
          f"{render_time.seconds:.1f} s -> {run_dir / 'report.html'}")


if __name__ == "__main__":
    main()
