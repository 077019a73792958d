"""explain.py's options (--explain.*) and the names of the CAM methods and faithfulness scores
they choose from, declared without torch: the script checks its options before loading it."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, option, require_range
from ..data.options import DataDir
from ..device import check_device, device_option
from ..precision import AUTO_PRECISION
from ..run_folder import FinishedRunConfig

# the CAM methods (cams.py): five reductions of one backward, Eigen-CAM, Score-CAM
METHODS = ("gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam")
DEFAULT_METHODS = tuple(m for m in METHODS if m != "scorecam")  # Score-CAM: C forwards per image
# the faithfulness scores (faithfulness.py)
METRICS = ("cam_mult", "road_morf", "road_lerf", "road_combined", "deletion", "insertion")
DEFAULT_METRICS = ("road_combined", "deletion", "insertion")

CPU_SCORED = 32  # errors scored by default on the CPU: every score of one error costs ~2.4 s


def _names(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


@dataclass(frozen=True)
class ExplainConfig:
    """Explain: every CAM method and faithfulness score of every test error"""
    layer: str = option("layer3", "module whose activations the CAM methods weigh (layer3 is 8x8)")
    batch_size: int = option(1024, "images per forward (the maps' backwards share it; the "
                             "scores' perturbed images go in batches of this size too)")
    page_size: int = option(24, "errors per gallery page")
    precision: str = option("auto", AUTO_PRECISION, ("auto", "bf16", "fp32"))
    device: str = device_option()
    methods: str = option(",".join(DEFAULT_METHODS), "CAM methods, comma-separated, the first "
                          f"drawn on the gallery's pages: any of {', '.join(METHODS)} (scorecam "
                          "runs one forward per channel of the layer per image: off by default)")
    metrics: str = option(",".join(DEFAULT_METRICS), "faithfulness scores of every map, comma-"
                          f"separated ('' for none): any of {', '.join(METRICS)}")
    scored: str = option("auto", "errors whose maps are scored: all; a number (a seeded random "
                         f"sample); auto: all on CUDA, {CPU_SCORED} on the CPU (where all six "
                         "methods' scores of one error take ~2.4 s)")
    noise: float = option(0.01, "ROAD's imputation noise (standard deviation; images in [0, 1])")
    steps: int = option(16, "steps of the deletion and insertion curves")
    seed: int = option(0, "seed of ROAD's noise and of the scored sample")
    overview: bool = option(True, "also draw 10 random training images per class")
    suspects: int = option(200, "training images on the suspect-labels page, lowest AUM (the "
                           "run's train_dynamics.npz) first; suspect_labels.csv lists every "
                           "one (0: neither is written)")
    human_labels: str = option("auto", "human labels of the test errors (CIFAR-10H and the "
                               "published audit of the test set): auto (fetched once beside "
                               "the betons, checked by SHA-256, where the data is in the "
                               "official order), off", ("auto", "off"))
    screenshot: str = option("auto", "report.png, the report at desktop width in headless "
                             "Chromium: auto (if chromium and playwright are installed), on (an "
                             "error if not), off", ("auto", "on", "off"))

    def validate(self, prefix: str) -> None:
        require_range(prefix, self, "batch_size", 1)
        require_range(prefix, self, "page_size", 1)
        require_range(prefix, self, "suspects", 0, 50_000)
        require_range(prefix, self, "noise", 0, 1)
        require_range(prefix, self, "steps", 1, 1024)
        require_range(prefix, self, "seed", 0, 2**31 - 1)
        check_device(prefix, self.device)
        for name, known, allow_none in (("methods", METHODS, False), ("metrics", METRICS, True)):
            chosen = _names(getattr(self, name))
            bad = [x for x in chosen if x not in known]
            if bad or (not chosen and not allow_none) or len(set(chosen)) != len(chosen):
                what = bad[0] if bad else (getattr(self, name) or "(none)")
                raise ConfigError(f"bad value {what!r} for --{prefix}.{name} (expected a comma-"
                                  f"separated list of {', '.join(known)}, each once)")
        if self.scored not in ("auto", "all") and not (self.scored.isdigit()
                                                       and int(self.scored) >= 1):
            raise ConfigError(f"bad value {self.scored!r} for --{prefix}.scored (expected auto, "
                              "all or a number >= 1)")

    @property
    def method_names(self) -> tuple[str, ...]:
        return _names(self.methods)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return _names(self.metrics)

    def scored_count(self, errors: int, device) -> int:
        """How many of `errors` get scores on `device` (a torch.device)."""
        if self.scored == "all" or (self.scored == "auto" and device.type == "cuda"):
            return errors
        return min(errors, CPU_SCORED if self.scored == "auto" else int(self.scored))


@dataclass(frozen=True)
class ExplainSettings:
    """scripts/explain.py's options."""
    data: DataDir
    explain: ExplainConfig
    run: FinishedRunConfig
