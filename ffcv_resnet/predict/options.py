"""predict.py's options (--predict.*, the images as positionals), declared without torch: the
script checks them before loading it."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, option, require_range
from ..device import check_device, device_option
from ..explain.options import METHODS
from ..run_folder import FinishedRunConfig


@dataclass(frozen=True)
class PredictConfig:
    """Predict: classify and explain your own images"""
    inputs: tuple = option((), "image files, folders (searched recursively for images) and "
                           "globs", many=True, positional="IMAGE_OR_FOLDER")
    out: str = option("predictions", "folder for predictions.json, .csv, .html and overlays/ "
                      "(replaced whole when it holds an earlier prediction)")
    top: int = option(3, "classes listed per image, most probable first")
    method: str = option("gradcam", f"CAM method drawn over each image: {', '.join(METHODS)} "
                         "or none", (*METHODS, "none"))
    layer: str = option("layer3", "module whose activations the CAM method weighs")
    precision: str = option("run", "the run's own precision (run), or auto, bf16, fp16, fp32",
                            ("run", "auto", "bf16", "fp16", "fp32"))
    batch_size: int = option(256, "images per forward")
    threads: int = option(0, "threads decoding images (0: one per core, at most 16)")
    device: str = device_option()

    def validate(self, prefix: str) -> None:
        require_range(prefix, self, "top", 1, 10)
        require_range(prefix, self, "batch_size", 1)
        require_range(prefix, self, "threads", 0, 256)
        check_device(prefix, self.device)
        if not self.inputs:
            raise ConfigError("no images given (scripts/predict.py --run.dir RUN IMAGE_OR_FOLDER "
                              "...)")
        if not self.out.strip():
            raise ConfigError(f"bad value {self.out!r} for --{prefix}.out (expected a folder)")


@dataclass(frozen=True)
class PredictSettings:
    """scripts/predict.py's options."""
    predict: PredictConfig
    run: FinishedRunConfig
