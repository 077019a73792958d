"""Explain a run's test errors: batched Grad-CAM of every error, galleries, manifest and figures."""
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ffcv_resnet.config import DataConfig, option, parse  # noqa: E402
from ffcv_resnet.errors import UserError, cli  # noqa: E402
from ffcv_resnet.evaluate import auto_precision  # noqa: E402
from ffcv_resnet.explain import (check_data_matches, explain, load_error_images,  # noqa: E402
                                 overview_images)
from ffcv_resnet.figures import plot_overview, plot_summary  # noqa: E402
from ffcv_resnet.gallery import (confusion_from_errors, write_gallery, write_manifest,  # noqa: E402
                                 write_report)
from ffcv_resnet.gradcam import find_layer  # noqa: E402
from ffcv_resnet.run import CHECKPOINT, ERRORS, RunConfig, load_checkpoint, read_json  # noqa: E402
from ffcv_resnet.run import write_json  # noqa: E402
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


@cli
def main() -> None:
    cfg = parse({"data": DataConfig, "explain": ExplainConfig, "run": RunConfig},
                description=__doc__)
    ex, run_dir, data_dir = cfg["explain"], Path(cfg["run"].dir), Path(cfg["data"].dir)
    if ex.page_size < 1 or ex.batch_size < 2:
        raise UserError("--explain.page_size must be >= 1 and --explain.batch_size >= 2")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    device = resolve_device(ex.device)
    precision = auto_precision(device) if ex.precision == "auto" else ex.precision
    model, blob = load_checkpoint(run_dir / CHECKPOINT, device)
    find_layer(model, ex.layer)
    doc = read_json(run_dir / ERRORS, "errors file")
    if doc.get("test") != blob["test"]:
        raise UserError(f"{run_dir}: {ERRORS} and {CHECKPOINT} come from different runs")
    train_count = check_data_matches(blob["test"], data_dir)["counts"]["train"]
    classes, errors = blob["classes"], doc["errors"]
    images = load_error_images(data_dir, errors, device)
    explain(model, images[:2], errors[:2], ex.layer, ex.batch_size, precision)  # warm-up
    with Stopwatch(device) as cam_time:
        e = explain(model, images, errors, ex.layer, ex.batch_size, precision,
                    blob["test"].get("tta", True))
    print(f"Grad-CAM ({ex.layer}, {precision}, {device}): {len(errors)} errors x 2 classes in "
          f"{cam_time.seconds:.3f} s ({2 * len(errors) / max(cam_time.seconds, 1e-9):.0f} maps/s)")
    with Stopwatch(device) as render_time:
        pages = write_gallery(e, classes, run_dir / "gallery", ex.page_size)
        write_manifest(e, classes, run_dir / "manifest.csv", ex.page_size)
        plot_summary(confusion_from_errors(e, blob["test"]["class_counts"]), classes,
                     run_dir / "summary.png")
        if ex.overview:
            plot_overview(*overview_images(data_dir, classes, train_count), classes, run_dir / "overview.png")
        summary = (f"{len(errors)} errors of {blob['test']['count']} test images; Grad-CAM at "
                   f"{ex.layer}; {int(e.pred_empty.sum())} empty predicted-class maps")
        write_report(run_dir, pages, summary)
    write_json(run_dir / "explain.json", {
        "errors": len(errors), "layer": ex.layer, "precision": precision, "device": str(device),
        "gradcam_seconds": cam_time.seconds, "render_seconds": render_time.seconds,
        "pages": len(pages), "empty_pred_maps": int(e.pred_empty.sum()),
        "empty_true_maps": int(e.true_empty.sum()), "torch": torch.__version__})
    print(f"rendering: {len(pages)} pages, manifest, summary and overview in "
          f"{render_time.seconds:.1f} s -> {run_dir / 'report.html'}")


if __name__ == "__main__":
    main()
