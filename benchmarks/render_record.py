"""Record explain's rendering time (benchmarks/render_timing.py's synthetic run) of a checkout of
this project: this one, or an older one to compare with, timed by the same code here.

    git worktree add /tmp/before b510fd9      # the commit that added render_timing.py, old renderer
    .venv/bin/python benchmarks/render_record.py --root /tmp/before --name before
    .venv/bin/python benchmarks/render_record.py --name after

Each call replaces its named record in benchmarks/results/render-<device>.json and rewrites the
table beside it.
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default=str(HERE), help="checkout whose renderer is timed")
    p.add_argument("--name", required=True, help="record name (e.g. before, after)")
    p.add_argument("--errors", type=int, default=600)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    sys.path.insert(0, str(Path(a.root).resolve()))  # its ffcv_resnet and benchmarks first
    rt = importlib.import_module("benchmarks.render_timing")
    import torch
    provenance = _ours("device", "timing", "provenance")  # the timed checkout's: its git sha
    e, seconds = rt.synthetic(a.errors), []
    for _ in range(a.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            rt.render(e, Path(tmp))
            seconds.append(time.perf_counter() - start)
    info = provenance(torch.device("cpu"))
    record = {"suite": "render", **info, "name": a.name, "errors": a.errors,
              "seconds": statistics.median(seconds), "all_seconds": seconds,
              "timed": "benchmarks/render_timing.py's render() of a synthetic run: gallery pages, "
                       "manifest, summary, overview and report (and the sprite sheets where the "
                       "checkout writes them); not the screenshot; median of the repeats"}
    write(record)
    print(f"render {a.name} ({info['git_sha']}): {record['seconds']:.2f} s median of "
          f"{', '.join(f'{s:.2f}' for s in seconds)}")


def _ours(module: str, before: str, name: str):
    """`name` from ffcv_resnet.<module>, or from ffcv_resnet.<before> in a checkout older than
    the subpackage layout."""
    try:
        return getattr(importlib.import_module(f"ffcv_resnet.{module}"), name)
    except ImportError:
        return getattr(importlib.import_module(f"ffcv_resnet.{before}"), name)


def write(record: dict) -> None:
    """Replace the record of the same name in render-<device>.json; rewrite its table."""
    from ffcv_resnet.records import read_json, write_json
    atomic_write_bytes = _ours("io", "errors", "atomic_write_bytes")
    slug = _ours("device", "timing", "slug")
    out = HERE / "benchmarks" / "results" / f"render-{slug(record)}.json"
    old = read_json(out, "render records") if out.is_file() else []
    records = [r for r in old if r["name"] != record["name"]] + [record]
    write_json(out, records)
    rows = "\n".join(f"| {r['name']} | {r['git_sha']} | {r['date']} | {r['errors']} | "
                     f"{r['seconds']:.2f} |" for r in records)
    atomic_write_bytes(out.with_suffix(".md"), (
        f"### render\n\n| checkout | git | date | errors | seconds |\n|---|---|---|---|---|\n"
        f"{rows}\n\nOn {record['device']}, torch {record['torch']}; "
        f"`benchmarks/render_record.py` (see its docstring). Records: `{out.name}`\n").encode())


if __name__ == "__main__":
    main()
