"""The bundle: one .tar.gz of a reproduce command's record, its logs and every run's small files,
the one file to bring back from a GPU call; pictures left out first when it would pass its
limit."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

from ..io import atomic_write_bytes
from .record import Record, record_name

RUN_FILES = ("config.yaml", "history.jsonl", "metrics.json", "explain.json", "errors.json",
             "report.png")


def members(r: Record, files: list[Path], out: Path, results: Path) -> list[Path]:
    """What the bundle holds: `files` (the record, its table, the console log), this command's
    stage logs, each of its runs' small files, the always-wrong page and the benchmark records
    of this device."""
    chosen = [Path(p) for p in files if Path(p).is_file()]
    logs = out / "logs"
    for s in r.stages:  # this command's logs only (an eager retry has its own)
        stem = s.name.replace(" ", "-")
        chosen += [p for p in (logs / f"{stem}.log", logs / f"{stem}-eager.log") if p.is_file()]
    for run in r.runs():
        chosen += [Path(run.run_dir) / n for n in RUN_FILES if (Path(run.run_dir) / n).is_file()]
    if r.seeds and (out / "always-wrong.png").is_file():
        chosen.append(out / "always-wrong.png")
    if r.bench:
        device = record_name(r).removeprefix("reproduce-")
        chosen += sorted(p for p in results.glob(f"*-{device}.*")
                         if p.suffix in (".json", ".md") and p not in chosen)
    return chosen


def _pack(chosen: list[Path], root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in chosen:
            try:
                arc = p.resolve().relative_to(root.resolve())
            except ValueError:
                arc = Path(p.parent.name) / p.name
            tar.add(str(p), arcname=str(arc))
    return buf.getvalue()


def bundle(path: Path, r: Record, files: list[Path], out: Path, results: Path,
           limit_mb: float = 0.0) -> Path:
    """Write the bundle atomically; over `limit_mb` MiB (0: no limit) the pictures are left
    out."""
    chosen = members(r, files, out, results)
    data = _pack(chosen, out.parent)
    limit = limit_mb * 2 ** 20
    if limit and len(data) > limit:
        data = _pack([p for p in chosen if p.suffix != ".png"], out.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path
