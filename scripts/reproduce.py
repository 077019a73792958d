"""Every headline figure in one command: the 20-epoch recipe for N seeds, the 26-epoch calibration
recipe, explain.py on the first seed and the benchmark suite, within a time budget. Writes one
record (benchmarks/results/reproduce-<device>.json) and its markdown table.

Each stage runs in its own process and is recorded whatever happens to it; the record is
rewritten after every stage. Exit status: 0 done (skipped stages are named in the record), 1 a
stage failed (recorded with its error and log), 2 bad input, 130/143 interrupted.
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
    from ffcv_resnet.reproduce.options import ReproduceSettings
    cfg = parse(ReproduceSettings, description=__doc__)  # checked before torch loads
    from ffcv_resnet.reproduce.stages import reproduce
    _, json_path, md_path = reproduce(cfg.reproduce, Path(cfg.data.dir), cfg.data.source)
    say(f"done in {time.perf_counter() - started:.0f} s -> {json_path}, {md_path}")


if __name__ == "__main__":
    main()
