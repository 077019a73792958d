"""What the tests share: tiny CIFAR-10-shaped sources built by the tests themselves, in every
form the project reads; the learnable betons and one trained run (and a second, explained pair)
on them; a model and batch for the maps; and the helpers several test files use (running a
script, waiting on a process, strict JSON, a fake run folder, a page in Chromium)."""
from __future__ import annotations

import http.server
import io
import json
import os
import pickle
import shutil
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["FFCV_RESNET_OFFLINE"] = "1"  # nothing fetched from the network, in every script run

import py2pickle  # noqa: E402
from ffcv_resnet.data.betons import beton_path  # noqa: E402
from ffcv_resnet.data.loaders import load_all  # noqa: E402
from ffcv_resnet.explain.browser import browser_missing  # noqa: E402
from ffcv_resnet.model import resnet18  # noqa: E402
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
    assert "Traceback" not in r.stderr, r.stderr[-3000:]  # no child process's either
    return run_dir


CPU = torch.device("cpu")


QUIET = {"log": lambda *_: None}


def strict_json(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


def wait_for(path, proc, timeout=300):
    wait_until(path.exists, proc, timeout)


def wait_until(ready, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def minmax(a: np.ndarray) -> np.ndarray:
    a = a - a.min(axis=(-2, -1), keepdims=True)
    top = a.max(axis=(-2, -1), keepdims=True)
    return np.where(top > 0, a / np.where(top > 0, top, 1), 0)


def tar_members(tiny, root):
    from ffcv_resnet.data.cifar import CLASSES
    return [(f"{root}/{s}/{CLASSES[label]}/{i}.png", png_bytes(img)) for s in ("train", "test")
            for i, (img, label) in enumerate(zip(tiny[s].images, tiny[s].labels))]


TWO_CLASSES = ["c0", "c1"]


TWO_CLASS_LABELS = [0] * 50 + [1] * 50  # 100 test images, two classes


def fake_run(root: Path, name: str, wrong: dict[int, int], labels: list[int], run_id: str,
             accuracy_only: float | None = None, config: dict | None = None,
             test: dict | None = None) -> Path:
    """A complete run folder as training writes it, with errors at `wrong` ({index: guess})
    over test images of `labels` (2 classes)."""
    path = root / name
    path.mkdir(parents=True)
    n = len(labels)
    counts = [labels.count(0), labels.count(1)]
    test = test or {"count": n, "fingerprint": "f" * 16, "subset": None, "tta": "flip",
                    "class_counts": counts}
    errors = [{"index": i, "true": labels[i], "predicted": p, "confidence": 0.7}
              for i, p in sorted(wrong.items())]
    acc = 1 - len(wrong) / n
    per_class = {c: 1 - sum(1 for i in wrong if labels[i] == k) / counts[k]
                 for k, c in enumerate(TWO_CLASSES)}
    cfg = {"run_id": run_id, "training": {"seed": 0, "lr": 0.4}, "run": {"dir": str(path)}}
    for k, v in (config or {}).items():
        sec, opt = k.split(".")
        cfg.setdefault(sec, {})[opt] = v
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "errors.json").write_text(json.dumps({"run_id": run_id, "classes": TWO_CLASSES,
                                                  "test": test, "errors": errors}))
    metrics = {"run_id": run_id, "test_accuracy": accuracy_only if accuracy_only else acc,
               "test_loss": 1.0, "per_class_accuracy": per_class, "errors": len(wrong),
               "epochs": 1, "train_seconds": 10.0, "eval_seconds": 1.0, "compile_seconds": 2.0,
               "startup_seconds": 3.0, "checkpoint_seconds": 0.1, "total_seconds": 15.0,
               "images_per_second": 100.0, "train_images": 1000, "test_images": n,
               "peak_lr": 0.4, "device": "cpu", "torch": "2", "seed": 0, "precision": "fp32",
               "compile": "off", "compile_mode": "default", "loader": "ffcv",
               "data_source": "x"}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


class LocalFiles:
    """Serves named files over HTTP on localhost (a stand-in for a published download; 404 for
    any other path); counts the requests. close() takes it down, so a later fetch fails."""

    def __init__(self, files: dict[str, bytes]):
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                body = files.get(self.path.lstrip("/"))
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


BROWSER_MISSING = browser_missing()


needs_browser = pytest.mark.skipif(BROWSER_MISSING is not None,
                                   reason=f"no headless browser: {BROWSER_MISSING}")


class Page:
    """A report opened in Chromium, with every console error, page error and failed request."""

    def __init__(self, page, path):
        self.page, self.problems = page, []
        page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url}"))
        page.goto(path.resolve().as_uri(), wait_until="load")

    def visible_rows(self) -> list[dict]:
        return self.page.evaluate("""() => [...document.querySelectorAll('#error-rows tr')]
            .filter((tr) => !tr.hidden).map((tr) => ({index: +tr.dataset.index,
              true: +tr.dataset.true, pred: +tr.dataset.pred,
              p_pred: +tr.cells[4].textContent, p_true: +tr.cells[5].textContent}))""")

    def text(self, selector: str) -> str:
        return self.page.text_content(selector).strip()

    def images_loaded(self) -> dict:
        """Every <img> and every sprite sheet the tiles use, loaded: name -> (width, height)."""
        return self.page.evaluate("""async () => {
            const urls = new Set([...document.querySelectorAll('.tile')].map(
                (t) => getComputedStyle(t).backgroundImage.slice(5, -2)));
            const sizes = {};
            for (const img of document.images)
                sizes[img.src] = [img.naturalWidth, img.naturalHeight];
            for (const url of urls) {
                const img = new Image();
                img.src = url;
                try { await img.decode(); } catch (e) {}
                sizes[url] = [img.naturalWidth, img.naturalHeight];
            }
            return sizes;
        }""")


