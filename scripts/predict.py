"""Classify and explain your own images with a finished run: the top classes (with the run's
test-time augmentation) and the CAM map of the predicted class, for files, folders and globs.

    scripts/predict.py --run.dir runs/main --predict.out predictions photo.jpg photos/

Writes predictions.json, predictions.csv, overlays/ and predictions.html into --predict.out.
Exit status: 0 all predicted, 1 some inputs could not be used (each named on stderr and in
predictions.json), 2 bad options, nothing usable or an unusable run, 130/143 interrupted.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ffcv_resnet.errors import cli, handle_sigterm  # noqa: E402


@cli
def main() -> None:
    handle_sigterm()
    from ffcv_resnet.config import parse
    from ffcv_resnet.predict.options import PredictSettings
    cfg = parse(PredictSettings, description=__doc__)  # checked before torch loads
    from ffcv_resnet.predict.run import predict_run
    predict_run(cfg)


if __name__ == "__main__":
    main()
