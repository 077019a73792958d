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

import py2pickle  # noqa: E402
from ffcv_resnet.data.cifar import BATCHES, CLASSES, Split  # noqa: E402


def make_split(per_class: int, seed: int) -> Split:
    """Random 32x32 RGB images, `per_class` of each class, labels in class order."""
    rng = np.random.default_rng(seed)
    n = per_class * len(CLASSES)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return Split(images, np.repeat(np.arange(len(CLASSES)), per_class).astype(np.int64))


@pytest.fixture(scope="session")
def tiny() -> dict[str, Split]:
    return {"train": make_split(3, 0), "test": make_split(2, 1)}


LAYOUTS = ("py3", "py2")  # pickled by Python 3 (protocol 2), or as the official files are


def dumps(obj, layout: str = "py3") -> bytes:
    """A pickle of `obj` in one of the LAYOUTS: "py2" is the official batches' byte layout."""
    return py2pickle.dumps(obj) if layout == "py2" else pickle.dumps(obj, protocol=2)


@pytest.fixture(params=LAYOUTS)
def layout(request) -> str:
    """Each pickle test runs on Python 3's layout and on the official (Python 2) one."""
    return request.param


def batch_bytes(split: Split, lo: int, hi: int, layout: str = "py3",
                label: str = "tiny") -> bytes:
    """One batch file's bytes, with the official files' keys in their order."""
    data = split.images[lo:hi].transpose(0, 3, 1, 2).reshape(hi - lo, -1)  # (N, 3072), CHW rows
    return dumps({"batch_label": label, "labels": split.labels[lo:hi].tolist(), "data": data,
                  "filenames": [f"image_{i:06d}.png" for i in range(lo, hi)]}, layout)


def write_batches(folder: Path, splits: dict[str, Split], layout: str = "py3") -> Path:
    """A cifar-10-batches-py folder as the official archive holds it: train spread over
    data_batch_1..5, test in test_batch, batches.meta and readme.html."""
    folder.mkdir(parents=True)
    train = splits["train"]
    bounds = np.linspace(0, len(train.labels), 6).astype(int)
    for i, (name, lo, hi) in enumerate(zip(BATCHES["train"], bounds[:-1], bounds[1:])):
        (folder / name).write_bytes(batch_bytes(train, lo, hi, layout,
                                                f"training batch {i + 1} of 5"))
    (folder / "test_batch").write_bytes(batch_bytes(splits["test"], 0, len(splits["test"].labels),
                                                    layout, "testing batch 1 of 1"))
    meta = {"num_cases_per_batch": 10000, "label_names": list(CLASSES), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(dumps(meta, layout))
    (folder / "readme.html").write_text("<meta HTTP-EQUIV=\"REFRESH\" content=\"0; "
                                        "URL=http://www.cs.toronto.edu/~kriz/cifar.html\">\n")
    return folder


def write_image_folder(root: Path, splits: dict[str, Split], fmt: str = "png") -> Path:
    for split, data in splits.items():
        for i, (img, label) in enumerate(zip(data.images, data.labels)):
            path = root / split / CLASSES[label] / f"{i:04d}.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path)
    return root


def tar_folder(folder: Path, out: Path, arcname: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return out


@pytest.fixture
def sources(tmp_path, tiny) -> dict[str, Path]:
    """One source of each kind, all holding `tiny`; the pickled kinds also in the official
    (Python 2) byte layout, as "batches-folder-py2" and "python-archive-py2"."""
    images = write_image_folder(tmp_path / "src" / "images", tiny)
    out = {"image-folder": images,
           "image-tar": tar_folder(images, tmp_path / "images.tar.gz", "cifar10")}
    for layout, suffix in (("py3", ""), ("py2", "-py2")):
        batches = write_batches(tmp_path / f"src{suffix}" / "cifar-10-batches-py", tiny, layout)
        out["batches-folder" + suffix] = batches
        out["python-archive" + suffix] = tar_folder(
            batches, tmp_path / f"archive{suffix}" / "cifar-10-python.tar.gz",
            "cifar-10-batches-py")
    return out


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
    from ffcv_resnet.data.convert import prepare
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
    """A finished 3-epoch training run on the learnable task (shared by train and explain tests),
    with its last.pt kept (the resume tests start from it)."""
    run_dir = tmp_path_factory.mktemp("run") / "r"
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", run_dir,
                   *TRAIN_ARGS, "--run.keep_last", "true")
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir
