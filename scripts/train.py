"""Train the CIFAR ResNet-18 on the betons: bf16, channels_last, torch.compile; writes a run folder."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ffcv_resnet import train as T  # noqa: E402
from ffcv_resnet.augment import AugmentConfig, BatchAugment  # noqa: E402
from ffcv_resnet.betons import beton_path, load_split_counts, read_metadata  # noqa: E402
from ffcv_resnet.config import DataConfig, as_dict, parse  # noqa: E402
from ffcv_resnet.errors import cli  # noqa: E402
from ffcv_resnet.evaluate import find_errors, metrics, predict  # noqa: E402
from ffcv_resnet.figures import plot_curves  # noqa: E402
from ffcv_resnet.loaders import load_all, subset_indices, train_batches  # noqa: E402
from ffcv_resnet.model import resnet18, summary  # noqa: E402
from ffcv_resnet.run import (CHECKPOINT, CONFIG, CURVES, ERRORS, HISTORY, METRICS,  # noqa: E402
                             RunConfig, save_checkpoint, write_history, write_json, write_yaml)
from ffcv_resnet.timing import Stopwatch, resolve_device  # noqa: E402

HEADER = f"{'epoch':>5} {'lr':>7} {'train_loss':>10} {'train_acc':>9} {'test_loss':>9} " \
         f"{'test_acc':>8} {'seconds':>7} {'img/s':>8}"


def row(h: dict) -> str:
    test = (f"{h['test_loss']:>9.4f} {h['test_accuracy']:>8.2%}" if h.get("test_accuracy")
            is not None else f"{'-':>9} {'-':>8}")
    return (f"{h['epoch']:>5} {h['lr']:>7.4f} {h['train_loss']:>10.4f} {h['train_accuracy']:>9.2%} "
            f"{test} {h['train_seconds']:>7.2f} {h['images_per_second']:>8.0f}")


@cli
def main() -> None:
    started = time.perf_counter()
    cfg = parse({"data": DataConfig, "augment": AugmentConfig, "training": T.TrainConfig,
                 "run": RunConfig}, description=__doc__)
    data, run = cfg["data"], cfg["run"]
    device = resolve_device(cfg["training"].device)
    tc = cfg["training"] = T.resolved(cfg["training"], device)
    T.use_compile_cache(tc.compile_cache)
    torch.manual_seed(tc.seed)
    data_dir, run_dir = Path(data.dir), Path(run.dir)
    counts, meta = load_split_counts(data_dir), read_metadata(data_dir)
    train_idx = subset_indices(counts["train"], data.train_subset, tc.seed)
    test_idx = subset_indices(counts["test"], data.test_subset, 0)
    batches = train_batches(data.loader, beton_path(data_dir, "train"), tc.batch_size, device,
                            order=data.order, seed=tc.seed, os_cache=data.os_cache,
                            indices=train_idx, workers=data.workers)
    test_images, test_labels = load_all(beton_path(data_dir, "test"), device, test_idx)
    test_index = torch.as_tensor(test_idx if test_idx is not None else range(counts["test"]),
                                 device=device)
    model = resnet18(len(meta["classes"]))
    if run.summary:
        print(summary(model))
    runner = T.prepare_model(model, tc, device)
    step = T.make_step(model, runner, tc, device, len(batches))
    augment = BatchAugment(cfg["augment"], device, tc.seed)

    def evaluate():
        return predict(runner, test_images, batch_size=tc.eval_batch_size,
                       precision=tc.precision, tta=tc.tta)

    compile_seconds = T.warm_up(model, step, evaluate, device)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(run_dir / CONFIG, as_dict(cfg))
    print(f"device {device}, precision {tc.precision}, compile {tc.compile}, loader {data.loader}, "
          f"{len(batches)} batches/epoch; warm-up {compile_seconds:.1f} s\n{HEADER}")
    progress = run.progress == "on" or (run.progress == "auto" and device.type == "cpu")
    history, eval_seconds = [], 0.0
    for epoch in range(1, tc.epochs + 1):
        h = {"epoch": epoch, **T.train_one_epoch(step, batches, augment, device, progress)}
        h["lr"] = step.scheduler.get_last_lr()[0]
        h["images_per_second"] = h["train_images"] / h["train_seconds"]
        if epoch == tc.epochs or (tc.eval_every and epoch % tc.eval_every == 0):
            with Stopwatch(device) as t:
                logits = evaluate()
                m = metrics(logits, test_labels, len(meta["classes"]))
            eval_seconds += t.seconds
            h.update(test_loss=m["loss"], test_accuracy=m["accuracy"], eval_seconds=t.seconds)
        history.append(h)
        write_history(run_dir / HISTORY, history)
        print(row(h), flush=True)
    errors = find_errors(logits, test_labels, test_index)
    test = {"count": int(len(test_labels)), "fingerprint": meta["source"]["fingerprint"],
            "subset": None if test_idx is None else test_idx.tolist(), "tta": tc.tta,
            "class_counts": torch.bincount(test_labels, minlength=len(meta["classes"])).tolist()}
    save_checkpoint(run_dir / CHECKPOINT, model, test, meta["classes"])
    write_json(run_dir / ERRORS, {"classes": meta["classes"], "test": test, "errors": errors})
    plot_curves(history, run_dir / CURVES)
    train_seconds = sum(h["train_seconds"] for h in history)
    images = sum(h["train_images"] for h in history)
    result = {"test_accuracy": m["accuracy"], "test_loss": m["loss"],
              "per_class_accuracy": dict(zip(meta["classes"], m["per_class_accuracy"])),
              "errors": len(errors), "epochs": tc.epochs, "train_seconds": train_seconds,
              "compile_seconds": compile_seconds, "eval_seconds": eval_seconds,
              "total_seconds": time.perf_counter() - started,
              "images_per_second": images / train_seconds, "train_images": images,
              "test_images": int(len(test_labels)), "device": device_name(device),
              "torch": torch.__version__, "seed": tc.seed, "precision": tc.precision,
              "compile": tc.compile, "compile_mode": tc.compile_mode, "loader": data.loader,
              "data_source": meta["source"]["kind"]}
    write_json(run_dir / METRICS, result)
    print(f"test accuracy {m['accuracy']:.2%} ({len(errors)} errors); training {train_seconds:.1f}"
          f" s, warm-up {compile_seconds:.1f} s, total {result['total_seconds']:.1f} s -> {run_dir}")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


if __name__ == "__main__":
    main()
