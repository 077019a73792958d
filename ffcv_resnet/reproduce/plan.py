"""The reproduce plan: every stage declared as data (its name, what it runs, its run folder and
limit), in priority order, and what each is expected to take before one like it has run."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KINDS = ("preflight", "train", "explain", "bench")

# what a stage is assumed to take before one of its kind has been timed (seconds), by device
# kind: "smoke" (the CPU smoke mode), "cuda", "cpu"
FIRST_TRAIN_SECONDS = {"smoke": 30.0, "cuda": 120.0, "cpu": 3600.0}
EXPLAIN_SECONDS = {"smoke": 60.0, "cuda": 45.0, "cpu": 300.0}
BENCH_SECONDS = {"smoke": 90.0, "cuda": 150.0, "cpu": 900.0}  # the most the benchmarks get
BENCH_MIN_SECONDS = 30.0  # less than this left: the benchmark stage is skipped
# in order: the suites run_all tries, each only when its estimate fits what is left
BENCH_SUITES = {"smoke": "loader,gradcam", "cuda": "loader,gradcam,train,startup,epoch",
                "cpu": ""}
PREFLIGHT_SECONDS = 60.0  # its estimate (its limit is --reproduce.preflight_seconds)


@dataclass(frozen=True)
class Stage:
    """One stage of the plan."""
    name: str  # "seed 0", "calibration", "ablation ema", "explain", ...
    kind: str  # one of KINDS
    recipe: str = ""  # train: the -C file (absolute), "" for the default recipe
    seed: int = 0  # train: --training.seed
    folder: str = ""  # train: its run folder's name under --reproduce.out
    role: str = ""  # train: "seed", "calibration" or "ablation"

    @property
    def log_name(self) -> str:
        return f"{self.name.replace(' ', '-')}.log"


def plan(seeds: int, explain: bool, bench: bool, calibration: str,
         ablations: list[str]) -> list[Stage]:
    """The stages in priority order: the preflight, seed 0, explain, the benchmarks, the other
    seeds, the calibration recipe, then each ablation (a change to the default or a
    whole recipe, one seed)."""
    stages = [Stage("preflight", "preflight"),
              Stage("seed 0", "train", seed=0, folder="seed-0", role="seed")]
    if explain:
        stages.append(Stage("explain", "explain"))
    if bench:
        stages.append(Stage("bench", "bench"))
    stages += [Stage(f"seed {k}", "train", seed=k, folder=f"seed-{k}", role="seed")
               for k in range(1, seeds)]
    if calibration:
        stages.append(Stage("calibration", "train", recipe=calibration, folder="calibration",
                            role="calibration"))
    for recipe in ablations:
        name = Path(recipe).stem
        stages.append(Stage(f"ablation {name}", "train", recipe=recipe,
                            folder=f"ablation-{name}", role="ablation"))
    return stages


def estimate(stage: Stage, kind: str, seed_seconds: list[float]) -> float:
    """Seconds `stage` is expected to take on a device of `kind` ("smoke", "cuda", "cpu"),
    from the seeds already run (their total seconds), or a prior before the first."""
    first = seed_seconds[0] if seed_seconds else None
    if stage.kind == "preflight":
        return PREFLIGHT_SECONDS
    if stage.kind == "explain":
        return EXPLAIN_SECONDS[kind]
    if stage.kind == "bench":
        return BENCH_MIN_SECONDS
    if first is None:
        return FIRST_TRAIN_SECONDS[kind]
    if stage.role == "calibration":  # its own recipe, e.g. 26 epochs at batch 500
        return 1.5 * first + 15
    if stage.role == "ablation":  # a lever or a whole 20-epoch recipe: its weight average and
        return 1.15 * first + 15  # its test-time views (flip_translate: 6, not 2) cost more
    return seed_seconds[-1] + 15
