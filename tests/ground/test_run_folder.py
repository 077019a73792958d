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


class _Stream:
    def __init__(self, terminal: bool):
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def test_auto_progress_bars_need_a_terminal_and_the_cpu(monkeypatch):
    """--run.progress auto draws a bar only on the CPU and only when stderr is a terminal (a
    bar redrawn with carriage returns would fill a log file); on and off are obeyed anywhere."""
    import sys
    from ffcv_resnet.run_folder import show_progress
    for terminal in (True, False):
        monkeypatch.setattr(sys, "stderr", _Stream(terminal))
        assert show_progress("auto", "cpu") is terminal
        assert show_progress("auto", "cuda") is False
        assert show_progress("on", "cuda") is True and show_progress("off", "cpu") is False
    monkeypatch.setattr(sys, "stderr", None)  # pythonw, or a daemon started without one
    assert show_progress("auto", "cpu") is False
    import io
    closed = io.StringIO()
    closed.close()  # isatty() on a closed stream raises ValueError
    monkeypatch.setattr(sys, "stderr", closed)
    assert show_progress("auto", "cpu") is False
