"""model.pt: weights only, and the reloaded model predicts what the run evaluated."""
from __future__ import annotations

import json

import torch

from conftest import CPU

from ffcv_resnet.data.betons import beton_path
from ffcv_resnet.data.loaders import load_all
from ffcv_resnet.finished.checkpoint import load_checkpoint
from ffcv_resnet.finished.evaluate import find_errors, predict


def test_checkpoint_reloads_weights_only_and_predicts_the_same(trained_run, learnable_data):
    blob = torch.load(trained_run / "model.pt", weights_only=True)
    assert blob["arch"] == "resnet18-cifar" and blob["test"]["count"] == 60
    model, _ = load_checkpoint(trained_run / "model.pt")
    precision = json.loads((trained_run / "metrics.json").read_text())["precision"]
    images, labels = load_all(beton_path(learnable_data, "test"), CPU)
    logits = predict(model, images, batch_size=32, tta="flip", precision=precision)
    recomputed = find_errors(logits, labels, torch.arange(60))
    saved = json.loads((trained_run / "errors.json").read_text())["errors"]
    assert [(e["index"], e["predicted"]) for e in recomputed] == \
           [(e["index"], e["predicted"]) for e in saved]
