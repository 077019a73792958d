"""Train the CIFAR ResNet-18 on the betons: bf16, channels_last, torch.compile; writes a run folder.

One run per folder: a folder holding another run is refused unless --run.overwrite true (replace
it) or --run.resume true (continue it from its last complete epoch). The run is complete when
metrics.json, its last file, is written. Exit status: 0 done, 2 bad input, 3 training diverged,
130/143 interrupted.
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
    from ffcv_resnet.runner import parse_config, train_run
    cfg = parse_config(description=__doc__)
    r = train_run(cfg, started)
    say(f"test accuracy {r.test_accuracy:.2%} ({r.errors} errors); training "
          f"{r.train_seconds:.1f} s, warm-up {r.compile_seconds:.1f} s, total "
          f"{r.total_seconds:.1f} s -> {cfg['run'].dir}")


if __name__ == "__main__":
    main()
