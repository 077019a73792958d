"""Explain a run's test errors: batched Grad-CAM of every error, galleries, manifest and figures.

The run folder must hold one complete run (metrics.json written, every file of the same run id);
the outputs carry that run id too. Exit status: 0 done, 2 bad input, 130/143 interrupted.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ffcv_resnet.errors import cli, handle_sigterm  # noqa: E402


@cli
def main() -> None:
    handle_sigterm()  # before the heavy imports, so that SIGTERM during them is one line too
    from ffcv_resnet.config import parse
    from ffcv_resnet.explain.options import ExplainSettings
    cfg = parse(ExplainSettings, description=__doc__)  # checked before torch loads
    from ffcv_resnet.explain.explain import explain_run
    explain_run(cfg)


if __name__ == "__main__":
    main()
