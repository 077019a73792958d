"""Explain a run's test errors: batched Grad-CAM of every error, galleries, manifest and figures.

The run folder must hold one complete run (metrics.json written, every file of the same run id);
the outputs carry that run id too. Exit status: 0 done, 2 bad input, 130/143 interrupted.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ffcv_resnet.errors import UserError, cli, handle_sigterm  # noqa: E402


@cli
def main() -> None:
    handle_sigterm()  # before the heavy imports, so that SIGTERM during them is one line too
    from ffcv_resnet.config import DataConfig, parse
    from ffcv_resnet.evaluate import auto_precision
    from ffcv_resnet.explain import (ExplainConfig, ExplainRunConfig, check_data_matches,
                                     load_error_images, load_finished_run, write_explanations)
    from ffcv_resnet.gradcam import check_layer
    from ffcv_resnet.run import RunFolder
    from ffcv_resnet.timing import resolve_device
    cfg = parse({"data": DataConfig, "explain": ExplainConfig, "run": ExplainRunConfig},
                description=__doc__)
    ex, run_dir, data_dir = cfg["explain"], Path(cfg["run"].dir), Path(cfg["data"].dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    device = resolve_device(ex.device)
    precision = auto_precision(device) if ex.precision == "auto" else ex.precision
    with RunFolder(run_dir) as folder:
        run = load_finished_run(folder, device)
        check_layer(run.model, ex.layer)
        train_count = check_data_matches(run.test, data_dir)["counts"]["train"]
        images = load_error_images(data_dir, run.errors, device)
        write_explanations(run, images, ex, precision, device, run_dir, data_dir, train_count)


if __name__ == "__main__":
    main()
