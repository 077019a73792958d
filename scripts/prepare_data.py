"""Convert CIFAR-10 (official archive, its folder, or an image folder / .tar.gz) to FFCV betons."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ffcv_resnet.config import parse  # noqa: E402
from ffcv_resnet.data.convert import prepare  # noqa: E402
from ffcv_resnet.data.options import PrepareSettings  # noqa: E402
from ffcv_resnet.errors import cli, handle_sigterm  # noqa: E402


@cli
def main() -> None:
    handle_sigterm()
    data = parse(PrepareSettings, description=__doc__).data
    meta = prepare(Path(data.dir), data.source, data.force, data.workers)
    print(f"{data.dir}: train {meta['counts']['train']}, test {meta['counts']['test']} images")


if __name__ == "__main__":
    main()
