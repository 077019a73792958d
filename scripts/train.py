"""Train the CIFAR ResNet-18 on the betons: bf16, channels_last, torch.compile; writes a run folder.

One run per folder: a folder holding another run is refused unless --run.overwrite true (replace
it) or --run.resume true (continue it from its last complete epoch). The run is complete when
metrics.json, its last file, is written. Exit status: 0 done, 2 bad input, 3 training diverged,
4 another process of a torchrun run failed or timed out, 130/143 interrupted.

Data-parallel on N GPUs (or N CPU processes): torchrun --nproc_per_node N scripts/train.py ...
(--training.batch_size is the global batch; rank 0 writes the run folder and prints).
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ffcv_resnet.errors import cli, handle_sigterm, say  # noqa: E402


@cli
def main() -> None:
    started = time.perf_counter()
    handle_sigterm()
    from ffcv_resnet.config import parse
    from ffcv_resnet.finished.settings import TrainSettings, parse_config
    parse(TrainSettings, description=__doc__)  # every option checked before torch loads
    from ffcv_resnet.training import distributed as D
    from ffcv_resnet.training.runner import train_run
    with D.session() as w:  # a process group only under torchrun
        cfg = D.from_main(lambda: parse_config(description=__doc__), w)  # rank 0 reads options
        r = train_run(cfg, started)
    if r is None:  # another process than rank 0: rank 0 reports
        return
    say(f"test accuracy {r.test_accuracy:.2%} ({r.errors} errors); training "
          f"{r.train_seconds:.1f} s, warm-up {r.compile_seconds:.1f} s, total "
          f"{r.total_seconds:.1f} s -> {cfg.run.dir}")


if __name__ == "__main__":
    main()
