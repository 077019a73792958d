"""Weight averaging: an exponential moving average of the weights and BatchNorm statistics,
updated every few steps with airbench94's warm-started decay (KellerJordan/cifar10-airbench,
legacy/airbench94.py), or the same average written back into the live weights after each update
(lookahead). After the last step the model holds the average: it is what the run evaluates and
saves. One batched update over every tensor (torch._foreach_*), no host sync."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


def decay_at(step: int, total: int, rate: float, every: int) -> float:
    """The weight the average keeps at update `step` (1-based) of `total`: `rate` per step over
    the `every` steps since the last update, scaled by (step/total)^3, so early averages follow
    the weights closely and late ones hold on (airbench94: 0.95^5 (step/total)^3)."""
    return rate ** every * (step / total) ** 3


def averaged_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The model's floating-point parameters and buffers (BatchNorm's running mean and
    variance), in state_dict order; integer buffers (batch counts) are left as they are."""
    return [t for t in model.state_dict().values() if t.is_floating_point()]


class WeightAverage:
    """The average of a model's weights over its training steps; call `step()` after each
    optimiser step. `lookahead`: each update also sets the live weights to the average."""

    def __init__(self, model: nn.Module, total_steps: int, every: int = 5, rate: float = 0.95,
                 lookahead: bool = False):
        self.live = averaged_tensors(model)  # views of the model's own storage
        with torch.no_grad():
            self.average = [t.clone() for t in self.live]
        self.total, self.every, self.rate, self.lookahead = total_steps, every, rate, lookahead
        self.steps = 0  # a Python int: counting it is no sync

    @torch.no_grad()
    def step(self) -> None:
        """Count a step; update every `every` steps; after the last, the model is the average."""
        self.steps += 1
        if self.steps % self.every == 0:
            weight = 1 - decay_at(self.steps, self.total, self.rate, self.every)
            torch._foreach_lerp_(self.average, self.live, weight)
            if self.lookahead:
                torch._foreach_copy_(self.live, self.average)
        if self.steps == self.total:
            torch._foreach_copy_(self.live, self.average)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the average inside the block (for evaluation), its own weights
        again after it."""
        with torch.no_grad():
            saved = [t.clone() for t in self.live]
            torch._foreach_copy_(self.live, self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.live, saved)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "average": [t.detach().cpu().clone() for t in self.average]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        if len(state["average"]) != len(self.average):
            raise ValueError(f"a weight average of {len(state['average'])} tensors, "
                             f"expected {len(self.average)}")
        self.steps = int(state["steps"])
        torch._foreach_copy_(self.average, [t.to(a.device) for t, a in
                                            zip(state["average"], self.average)])
