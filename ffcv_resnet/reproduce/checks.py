"""Checks made before a reproduce command spends anything: ffcv imports, the recipes parse, the
output folders can be written and hold nothing a stage would wrongly replace; and the removal
of an earlier command's run when its stage starts."""
from __future__ import annotations

import importlib
from pathlib import Path

from ..device import PROJECT_ROOT
from ..errors import UserError
from ..run_folder import CONFIG, LOCK, RunFolder, check_output_folder, foreign_files, read_config
from ..finished.settings import parse_config

COMPILE_CACHE = "compile-cache"  # beside the runs: every run of a command compiles into it


def check_ffcv() -> None:
    """ffcv's loader and writer import here (on Python 3.12 through data/ffcv_shim.py), or one
    line says why, before anything is spent."""
    try:
        importlib.import_module("ffcv_resnet.data.loaders").ffcv_api()  # through the shim
        importlib.import_module("ffcv.writer")
    except Exception as e:  # noqa: BLE001 (an ImportError, or a broken build's OSError)
        text = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"ffcv cannot be imported here ({type(e).__name__}: {text}); run "
                        "`python -c 'from ffcv_resnet.data.loaders import ffcv_api; "
                        "ffcv_api()'` to see why") from None


def checked_recipe(name: str, option_name: str = "calibration") -> str:
    """A recipe's path ('' for none), checked as a config before anything runs."""
    if not name:
        return ""
    path = Path(name) if Path(name).is_file() else PROJECT_ROOT / name
    if not path.is_file():
        raise UserError(f"--reproduce.{option_name} {name}: no such recipe")
    parse_config(["-C", str(path)])  # a bad recipe is found now, not after the seeds
    return str(path.resolve())  # train.py runs from the repository root, not from here


def made_by_reproduce(folder: Path) -> bool:
    """A run folder reproduce wrote (its runs compile into the command's own cache, beside
    them) holding nothing else, or an empty one (a stage killed before it wrote anything)."""
    if foreign_files(folder):
        return False
    if not [p for p in folder.iterdir() if p.name != LOCK]:
        return True
    try:
        cache = read_config(folder)["training"]["compile_cache"]
    except (UserError, KeyError, TypeError):
        return False
    return Path(cache) == folder.parent / COMPILE_CACHE and (folder / CONFIG).is_file()


def check_folders(out: Path, results: Path, runs: list[str]) -> None:
    """Every folder this command writes can be written, and none is (inside) a run folder; a
    folder where one of its stages will put a run holds nothing, or a run reproduce made
    (replaced when that stage starts, never before): anything else is refused now."""
    for folder, name in ((out, "out"), (results, "results")):
        check_output_folder(folder, f"reproduce.{name}")
    for name in runs:
        folder = out / name
        if folder.exists() and (not folder.is_dir() or not made_by_reproduce(folder)):
            raise UserError(f"{folder}: holds files reproduce did not write (its stage would "
                            "replace them); move them, or choose another --reproduce.out")


def clear_run_folder(folder: Path) -> None:
    """An earlier command's run in `folder` removed as this stage starts (checked at the
    start to be reproduce's own)."""
    if folder.exists():
        with RunFolder(folder) as f:  # refuses a folder in use by another process
            f.clear()