@pytest.fixture(scope="module")
def test_images(learnable_data, tmp_path_factory):
    """The test split as PNG files named by index, with litter a folder collects."""
    folder = tmp_path_factory.mktemp("images") / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / ".git").mkdir()
    x, y = load_all(beton_path(learnable_data, "test"), torch.device("cpu"))
    for i, im in enumerate(x.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(im).save(folder / ("sub" if i % 2 else ".") / f"{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")  # litter: skipped, not failed
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "._000.png").write_bytes(b"\0\5\26\7 AppleDouble")
    (folder / ".git" / "x.png").write_bytes(b"hidden folder")
    return folder, y.numpy()


def predict_script(run, out, *inputs, extra=()):
    """scripts/predict.py on a run's model, into `out`."""
    return run_script("scripts/predict.py", "--run.dir", run, "--predict.out", out, *extra,
                      *inputs, timeout=300)


@pytest.fixture(scope="session")
def pair(trained_run, learnable_data, tmp_path_factory):
    """Two real CPU mini-runs (seeds 0 and 1 of the toy recipe), both explained; shared by the
    compare tests, which copy a run before changing it."""
    root = tmp_path_factory.mktemp("pair")
    a = root / "a"
    shutil.copytree(trained_run, a, ignore=shutil.ignore_patterns(".lock"))
    b = root / "b"
    r = run_script("scripts/train.py", "--data.dir", learnable_data, "--run.dir", b,
                   *TRAIN_ARGS, "--training.seed", "1", "--training.lr", "0.4")
    assert r.returncode == 0, r.stderr[-2000:]
    for run in (a, b):
        r = run_script("scripts/explain.py", "--run.dir", run, "--data.dir", learnable_data,
                       "--explain.metrics", "", "--explain.methods", "gradcam",
                       "--explain.screenshot", "off", "--explain.overview", "false")
        assert r.returncode == 0, r.stderr[-2000:]
    out = root / "cmp"
    r = run_script("scripts/compare.py", "--compare.a", a, "--compare.b", b, "--compare.out",
                   out, "--data.dir", learnable_data)
    assert r.returncode == 0, r.stderr[-2000:]
    return a, b, out, r.stdout


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    model = resnet18().eval()
    images = torch.rand(12, 3, 32, 32)
    classes = torch.randint(0, 10, (12,))
    return model, images, classes


def random_bn_model() -> torch.nn.Module:
    """Random weights whose BatchNorm layers hold running statistics of real forwards (not the
    initial 0 mean and unit variance), so that eval mode differs from train mode."""
    torch.manual_seed(0)
    model = resnet18()
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(32, 3, 32, 32) * 0.8 + 0.1)
    bn = model.layer3[0].bn1
    assert bn.running_mean.abs().max() > 0.01 and (bn.running_var - 1).abs().max() > 0.01
    return model.eval()


# --- the two tiers: `make test-fast` runs the tests not marked slow, `make test` runs all ---
# slow: a test that starts a process (a script, torchrun), drives a browser, compares with a
# reference package (grad-cam, torch.optim.swa_utils, cleanlab, aum), or takes a fixture that
# does one of these; marked here from what the test does, so a new test cannot forget it
SLOW_FIXTURES = {"trained_run", "pair", "explained", "ddp_runs", "big_source", "official",
                 "test_images", "learnable_run_pair"}
SLOW_CALLS = ("run_script(", "subprocess", "torchrun(", "Popen(", "predict_script(", "_package",
              "pytorch_grad_cam", "AveragedModel(", "cleanlab", "AUMCalculator", "explain_run(",
              "reproduce(", "needs_browser")


def pytest_collection_modifyitems(config, items):
    import inspect
    for item in items:
        if item.get_closest_marker("slow"):
            continue
        try:
            source = inspect.getsource(item.function)
        except (OSError, TypeError):
            source = ""
        browser = any("no headless browser" in str(m.kwargs.get("reason", ""))
                      for m in item.iter_markers("skipif"))
        if browser or SLOW_FIXTURES & set(item.fixturenames) or \
                any(call in source for call in SLOW_CALLS):
            item.add_marker(pytest.mark.slow)
