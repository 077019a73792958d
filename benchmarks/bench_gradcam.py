"""Grad-CAM throughput: ours vs the `grad-cam` package, batched and one image at a time, with the
same model, images, layer and device."""
from __future__ import annotations

import torch

from benchmarks.common import measure, table
from ffcv_resnet.evaluate import auto_precision
from ffcv_resnet.gradcam import grad_cam
from ffcv_resnet.model import resnet18


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
    if auto_precision(device) == "bf16":  # the package cannot run under bf16 autocast: its
        # activations go through numpy, which has no bfloat16 (it raises TypeError)
        cases.insert(1, ("ours batched bf16", lambda: ours(images, "bf16")))
    records = []
    for name, fn in cases:
        m = measure(fn, device, warmup=1, repeats=repeats)
        records.append({"benchmark": "gradcam", "name": name, "layer": layer,
                        "images": m["items"], "seconds": m["seconds"],
                        "images_per_second": m["items_per_second"],
                        "timed": "maps for one target class per image, on the device, synchronised"})
        print(f"  gradcam {name:>22}: {m['items_per_second']:>9,.0f} images/s", flush=True)
    ref.__exit__(None, None, None)  # removes the package's hooks
    base = next(r for r in records if r["name"] == "grad-cam batched")["images_per_second"]
    md = table(["Grad-CAM", "images", "images/s", "x grad-cam batched"],
               [[r["name"], r["images"], r["images_per_second"],
                 f"{r['images_per_second'] / base:.1f}x"] for r in records])
    return records, md
