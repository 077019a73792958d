"""Provenance: the commit a record names, from git or, in a copy without it, from the device
command's variable."""
from __future__ import annotations



def test_a_copy_without_git_records_the_commit_the_device_command_gives(tmp_path):
    """The GPU machine gets the working tree without .git: records take the commit from
    $FFCV_RESNET_GIT there, and from git where it exists."""
    import shutil
    import subprocess
    import sys
    from conftest import ROOT
    from ffcv_resnet.device import GIT_ENV, git_sha
    shutil.copytree(ROOT / "ffcv_resnet", tmp_path / "ffcv_resnet",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = "from ffcv_resnet.device import git_sha; print(git_sha())"
    env = {k: v for k, v in __import__("os").environ.items() if k != GIT_ENV}
    env["GIT_CEILING_DIRECTORIES"] = str(tmp_path.parent)  # no repository above the copy

    def sha(**extra):
        return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, **extra},
                              capture_output=True, text=True, timeout=120).stdout.strip()
    assert sha() == "unknown"
    assert sha(**{GIT_ENV: "abc1234-dirty"}) == "abc1234-dirty"
    here = git_sha()  # in the checkout, git says, whatever the variable
    assert here not in ("unknown", "") and len(here.split("-")[0]) >= 7
