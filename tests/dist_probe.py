"""scripts/train.py with three observers, for the torchrun tests: every training image each
process is given (a hash per image, per epoch, and the beton index its batch carries), each
image's alternating flip per epoch, and each process's weights when training ends, written to
$PROBE_DIR/rank{RANK}.json, rank{RANK}-index.json, rank{RANK}-flips.json and rank{RANK}.pt.
With PROBE_COMPILES=1, torch.compile gets a backend that counts the graphs Dynamo compiles (and
runs them eager), written to rank{RANK}-compiles.json. Training itself is unchanged."""
import hashlib
import json
import os
import runpy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ffcv_resnet.data import augment  # noqa: E402
from ffcv_resnet.training import engine, loop as train  # noqa: E402

OUT = Path(os.environ.get("PROBE_DIR", "."))
RANK = os.environ.get("RANK", "0")
SEEN: list[list[str]] = []  # per epoch, the hash of every image this process trained on
INDEX: list[list[int]] = []  # per epoch, the beton index each of those images came with
FLIPS: dict[int, dict[int, bool]] = {}  # epoch -> {beton index: flipped} (alternating flips)


def image_hashes(images: torch.Tensor) -> list[str]:
    """One hash per uint8 (3, 32, 32) image, whatever its memory layout."""
    pixels = images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return [hashlib.sha1(p.tobytes()).hexdigest() for p in pixels]


class Observed:
    """A Batches that records what it yields."""

    def __init__(self, inner):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def __iter__(self):
        SEEN.append([])
        INDEX.append([])
        for batch in self.inner:
            SEEN[-1].extend(image_hashes(batch.images))
            INDEX[-1].extend(batch.index.tolist())
            yield batch
        (OUT / f"rank{RANK}.json").write_text(json.dumps(SEEN))
        (OUT / f"rank{RANK}-index.json").write_text(json.dumps(INDEX))


_batches, _fit, _flips = engine.train_batches, train.fit, augment.alternating_flips


def observed_flips(first, index, epoch):
    out = _flips(first, index, epoch)
    FLIPS.setdefault(epoch, {}).update(zip(index.tolist(), out.tolist()))
    (OUT / f"rank{RANK}-flips.json").write_text(json.dumps(FLIPS))
    return out


def observed_batches(*args, **kwargs):
    return Observed(_batches(*args, **kwargs))


def observed_fit(loop, *args, **kwargs):
    out = _fit(loop, *args, **kwargs)
    model = getattr(loop.step.model, "module", loop.step.model)  # inside DDP
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, OUT / f"rank{RANK}.pt")
    return out


COMPILES: list[str] = []  # one entry per graph Dynamo handed to the backend


def counting_compile(model, *args, mode=None, **kwargs):
    """torch.compile with a backend that counts its graphs (mode would pick inductor)."""
    def backend(gm, example_inputs):
        COMPILES.append(f"graph {len(COMPILES)}: {len(example_inputs)} inputs")
        (OUT / f"rank{RANK}-compiles.json").write_text(json.dumps(COMPILES))
        return gm.forward
    return _compile(model, *args, backend=backend, **kwargs)


_compile = torch.compile


if __name__ == "__main__":
    engine.train_batches, train.fit = observed_batches, observed_fit
    if os.environ.get("PROBE_COMPILES"):
        torch.compile = counting_compile
    augment.alternating_flips = observed_flips
    sys.argv = [str(ROOT / "scripts" / "train.py"), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
