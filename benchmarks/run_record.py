"""Record one finished training run's figures as benchmarks/results/run-<name>.json and its
table run-<name>.md, for runs made outside `scripts/reproduce.py` (a full-size CPU run, say),
and keep its files (metrics.json, history.jsonl, errors.json, config.yaml, explain.json) in
benchmarks/results/runs/<name>/, so a later run can be compared with it without its folder.

    .venv/bin/python benchmarks/run_record.py ../shared/records/cpu-20ep-seed0 \\
        --name cpu-20ep-seed0 --recipe default --git 4a28a26 --date 2026-12-02 \\
        --data "CIFAR-10 (JPEG q75 copy)" \\
        --command "scripts/train.py (defaults) then scripts/explain.py (defaults)"
    .venv/bin/python benchmarks/run_record.py runs/cpu20-A --name cpu-20ep-reference ... \\
        --recipe "reference-20ep" --against cpu-20ep-seed0 --compare runs/cmp-A/compare.json

The run folder's own files give every figure (metrics.json, history.jsonl, config.yaml,
explain.json when explained); the arguments say what the files cannot: the commit, the day, the
data it ran on and the recipe's name. With --against and --compare, the record keeps the
comparison of this run (B) with the recorded run `--against` (A) that scripts/compare.py wrote,
after checking that it pairs exactly those two runs. Whether it was resumed is read from its
sessions.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS  # noqa: E402
from ffcv_resnet.compare.runs import read_run  # noqa: E402
from ffcv_resnet.compare.stats import p_text  # noqa: E402
from ffcv_resnet.errors import UserError  # noqa: E402
from ffcv_resnet.io import atomic_write_bytes  # noqa: E402
from ffcv_resnet.records import write_json  # noqa: E402
from ffcv_resnet.run_folder import CONFIG, ERRORS, EXPLAIN_JSON, HISTORY, METRICS  # noqa: E402


KEPT = (METRICS, HISTORY, ERRORS, CONFIG)  # a run's record files
KEPT_IF_THERE = (EXPLAIN_JSON,)  # compare reads the explained layer from it
DEFAULT_RECIPE = "default"  # what records written before --recipe existed ran
NAME = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"  # a record's name: a file name, never a path
# what the record's table says of the explain pass (in the keys either commit wrote); the whole
# explain.json is kept beside it in runs/<name>/
EXPLAIN_KEYS = ("errors", "methods", "metrics", "scored", "explain_seconds", "cams_seconds",
                "scores_seconds", "render_seconds", "gradcam_seconds")


def against(compare: dict, run_id: str, baseline: dict) -> dict:
    """What the record keeps of compare.json: this run (B) against the recorded `baseline` (A).
    ValueError when the comparison is not of exactly those two runs."""
    if not isinstance(compare, dict) or compare.get("mode") != "runs":
        raise ValueError("not the comparison of one run with one run that compare.py writes")
    ids = ([s["run_id"] for s in compare["a"]], [s["run_id"] for s in compare["b"]])
    if ids != ([baseline["run_id"]], [run_id]):
        raise ValueError(f"the comparison pairs {ids[0]} (A) with {ids[1]} (B), not "
                         f"{baseline['name']} ({baseline['run_id']}) with this run ({run_id})")
    return {"baseline": baseline["name"], "baseline_run_id": baseline["run_id"],
            "baseline_recipe": baseline.get("recipe", DEFAULT_RECIPE),
            "difference": compare["difference"], "difference_ci95": compare["difference_ci95"],
            "mcnemar_p": compare["mcnemar_p"], "fixed": len(compare["fixed"]),
            "broke": len(compare["broke"]), "label_suspect": compare.get("label_suspect"),
            "verdict": compare["verdict"], "test_set": compare.get("test_set")}


def record(run: Path, name: str, git: str, date: str, data: str, command: str) -> dict:
    """The run's figures and provenance."""
    m = json.loads((run / "metrics.json").read_text())
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines() if x]
    config = yaml.safe_load((run / "config.yaml").read_text())
    explain = (json.loads((run / "explain.json").read_text())
               if (run / "explain.json").is_file() else None)
    return {"suite": "run", "name": name, "recipe": DEFAULT_RECIPE, "run_id": m["run_id"],
            "device": m["device"], "torch": m["torch"], "date": date, "git_sha": git, "data": data,
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
            "explain": explain and {k: explain[k] for k in EXPLAIN_KEYS if k in explain}}


