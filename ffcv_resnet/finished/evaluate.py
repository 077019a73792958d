"""Evaluating a model: logits in dataset order (every image, counted) with the levels of
test-time augmentation that training's evaluation, explain, compare and predict share; metrics
and every test error."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import to_float
from ..model import eval_mode
from ..precision import autocast
from .settings import TTA


def owned(logits: torch.Tensor) -> torch.Tensor:
    """Float32 logits that no later call of the model can overwrite. A model compiled with CUDA
    graphs (reduce-overhead, max-autotune) returns its graph's own output buffer, which its
    next call rewrites; `.float()` copies a bf16 output but is a no-op on an fp32 one, so
    an fp32 output is cloned."""
    return logits.clone() if logits.dtype == torch.float32 else logits.float()


def _mirrored(model: nn.Module, x: torch.Tensor,
              plain: torch.Tensor | None = None) -> torch.Tensor:
    plain = owned(model(x)) if plain is None else plain
    return (plain + owned(model(x.flip(3)))) / 2


def tta_logits(model: nn.Module, x: torch.Tensor, tta: str,
               plain: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of a float batch with test-time augmentation: none; the mean over the image and its
    mirror (flip); or half that plus half the same for the image shifted one pixel up-left and
    one down-right, reflect-padded (flip_translate, as the published fast ResNet-18 recipe).
    `plain`: the un-augmented view's float logits when a caller has them (Grad-CAM's forward),
    so that only the other views run. The result is never a buffer the next call of the model
    rewrites (see `owned`)."""
    plain = owned(model(x)) if plain is None else plain
    if tta == "none":
        return plain
    logits = _mirrored(model, x, plain)
    if tta == "flip_translate":
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[:, :, :-2, :-2], padded[:, :, 2:, 2:]]
        logits = 0.5 * logits + 0.25 * sum(
            _mirrored(model, s.contiguous(memory_format=torch.channels_last)) for s in shifted)
    return logits


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, batch_size: int, precision: str = "fp32",
            tta: str = "none") -> torch.Tensor:
    """uint8 (N, 3, 32, 32) on the device -> float32 (N, classes) logits, in the same order.

    A short last batch after full ones is padded to `batch_size`, so a compiled model sees one
    static shape. `tta` is one of TTA (see `tta_logits`).
    """
    if tta not in TTA:
        raise ValueError(f"tta must be one of {TTA}, not {tta!r}")
    out = []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            x = to_float(images[start:start + batch_size])
            n = len(x)
            if n < batch_size and start > 0:  # a short tail after full batches: pad it
                x = torch.cat([x, x.new_zeros(batch_size - n, *x.shape[1:])])
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(images.device, precision):
                logits = tta_logits(model, x, tta)
            out.append(logits[:n])
    return torch.cat(out) if out else torch.empty(0)


def metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> dict:
    """Accuracy (a fraction), mean cross-entropy, and per-class accuracy. One host sync."""
    correct = logits.argmax(1) == labels
    counts = torch.bincount(labels, minlength=num_classes)
    per_class = torch.zeros(num_classes, device=labels.device).index_add_(
        0, labels, correct.float()) / counts.clamp(min=1)
    loss = F.cross_entropy(logits, labels)
    values = torch.cat([torch.stack([correct.double().mean(), loss.double()]),
                        per_class.double(), counts.double()]).tolist()  # the one sync
    acc, loss = values[:2]
    per_class = [a if n else None for a, n in  # no test image of a class: no accuracy
                 zip(values[2:2 + num_classes], values[2 + num_classes:])]
    return {"accuracy": acc, "loss": loss, "per_class_accuracy": per_class}


def find_errors(logits: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> list[dict]:
    """Every misclassified image: dataset index, true and predicted class, p(predicted)."""
    probs = logits.float().softmax(1)
    conf, pred = probs.max(1)
    wrong = (pred != labels).nonzero().squeeze(1)
    rows = torch.stack([indices[wrong].double(), labels[wrong].double(), pred[wrong].double(),
                        conf[wrong].double()], 1).cpu().tolist()
    return [{"index": int(i), "true": int(t), "predicted": int(p), "confidence": round(c, 6)}
            for i, t, p, c in rows]
