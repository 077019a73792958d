"""What the engine checks before anything is loaded or compiled: the global batch against the
processes and the split, the order against sharding."""
from __future__ import annotations

import pytest
import torch

from ffcv_resnet.data.betons import beton_path
from ffcv_resnet.data.loaders import ffcv_loader, Shard, Stream
from ffcv_resnet.errors import DataError, UserError
from ffcv_resnet.training.distributed import World
from ffcv_resnet.training.engine import augment_seed, check_data
from ffcv_resnet.finished.settings import parse_config


def test_global_batch_and_shards_are_checked_before_any_work(learnable_data):
    def cfg(batch: int) -> dict:
        return parse_config(["--data.dir", str(learnable_data), "--training.batch_size",
                             str(batch)])

    assert check_data(cfg(48), World(0, 3))["counts"]["train"] == 160  # 16 per process
    with pytest.raises(UserError, match="must divide by the 2 processes .*: try 48"):
        check_data(cfg(49), World(1, 2))
    with pytest.raises(UserError, match="an epoch would hold no batch"):
        check_data(cfg(162), World(0, 3))  # 54 a process, but each has at most 54 (FFCV pads)
    quasi = parse_config(["--data.dir", str(learnable_data), "--training.batch_size", "16",
                          "--data.order", "quasi_random"])
    with pytest.raises(DataError, match="quasi_random does not work with several processes"):
        check_data(quasi, World(0, 2))  # before any loader is built
    assert check_data(quasi, World())["counts"]["train"] == 160  # one process: fine
    with pytest.raises(DataError, match="quasi_random does not work with several processes"):
        ffcv_loader(beton_path(learnable_data, "train"), 16, torch.device("cpu"),
                    Stream(order="quasi_random", shard=Shard(0, 2)))
    assert augment_seed(7, 0) == 7 and len({augment_seed(7, r) for r in range(8)}) == 8
