"""scripts/reproduce.py's options. Their defaults suit a machine of one's own; the limits of one
lent GPU call (its minutes, what one file brought back may weigh) are in
configs/device-call.yaml, which the device command reads."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import option, require_range
from ..data.options import DataSource
from ..device import PROJECT_ROOT, check_device, device_option
from ..errors import UserError

# In order, each as the budget allows: first the two other 20-epoch recipes of issue 33 (whole
# recipes: every lever pinned), which the CPU could not tell apart from the default, then the
# levers one at a time.
ABLATIONS = ("configs/reference-20ep.yaml", "configs/candidate-20ep.yaml",
             "configs/ablations/flip-alternate.yaml", "configs/ablations/ema.yaml",
             "configs/ablations/bn-bias-lr-64.yaml", "configs/ablations/init-pytorch.yaml",
             "configs/ablations/lr-0.2.yaml",
             "configs/ablations/init-pytorch-lr-0.2.yaml")


@dataclass(frozen=True)
class ReproduceConfig:
    """Reproduce: every headline figure in one command"""
    seeds: int = option(3, "seeds of the default 20-epoch recipe (smoke mode: 2)")
    calibration: str = option("configs/reference-26ep.yaml", "the calibration recipe ('': none)")
    ablations: tuple = option(ABLATIONS, "YAML files, each a change to the default recipe (or a "
                              "whole recipe, every lever pinned) run as one seed-0 run after "
                              "the core stages and compared with seed 0 ('': none)", many=True)
    explain: bool = option(True, "explain.py on the first seed's errors")
    bench: bool = option(True, "a benchmark subset (benchmarks/run_all.py) within the budget")
    budget_minutes: float = option(60.0, "skip (and record) each stage that would not fit in "
                                   "what is left of this budget (configs/device-call.yaml: 7, "
                                   "for a lent GPU call of 10 minutes)")
    bench_seconds: float = option(0.0, "the most the benchmark stage may take (0: 150 s on "
                                  "CUDA, 900 s on the CPU, 90 s in smoke mode); run_all skips "
                                  "the suites that would not fit")
    preflight_seconds: float = option(120.0, "the most the preflight (its own process) may take "
                                      "before it is stopped and recorded as failed")
    out: str = option("runs/reproduce", "folder for the run folders, their logs and the "
                      "always-wrong page")
    results: str = option("benchmarks/results", "folder for the record and its markdown table")
    bundle: str = option("", "also write every record, log, history, metrics, explain.json and "
                         "report.png into this .tar.gz (rewritten after every stage)")
    bundle_mb: float = option(0.0, "the most the bundle may weigh, in MiB: report.png and the "
                              "other pictures are left out first (0: no limit; "
                              "configs/device-call.yaml: 16, what one file may weigh there)")
    train_args: str = option("", "extra train.py options for every run, e.g. "
                             "'--training.epochs 10'")
    smoke: bool = option(False, "CPU smoke mode: tiny subsets, 2 seeds, 1 epoch, small benchmarks")
    device: str = device_option()

    def validate(self, prefix: str) -> None:
        require_range(prefix, self, "seeds", 1, 100)
        require_range(prefix, self, "budget_minutes", 0, low_open=True)
        require_range(prefix, self, "preflight_seconds", 0, low_open=True)
        require_range(prefix, self, "bench_seconds", 0)
        require_range(prefix, self, "bundle_mb", 0)
        check_device(prefix, self.device)
        if self.calibration and not (PROJECT_ROOT / self.calibration).is_file() \
                and not Path(self.calibration).is_file():
            raise UserError(f"--{prefix}.calibration {self.calibration}: no such recipe")
        names = [Path(a).stem for a in self.ablations if a]
        if len(set(names)) < len(names):
            raise UserError(f"--{prefix}.ablations: two files named {names}; each run folder is "
                            "named after its file")
        if self.bundle and not self.bundle.endswith(".tar.gz"):
            raise UserError(f"--{prefix}.bundle {self.bundle}: expected a .tar.gz path")


@dataclass(frozen=True)
class ReproduceSettings:
    """scripts/reproduce.py's options."""
    data: DataSource
    reproduce: ReproduceConfig
