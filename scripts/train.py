"""Train the CIFAR ResNet-18 on the betons: bf16, channels_last, torch.compile; writes a run folder."""
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ffcv_resnet import train as T  # noqa: E402
from ffcv_resnet.augment import AugmentConfig, BatchAugment  # noqa: E402
from ffcv_resnet.betons import beton_path, checked_metadata  # noqa: E402
from ffcv_resnet.config import DataConfig, as_dict, parse  # noqa: E402
from ffcv_resnet.errors import cli  # noqa: E402
from ffcv_resnet.evaluate import find_errors, metrics, predict  # noqa: E402
from ffcv_resnet.figures import plot_curves  # noqa: E402
from ffcv_resnet.loaders import load_all, subset_indices, train_batches  # noqa: E402
from ffcv_resnet.model import resnet18, summary  # noqa: E402
from ffcv_resnet.run import (CHECKPOINT, CONFIG, CURVES, ERRORS, HISTORY, METRICS,  # noqa: E402
                             RunConfig, save_checkpoint, write_history, write_json, write_yaml)
from ffcv_resnet.timing import device_name, resolve_device  # noqa: E402

HEADER = f"{'epoch':>5} {'lr':>7} {'train_loss':>10} {'train_acc':>9} {'test_loss':>9} " \
         f"{'test_acc':>8} {'seconds':>7} {'img/s':>8}"


def row(h: dict) -> str:
    """One fixed-width line of the per-epoch table."""
    test = (f"{h['test_loss']:>9.4f} {h['test_accuracy']:>8.2%}" if "test_accuracy" in h
            else f"{'-':>9} {'-':>8}")
    return (f"{h['epoch']:>5} {h['lr']:>7.4f} {h['train_loss']:>10.4f} {h['train_accuracy']:>9.2%} "
            f"{test} {h['train_seconds']:>7.2f} {h['images_per_second']:>8.0f}")


def load_data(cfg: dict, device: torch.device) -> SimpleNamespace:
    """Checked betons -> training batches (either path) and the test split on the device."""
    data, tc, data_dir = cfg["data"], cfg["training"], Path(cfg["data"].dir)
    meta = checked_metadata(data_dir)
    counts = meta["counts"]
    train_idx = subset_indices(counts["train"], data.train_subset, tc.seed)
    test_idx = subset_indices(counts["test"], data.test_subset, 0)
    batches = train_batches(data.loader, beton_path(data_dir, "train"), tc.batch_size, device,
                            order=data.order, seed=tc.seed, os_cache=data.os_cache,
                            indices=train_idx, workers=data.workers)
    images, labels = load_all(beton_path(data_dir, "test"), device, test_idx)
    index = torch.as_tensor(test_idx if test_idx is not None else range(counts["test"]),
                            device=device)
    test = {"count": int(len(labels)), "fingerprint": meta["source"]["fingerprint"],
            "subset": None if test_idx is None else test_idx.tolist(), "tta": tc.tta,
            "class_counts": torch.bincount(labels, minlength=len(meta["classes"])).tolist()}
    return SimpleNamespace(meta=meta, batches=batches, images=images, labels=labels,
                           index=index, test=test)


def write_outputs(run_dir: Path, model, d: SimpleNamespace, history, logits, m, extra) -> dict:
    """Checkpoint, errors, curves and metrics.json into the run folder."""
    classes = d.meta["classes"]
    errors = find_errors(logits, d.labels, d.index)
    save_checkpoint(run_dir / CHECKPOINT, model, d.test, classes)
    write_json(run_dir / ERRORS, {"classes": classes, "test": d.test, "errors": errors})
    plot_curves(history, run_dir / CURVES)
    train_seconds = sum(h["train_seconds"] for h in history)
    images = sum(h["train_images"] for h in history)
    result = {"test_accuracy": m["accuracy"], "test_loss": m["loss"],
              "per_class_accuracy": dict(zip(classes, m["per_class_accuracy"])),
              "errors": len(errors), "epochs": len(history), "train_seconds": train_seconds,
              "eval_seconds": sum(h.get("eval_seconds", 0.0) for h in history),
              "images_per_second": images / train_seconds, "train_images": images,
              "test_images": d.test["count"], "torch": torch.__version__,
              "data_source": d.meta["source"]["kind"], **extra}
    write_json(run_dir / METRICS, result)
    return result


@cli
def main() -> None:
    started = time.perf_counter()
    cfg = parse({"data": DataConfig, "augment": AugmentConfig, "training": T.TrainConfig,
                 "run": RunConfig}, description=__doc__)
    device = resolve_device(cfg["training"].device)
    tc = cfg["training"] = T.resolved(cfg["training"], device)
    T.use_compile_cache(tc.compile_cache)
    torch.manual_seed(tc.seed)
    d = load_data(cfg, device)
    model = resnet18(len(d.meta["classes"]))
    if cfg["run"].summary:
        print(summary(model))
    runner = T.prepare_model(model, tc, device)
    step = T.make_step(model, runner, tc, device, len(d.batches))

    def evaluate():
        logits = predict(runner, d.images, batch_size=tc.eval_batch_size,
                         precision=tc.precision, tta=tc.tta)
        return logits, metrics(logits, d.labels, len(d.meta["classes"]))

    compile_seconds = T.warm_up(model, step, evaluate, device)
    run_dir = Path(cfg["run"].dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(run_dir / CONFIG, as_dict(cfg))
    print(f"device {device}, precision {tc.precision}, compile {tc.compile}, loader "
          f"{cfg['data'].loader}, {len(d.batches)} batches/epoch; warm-up {compile_seconds:.1f} s"
          f"\n{HEADER}")
    progress = cfg["run"].progress == "on" or (cfg["run"].progress == "auto"
                                               and device.type == "cpu")

    def report(history: list[dict]) -> None:
        write_history(run_dir / HISTORY, history)
        print(row(history[-1]), flush=True)

    history, logits, m = T.fit(step, d.batches, BatchAugment(cfg["augment"], device, tc.seed),
                               evaluate, device, progress, report)
    extra = {"compile_seconds": compile_seconds, "device": device_name(device), "seed": tc.seed,
             "precision": tc.precision, "compile": tc.compile, "compile_mode": tc.compile_mode,
             "loader": cfg["data"].loader, "total_seconds": time.perf_counter() - started}
    r = write_outputs(run_dir, model, d, history, logits, m, extra)
    print(f"test accuracy {r['test_accuracy']:.2%} ({r['errors']} errors); training "
          f"{r['train_seconds']:.1f} s, warm-up {compile_seconds:.1f} s, total "
          f"{r['total_seconds']:.1f} s -> {run_dir}")


if __name__ == "__main__":
    main()
