"""Compare two runs, or two groups of runs (the seeds of two recipes), on the same test images:
did B beat A beyond seed noise, and on which images? Writes compare.json and compare.html.

    scripts/compare.py runs/base runs/change --compare.out runs/cmp
    scripts/compare.py --compare.a runs/base --compare.b runs/change --compare.out runs/cmp
    scripts/compare.py --compare.a runs/reproduce/seed-* --compare.b runs/other/seed-* ...

Exit status: 0 done, 2 bad input (incomplete runs, different test sets, a run twice, ...).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ffcv_resnet.errors import cli, handle_sigterm  # noqa: E402


@cli
def main() -> None:
    handle_sigterm()
    from ffcv_resnet.compare.compare import CompareSettings, compare_runs
    from ffcv_resnet.config import parse
    compare_runs(parse(CompareSettings, description=__doc__))


if __name__ == "__main__":
    main()
