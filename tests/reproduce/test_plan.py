"""The reproduce plan's time estimates: what a stage is expected to take decides whether it starts
within the budget, so a costlier stage must not be estimated as a plain seed."""
from __future__ import annotations

from ffcv_resnet.reproduce.options import ABLATIONS
from ffcv_resnet.reproduce.plan import estimate, plan


def test_ablations_and_the_calibration_are_estimated_above_a_seed():
    """A seed is expected to take what the last seed took; an ablation (a lever, or a whole
    20-epoch recipe with more test-time views and a weight average) and the calibration's longer
    recipe get a margin over the first seed, so a tight budget skips them rather than starting
    one it must kill."""
    stages = {s.role or s.kind: s for s in plan(3, True, True, "configs/reference-26ep.yaml",
                                                 list(ABLATIONS))}
    seconds = [100.0, 100.0]
    seed, ablation, calibration = (estimate(stages[r], "cuda", seconds)
                                   for r in ("seed", "ablation", "calibration"))
    assert seed == 115.0
    assert seed < ablation < calibration
    assert ablation >= 1.15 * seconds[0]
