"""explain/suspects.py: train_dynamics.npz read back as training wrote it, a subset's unseen
images counted apart and listed last, and every way the file can be unusable is one line."""
from __future__ import annotations

import numpy as np
import torch

from ffcv_resnet.explain.suspects import read_dynamics, suspects_csv
from ffcv_resnet.run_folder import DYNAMICS
from ffcv_resnet.training.dynamics import Dynamics, write_dynamics


def _written(tmp_path, seen: list[int], images: int = 8, run_id: str = "r1"):
    d = Dynamics(images, torch.device("cpu"))
    idx = torch.tensor(seen)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        d.update(torch.randn(len(seen), 10, generator=g), idx % 10, idx)
        d.end_epoch()
    write_dynamics(tmp_path / DYNAMICS, d, run_id)
    return d


def test_a_subset_run_counts_the_images_it_saw_and_lists_the_rest_last(tmp_path):
    """Trained on 5 of 8 images (--data.train_subset): the line names the 5, the CSV lists all
    8 with the unseen 3 last and blank, and the figures are the ones training wrote."""
    d = _written(tmp_path, [6, 1, 4, 0, 3])
    dyn, said = read_dynamics(tmp_path, "r1", 8)
    assert said == "suspect labels: the lowest AUM of the 5 training images the run saw"
    assert dyn.seen == 5 and dyn.epochs == 3
    np.testing.assert_array_equal(dyn.aum, d.arrays()["aum"])
    rows = [r.split(",") for r in suspects_csv(dyn).splitlines()[1:]]
    assert len(rows) == 8 and sorted(int(r[0]) for r in rows[5:]) == [2, 5, 7]
    assert all(r[2] == "" for r in rows[5:]) and all(r[2] != "" for r in rows[:5])
    aums = [float(r[2]) for r in rows[:5]]
    assert aums == sorted(aums)


def test_another_runs_or_another_sized_file_is_one_line(tmp_path):
    _written(tmp_path, [0, 1, 2])
    assert read_dynamics(tmp_path, "r2", 8) == (None, (
        f"no suspect-labels page: {tmp_path / DYNAMICS} is another run's, or not of the "
        "8 training images"))
    assert read_dynamics(tmp_path, "r1", 9)[0] is None
    (tmp_path / DYNAMICS).unlink()
    dyn, said = read_dynamics(tmp_path, "r1", 8)
    assert dyn is None and said.startswith("no suspect-labels page: train_dynamics.npz is missing")
