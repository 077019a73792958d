"""Training dynamics of every training image, at no extra forward: from the logits each training
step already computes on the image's augmented view, accumulated on the device by the image's
beton index (index_add_, no host sync):
- the area under the margin (AUM, Pleiss et al. 2020): the assigned class's logit minus the
  largest other, averaged over the epochs that saw the image (a wrong label keeps it low);
- the epochs it was classified right, and its forgetting events (Toneva et al. 2019: right at
  one presentation, wrong at the next);
- the mean and spread of p(assigned class) over those epochs (dataset cartography, Swayamdipta
  et al. 2020).
Under torchrun each process adds its shard's images; the epoch's additions are summed over the
processes once per epoch, so every process holds the same totals (and last.pt rank 0's)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path

FIELDS = ("margin_sum", "p_sum", "p_sq_sum", "right", "forgotten", "seen")


class Dynamics:
    """Per-image sums over a run's epochs, on the device."""

    def __init__(self, images: int, device: torch.device):
        self.total = torch.zeros(len(FIELDS), images, device=device)  # (6, N) every epoch's
        self.delta = torch.zeros_like(self.total)  # this epoch's additions, this process's
        self.last = torch.full((images,), -1, dtype=torch.int8, device=device)  # right? -1 never
        self.now = torch.zeros(2, images, dtype=torch.int8, device=device)  # this epoch: right, seen
        self.labels = torch.full((images,), -1, dtype=torch.long, device=device)
        self.epochs = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> None:
        """One step's batch: (B, C) logits of the augmented images, their labels and beton
        indices (each image at most once an epoch)."""
        z = logits.detach().float()
        assigned = z.gather(1, labels[:, None])[:, 0]
        other = z.scatter(1, labels[:, None], float("-inf")).amax(1)
        p = z.softmax(1).gather(1, labels[:, None])[:, 0]
        right = z.argmax(1) == labels
        forgot = (self.last[index] == 1) & ~right  # against its last epoch's presentation
        values = torch.stack([assigned - other, p, p * p, right.float(), forgot.float(),
                              torch.ones_like(p)])
        self.delta.index_add_(1, index, values)
        self.now[0].index_copy_(0, index, right.to(torch.int8))
        self.now[1].index_fill_(0, index, 1)  # a Python scalar: no tensor made from it
        self.labels.index_copy_(0, index, labels)

    def end_epoch(self, reduce=None) -> None:
        """Add the epoch (summed over the processes by `reduce`, under torchrun) to the totals;
        each image seen this epoch keeps whether it was right, for the next one's forgetting."""
        packed = self.epoch()
        self.absorb(reduce(packed) if reduce is not None else packed)

    def epoch(self) -> torch.Tensor:
        """This process's epoch as one tensor to sum over the processes: (9, N)."""
        seen = self.now[1].bool()
        return torch.cat([self.delta, self.now.float(),
                          torch.where(seen, self.labels + 1, 0).float()[None]])

    @torch.no_grad()
    def absorb(self, packed: torch.Tensor) -> None:
        """Every process's epoch (`epoch()` summed over them) into the totals."""
        k = len(FIELDS)
        self.total += packed[:k]
        right, seen, label = packed[k], packed[k + 1] > 0, packed[k + 2]
        self.last = torch.where(seen, right.to(torch.int8), self.last)
        self.labels = torch.where(seen, label.long() - 1, self.labels)
        self.delta.zero_()
        self.now.zero_()
        self.epochs += 1

    def state_dict(self) -> dict:
        return {"total": self.total.cpu().clone(), "last": self.last.cpu().clone(),
                "labels": self.labels.cpu().clone(), "epochs": self.epochs}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        if tuple(state["total"].shape) != tuple(self.total.shape):
            raise ValueError(f"dynamics of {tuple(state['total'].shape)}, expected "
                             f"{tuple(self.total.shape)}")
        self.total.copy_(state["total"])
        self.last.copy_(state["last"])
        self.labels.copy_(state["labels"])
        self.epochs = int(state["epochs"])

    def arrays(self) -> dict[str, np.ndarray]:
        """Every image's figures, in the beton's order (NaN where an image was never seen)."""
        t = {name: self.total[k].double().cpu().numpy() for k, name in enumerate(FIELDS)}
        seen = t["seen"]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = t["p_sum"] / seen
            spread = np.sqrt(np.maximum(t["p_sq_sum"] / seen - mean ** 2, 0.0))
            return {"index": np.arange(len(seen)), "label": self.labels.cpu().numpy(),
                    "aum": t["margin_sum"] / seen, "right_epochs": t["right"].astype(np.int64),
                    "forgetting_events": t["forgotten"].astype(np.int64),
                    "p_mean": mean, "p_std": spread, "seen_epochs": seen.astype(np.int64)}


def write_dynamics(path: Path, d: Dynamics, run_id: str) -> None:
    """train_dynamics.npz, written whole or not at all."""
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, run_id=np.array(run_id), epochs=np.array(d.epochs), **d.arrays())
