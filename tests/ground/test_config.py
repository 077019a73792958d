"""Options: every bad value, YAML file and peak is one ConfigError line, before any work."""
from __future__ import annotations

import pytest

from conftest import CPU

from ffcv_resnet.config import ConfigError
from ffcv_resnet.model import resnet18
from ffcv_resnet.training import recipe as T


@pytest.mark.parametrize("args,message", [
    (["--training.epochs", "0"], "bad value 0 for --training.epochs"),
    (["--training.epochs", "-2"], "bad value -2 for --training.epochs"),
    (["--training.batch_size", "0"], "bad value 0 for --training.batch_size"),
    (["--training.eval_batch_size", "0"], "bad value 0 for --training.eval_batch_size"),
    (["--training.lr", "-1"], "bad value -1.0 for --training.lr"),
    (["--training.lr", "nan"], "bad value nan for --training.lr"),
    (["--training.lr", "inf"], "bad value inf for --training.lr"),
    (["--training.label_smoothing", "2"], "bad value 2.0 for --training.label_smoothing"),
    (["--training.label_smoothing", "1"], "bad value 1.0 for --training.label_smoothing"),
    (["--training.momentum", "1.5"], "bad value 1.5 for --training.momentum"),
    (["--training.device", "bogus"], "bad value 'bogus' for --training.device"),
    (["--training.peak_epoch", "0"], "bad value 0.0 for --training.peak_epoch"),
    (["--augment.pad", "-1"], "bad value -1 for --augment.pad"),
    (["--augment.cutout", "33"], "bad value 33 for --augment.cutout"),
    (["--data.train_subset", "-5"], "bad value -5 for --data.train_subset"),
    (["--run.checkpoint_every", "-1"], "bad value -1 for --run.checkpoint_every"),
    (["--run.resume", "true", "--run.overwrite", "true"], "exclude each other"),
    (["--training.epoch", "3"], "unrecognized arguments: --training.epoch 3"),  # no prefixes
    (["--training.momentum", "0"], "bad value 0.0 for --training.momentum"),  # Nesterov needs it
    (["--training.lr", "1e308", "--training.batch_size", "32"], "finite LR once scaled"),
    (["--data.workers", "100000000"], "bad value 100000000 for --data.workers"),
])
def test_every_bad_option_is_one_config_error(args, message, tmp_path):
    from ffcv_resnet.finished.settings import parse_config
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_config(["--run.dir", str(tmp_path / "r"), *args])


def test_odd_yaml_and_huge_peaks_are_handled(tmp_path):
    from ffcv_resnet.finished.settings import parse_config
    for text, message in [(b"\x00\xff", "cannot read config"),
                          (b"training:\n  epochs: null\n", "no value for 'training.epochs'"),
                          (b"run:\n  dir:\n", "no value for 'run.dir'")]:
        (tmp_path / "c.yaml").write_bytes(text)
        with pytest.raises(ConfigError, match=message):
            parse_config(["-C", str(tmp_path / "c.yaml")])
    cfg = T.TrainConfig(epochs=2, peak_epoch=1e308, lr_start=0.0)  # moved to mid-run
    opt = T.make_optimizer(resnet18(), cfg, CPU)
    sched = T.make_schedule(opt, cfg, 4)
    assert opt.param_groups[0]["lr"] == pytest.approx(T.peak_lr(cfg) / 4) and sched
