"""Run folders: a folder that cannot hold a run, or holds someone else's files, is one line and
nothing is written into it."""
from __future__ import annotations

import pytest

from ffcv_resnet.errors import UserError
from ffcv_resnet.run_folder import RunFolder


def test_unusable_or_refused_folders_get_one_line_and_nothing_written(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for bad in (tmp_path / "file" / "sub", tmp_path / "dangling"):
        with pytest.raises(UserError, match="cannot be used as a run folder|not a folder"):
            RunFolder(bad)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "victim.txt").write_text("keep me")
    (foreign / ".lock").symlink_to(foreign / "victim.txt")
    with pytest.raises(UserError, match="not a run's"):
        RunFolder(foreign)
    assert (foreign / "victim.txt").read_text() == "keep me"
    with RunFolder(tmp_path / "new"):  # created, then left empty: removed again
        pass
    assert not (tmp_path / "new").exists()
