"""Tiny CIFAR-10-shaped sources built by the tests themselves, in every form the project reads."""
from __future__ import annotations

import io
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ffcv_resnet.cifar import BATCHES, CLASSES, Split  # noqa: E402


def make_split(per_class: int, seed: int) -> Split:
    """Random 32x32 RGB images, `per_class` of each class, labels in class order."""
    rng = np.random.default_rng(seed)
    n = per_class * len(CLASSES)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return Split(images, np.repeat(np.arange(len(CLASSES)), per_class).astype(np.int64))


@pytest.fixture(scope="session")
def tiny() -> dict[str, Split]:
    return {"train": make_split(3, 0), "test": make_split(2, 1)}


def batch_bytes(split: Split, lo: int, hi: int) -> bytes:
    data = split.images[lo:hi].transpose(0, 3, 1, 2).reshape(hi - lo, -1)  # (N, 3072), CHW rows
    return pickle.dumps({"batch_label": "tiny", "labels": split.labels[lo:hi].tolist(),
                         "data": data, "filenames": [f"{i}.png" for i in range(lo, hi)]},
                        protocol=2)


def write_batches(folder: Path, splits: dict[str, Split]) -> Path:
    """A cifar-10-batches-py folder: train spread over data_batch_1..5, test in test_batch."""
    folder.mkdir(parents=True)
    train = splits["train"]
    bounds = np.linspace(0, len(train.labels), 6).astype(int)
    for name, lo, hi in zip(BATCHES["train"], bounds[:-1], bounds[1:]):
        (folder / name).write_bytes(batch_bytes(train, lo, hi))
    (folder / "test_batch").write_bytes(batch_bytes(splits["test"], 0, len(splits["test"].labels)))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CLASSES)}, protocol=2))
    return folder


def write_image_folder(root: Path, splits: dict[str, Split], fmt: str = "png") -> Path:
    for split, data in splits.items():
        for i, (img, label) in enumerate(zip(data.images, data.labels)):
            path = root / split / CLASSES[label] / f"{i:04d}.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path)
    return root


def tar_folder(folder: Path, out: Path, arcname: str) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return out


@pytest.fixture
def sources(tmp_path, tiny) -> dict[str, Path]:
    """One source of each kind, all holding `tiny`."""
    batches = write_batches(tmp_path / "src" / "cifar-10-batches-py", tiny)
    images = write_image_folder(tmp_path / "src" / "images", tiny)
    return {
        "batches-folder": batches,
        "python-archive": tar_folder(batches, tmp_path / "cifar-10-python.tar.gz",
                                     "cifar-10-batches-py"),
        "image-folder": images,
        "image-tar": tar_folder(images, tmp_path / "images.tar.gz", "cifar10"),
    }


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def learnable_split(per_class: int, seed: int) -> Split:
    """Images whose class is plain to see: a per-class colour plus noise (a tiny learnable task)."""
    rng = np.random.default_rng(seed)
    colours = np.random.default_rng(123).integers(0, 256, (len(CLASSES), 3))
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    noise = rng.normal(0, 40, (len(labels), 32, 32, 3))
    images = np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return Split(images, labels.astype(np.int64))


@pytest.fixture(scope="session")
def learnable_data(tmp_path_factory) -> Path:
    """Betons of the learnable task: 16 train and 6 test images per class."""
    from ffcv_resnet.convert import prepare
    root = tmp_path_factory.mktemp("learnable")
    src = write_batches(root / "cifar-10-batches-py",
                        {"train": learnable_split(16, 0), "test": learnable_split(6, 1)})
    prepare(root / "data", str(src), log=lambda *_: None)
    return root / "data"


TRAIN_ARGS = ["--training.epochs", "3", "--training.batch_size", "32", "--training.lr", "0.8",
              "--training.peak_epoch", "1", "--training.eval_batch_size", "32",
              "--run.progress", "off"]


def run_script(*args, timeout=600):
    import subprocess
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def trained_run(learnable_data, tmp_path_factory) -> Path:
    """A finished 3-epoch training run on the learnable task (shared by train and explain tests)."""
    run_dir = tmp_path_factory.mktemp("run") / "r"
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", run_dir,
                   *TRAIN_ARGS)
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir
