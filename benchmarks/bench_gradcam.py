"""Grad-CAM throughput: ours vs the `grad-cam` package, batched and one image at a time, with the
same model, images, layer and device; and explain's pass per batch (both classes' maps and the
TTA probabilities) before and after it became one forward."""
from __future__ import annotations

from typing import Callable

import torch

from benchmarks.common import measure, table
from ffcv_resnet.data.augment import to_float
from ffcv_resnet.precision import auto_precision
from ffcv_resnet.training.evaluate import predict
from ffcv_resnet.explain.explain import cams_and_probs
from ffcv_resnet.explain.gradcam import grad_cam
from ffcv_resnet.model import resnet18


def explain_before(model: torch.nn.Module, images: torch.Tensor, pred: torch.Tensor,
                   true: torch.Tensor, layer: str, precision: str, tta: str):
    """The reference for `cams_and_probs`: explain's pass until it became one forward. The batch
    went through Grad-CAM twice over ([images; images] for the predicted and the true class),
    then through `predict` for the TTA probabilities: four forwards of each image with flip."""
    x = to_float(images)
    res = grad_cam(model, torch.cat([x, x]), torch.cat([pred, true]), layer, precision=precision)
    probs = predict(model, images, batch_size=len(images), precision=precision,
                    tta=tta).softmax(1)
    return res.maps.view(2, len(x), *x.shape[-2:]), res.empty.view(2, -1), probs


def explain_cases(model: torch.nn.Module, x: torch.Tensor, classes: torch.Tensor, layer: str,
                  precisions: list[str], tta: str = "flip") -> list[tuple[str, Callable[[], int]]]:
    """Before/after timings of explain's pass over one batch of errors, in each precision."""
    u8 = (x * 255).round().to(torch.uint8).contiguous(memory_format=torch.channels_last)
    true = (classes + 1) % 10

    def before(precision):
        float(explain_before(model, u8, classes, true, layer, precision, tta)[0].sum())
        return len(x)

    def after(precision):
        float(cams_and_probs(model, to_float(u8), torch.stack([classes, true]), layer, precision,
                             tta)[0].sum())  # as explain does
        return len(x)

    return [(f"explain {which}, {p}", lambda f=f, p=p: f(p)) for p in precisions
            for which, f in (("before: 2x batch + predict", before), ("after: one pass", after))]


def run(device: torch.device, images: int, single: int, repeats: int,
        layer: str = "layer3") -> tuple[list[dict], str]:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    torch.manual_seed(0)
    model = resnet18().to(device).eval()
    x = torch.rand(images, 3, 32, 32, device=device)
    classes = torch.randint(0, 10, (images,), device=device)
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    module = dict(model.named_modules())[layer]
    ref = GradCAM(model=model, target_layers=[module])

    def ours(n, precision="fp32", batched=True):
        if batched:
            float(grad_cam(model, x[:n], classes[:n], layer, precision=precision).maps.sum())
        else:
            for i in range(n):
                grad_cam(model, x[i:i + 1], classes[i:i + 1], layer, precision=precision)
        return n

    def reference(n, batched=True):
        if batched:
            ref(input_tensor=x[:n], targets=targets[:n])
        else:
            for i in range(n):
                ref(input_tensor=x[i:i + 1], targets=targets[i:i + 1])
        return n

    cases = [("ours batched", lambda: ours(images)),
             ("grad-cam batched", lambda: reference(images)),
             ("ours one at a time", lambda: ours(single, batched=False)),
             ("grad-cam one at a time", lambda: reference(single, batched=False))]
    bf16 = auto_precision(device) == "bf16"
    if bf16:  # the package cannot run under bf16 autocast: its activations go through numpy,
        # which has no bfloat16 (it raises TypeError)
        cases.insert(1, ("ours batched bf16", lambda: ours(images, "bf16")))
    precisions = ["fp32"] + (["bf16"] if bf16 else [])
    cases += explain_cases(model, x, classes, layer, precisions)
    records = []
    for name, fn in cases:
        m = measure(fn, device, warmup=1, repeats=repeats)
        explain = name.startswith("explain")
        records.append({"benchmark": "gradcam", "name": name, "layer": layer,
                        "images": m["items"], "seconds": m["seconds"],
                        "images_per_second": m["items_per_second"],
                        "timed": EXPLAIN_TIMED if explain else
                        "maps for one target class per image, on the device, synchronised"})
        print(f"  gradcam {name:>22}: {m['items_per_second']:>9,.0f} images/s", flush=True)
    ref.__exit__(None, None, None)  # removes the package's hooks
    maps = [r for r in records if not r["name"].startswith("explain")]
    base = next(r for r in maps if r["name"] == "grad-cam batched")["images_per_second"]
    md = table(["Grad-CAM", "images", "images/s", "x grad-cam batched"],
               [[r["name"], r["images"], r["images_per_second"],
                 f"{r['images_per_second'] / base:.1f}x"] for r in maps])
    return records, md + "\n\n" + explain_table(records)


EXPLAIN_TIMED = ("explain's pass over one batch of errors: the predicted- and true-class maps "
                 "and the flip-TTA probabilities, on the device, synchronised")


def explain_table(records: list[dict]) -> str:
    """Errors/s of explain's pass, before and after the one-forward change, per precision."""
    rows = []
    for r in (r for r in records if r["name"].startswith("explain")):
        before = next(b for b in records if b["name"] == r["name"].replace(
            "after: one pass", "before: 2x batch + predict"))
        rows.append([r["name"].removeprefix("explain "), r["images"], r["images_per_second"],
                     f"{r['images_per_second'] / before['images_per_second']:.1f}x"])
    return table(["explain pass: both maps + flip TTA", "errors", "errors/s", "x before"], rows)
