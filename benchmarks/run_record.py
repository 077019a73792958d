"""Record one finished training run's figures as benchmarks/results/run-<name>.json and its
table run-<name>.md, for runs made outside `scripts/reproduce.py` (a full-size CPU run, say).

    .venv/bin/python benchmarks/run_record.py ../shared/records/cpu-20ep-seed0 --name cpu-20ep-seed0 \\
        --git 4a28a26 --date 2026-12-02 --data "CIFAR-10 (JPEG q75 copy)" \\
        --command "scripts/train.py (defaults) then scripts/explain.py (defaults)"

The run folder's own files give every figure (metrics.json, history.jsonl, config.yaml,
explain.json when explained); the arguments say what the files cannot: the commit, the day and
the data it ran on. Whether it was resumed is read from its sessions.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ffcv_resnet.io import atomic_write_bytes  # noqa: E402
from ffcv_resnet.records import write_json  # noqa: E402


def record(run: Path, name: str, git: str, date: str, data: str, command: str) -> dict:
    """The run's figures and provenance."""
    m = json.loads((run / "metrics.json").read_text())
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines() if x]
    config = yaml.safe_load((run / "config.yaml").read_text())
    explain = (json.loads((run / "explain.json").read_text())
               if (run / "explain.json").is_file() else None)
    return {"suite": "run", "name": name, "run_id": m["run_id"], "device": m["device"],
            "torch": m["torch"], "date": date, "git_sha": git, "data": data,
            "data_source": m["data_source"], "command": command,
            "resumed": len(m.get("sessions", [])) > 1, "sessions": len(m.get("sessions", [])),
            "epochs": m["epochs"], "seed": m["seed"], "precision": m["precision"],
            "compile": m["compile"], "loader": m["loader"], "batch_size":
                config["training"]["batch_size"], "peak_lr": m["peak_lr"],
            "test_accuracy": m["test_accuracy"], "errors": m["errors"],
            "test_images": m["test_images"], "train_seconds": m["train_seconds"],
            "eval_seconds": m["eval_seconds"], "total_seconds": m["total_seconds"],
            "images_per_second": m["images_per_second"],
            "accuracy_by_epoch": [h.get("test_accuracy") for h in history],
            "explain": explain}  # explain.json as that commit wrote it


def markdown(r: dict) -> str:
    """The record as the table the README shows."""
    best = max((a for a in r["accuracy_by_epoch"] if a is not None), default=None)
    lines = [f"### Training run {r['name']}", "",
             "| recipe | epochs | seed | test accuracy | errors | training s | images/s | "
             "total s |", "|---|---|---|---|---|---|---|---|",
             f"| default (batch {r['batch_size']}, peak LR {r['peak_lr']}, {r['precision']}, "
             f"compile {r['compile']}, {r['loader']}) | {r['epochs']} | {r['seed']} | "
             f"{100 * r['test_accuracy']:.2f}% | {r['errors']:,} of {r['test_images']:,} | "
             f"{r['train_seconds']:,.0f} | {r['images_per_second']:,.0f} | "
             f"{r['total_seconds']:,.0f} |", "",
             f"Data: {r['data']} ({r['data_source']}). {'Resumed' if r['resumed'] else 'Not resumed'}"
             f" ({r['sessions']} session{'s' if r['sessions'] != 1 else ''}); best epoch "
             f"{100 * best:.2f}%." if best is not None else "", "", _explained(r["explain"]),
             "",
             f"Measured on {r['device']}, torch {r['torch']}, {r['date']}, git {r['git_sha']}; "
             f"`{r['command']}`; recorded by `benchmarks/run_record.py`. Records: "
             f"`run-{r['name']}.json`"]
    return "\n".join(lines) + "\n"


def _explained(e: dict | None) -> str:
    """One line on the run's explain pass, in the keys its commit wrote."""
    if not e:
        return "Not explained."
    if "explain_seconds" in e:
        return (f"explain.py: {e['errors']} errors, maps of {len(e['methods'])} methods "
                f"{e['cams_seconds']:.1f} s, {len(e['metrics'])} scores of {e['scored']} errors "
                f"{e['scores_seconds']:.1f} s, rendering {e['render_seconds']:.1f} s.")
    return (f"explain.py (Grad-CAM of both classes only, as that commit explained): "
            f"{e['errors']} errors, Grad-CAM {e['gradcam_seconds']:.1f} s, rendering "
            f"{e['render_seconds']:.1f} s.")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", type=Path)
    for name in ("name", "git", "date", "data", "command"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = p.parse_args()
    if not (a.run / "metrics.json").is_file():
        print(f"error: {a.run}: not a complete run (no metrics.json)", file=sys.stderr)
        return 2
    r = record(a.run, a.name, a.git, a.date, a.data, a.command)
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / f"run-{a.name}.json", r)
    atomic_write_bytes(a.out / f"run-{a.name}.md", markdown(r).encode())
    print(f"-> {a.out / f'run-{a.name}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