def markdown(r: dict) -> str:
    """The record as the table the README shows."""
    best = max((a for a in r["accuracy_by_epoch"] if a is not None), default=None)
    lines = [f"### Training run {r['name']}", "",
             "| recipe | epochs | seed | test accuracy | errors | training s | images/s | "
             "total s |", "|---|---|---|---|---|---|---|---|",
             f"| {r.get('recipe', DEFAULT_RECIPE)} (batch {r['batch_size']}, peak LR "
             f"{r['peak_lr']}, {r['precision']}, "
             f"compile {r['compile']}, {r['loader']}) | {r['epochs']} | {r['seed']} | "
             f"{100 * r['test_accuracy']:.2f}% | {r['errors']:,} of {r['test_images']:,} | "
             f"{r['train_seconds']:,.0f} | {r['images_per_second']:,.0f} | "
             f"{r['total_seconds']:,.0f} |", "",
             f"Data: {r['data']} ({r['data_source']}). "
             f"{'Resumed' if r['resumed'] else 'Not resumed'} ({r['sessions']} session{'s' if r['sessions'] != 1 else ''}); best epoch "
             f"{100 * best:.2f}%." if best is not None else "", "", _explained(r["explain"]),
             "", *([_versus(r["against"]), ""] if r.get("against") else []),
             f"Measured on {r['device']}, torch {r['torch']}, {r['date']}, git {r['git_sha']}; "
             f"`{r['command']}`; recorded by `benchmarks/run_record.py`. Records: "
             f"`run-{r['name']}.json`; the run's files: `runs/{r['name']}/`"]
    return "\n".join(lines) + "\n"


def _versus(v: dict) -> str:
    """One line: this run against its baseline, as compare.py found it."""
    lo, hi = v["difference_ci95"]
    return (f"Against {v['baseline']} ({v['baseline_recipe']}): {100 * v['difference']:+.2f} "
            f"points [95% CI {100 * lo:+.2f}, {100 * hi:+.2f}], McNemar p = "
            f"{p_text(v['mcnemar_p'])} ({v['fixed']} fixed, {v['broke']} broke): "
            f"{better(v)} (`scripts/compare.py`).")


def better(v: dict) -> str:
    """compare.py's verdict (B is this run, A the baseline) in the record's words."""
    return {"B is better": "this run is better",
            "A is better": f"{v['baseline']} is better"}.get(v["verdict"], "no difference shown")


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


def staged(folder: Path, part: str) -> Path:
    """A temporary beside `folder`; it starts with '.', which no record's name does."""
    return folder.with_name(f".{folder.name}.{part}")


def stage_files(run: Path, folder: Path, compare: Path | None, baseline: str | None) -> Path:
    """A copy of the run's record files (and the comparison) beside `folder`, to be swapped in
    by swap_in once the record is written; a failed copy leaves no temporary."""
    tmp = staged(folder, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name in KEPT + tuple(n for n in KEPT_IF_THERE if (run / n).is_file()):
            shutil.copy2(run / name, tmp / name)
        if compare is not None:
            shutil.copy2(compare, tmp / f"compare-{baseline}.json")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def swap_in(tmp: Path, folder: Path) -> None:
    """`tmp` becomes `folder` (by renames), the old folder removed after."""
    old = staged(folder, "old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", type=Path)
    for name in ("name", "git", "date", "data", "command"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--recipe", required=True, help="the recipe's name in the tables")
    p.add_argument("--against", help="the recorded run (its --name) this one was compared with")
    p.add_argument("--compare", type=Path, help="compare.json of --against (A) and this run (B)")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()
    bad = [n for n in (a.name, a.against) if n is not None and not re.fullmatch(NAME, n)]
    if bad:
        print(f"error: {bad[0]!r}: a record's name is letters, digits, '.', '_' and '-', not "
              "starting with '.'", file=sys.stderr)
        return 2
    if (a.against is None) != (a.compare is None):
        print("error: --against and --compare go together", file=sys.stderr)
        return 2
    if "|" in a.recipe + a.data:
        print("error: --recipe and --data go into a table: no '|'", file=sys.stderr)
        return 2
    missing = [f for f in KEPT if not (a.run / f).is_file()]
    try:
        if missing:
            raise UserError(f"{a.run}: not a complete run (no {', '.join(missing)})")
        read_run(a.run)  # one run's files, whole and consistent, or one line
        r = record(a.run, a.name, a.git, a.date, a.data, a.command)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
        print(f"error: {a.run}: a damaged run folder ({type(e).__name__}: {e})".splitlines()[0],
              file=sys.stderr)
        return 2
    r["recipe"] = a.recipe
    if a.against:
        try:
            if not (a.out / f"run-{a.against}.json").is_file():
                raise ValueError(f"no recorded run {a.against} in {a.out}")
            baseline = json.loads((a.out / f"run-{a.against}.json").read_text())
            r["against"] = against(json.loads(a.compare.read_text()), r["run_id"], baseline)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            print(f"error: --against {a.against} --compare {a.compare}: {e}".splitlines()[0],
                  file=sys.stderr)
            return 2
    folder = a.out / "runs" / a.name
    tmp = None
    try:  # the files first, then the record, then the files swapped in: a failure changes none
        a.out.mkdir(parents=True, exist_ok=True)
        tmp = stage_files(a.run, folder, a.compare, a.against)
        write_json(tmp / ".record.json", r)  # written whole before anything is replaced
        atomic_write_bytes(tmp / ".record.md", markdown(r).encode())
        (tmp / ".record.json").replace(a.out / f"run-{a.name}.json")  # renames: no space needed
        (tmp / ".record.md").replace(a.out / f"run-{a.name}.md")
        swap_in(tmp, folder)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"error: recording into {a.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"-> {a.out / f'run-{a.name}.json'}, {a.out / 'runs' / a.name}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
