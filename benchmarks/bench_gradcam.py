"""Explanation throughput: every CAM method, ours batched vs the `grad-cam` package's batched
(same model, images, layer and device), one image at a time for Grad-CAM; the whole family
from one backward vs Grad-CAM alone; ROAD over a set of maps vs the package's, with the
imputation alone and its largest difference from the package's exact solve; and explain's
whole pass (every method's maps of both classes, every default score) per error.

The package is a test dependency: where it is not installed (the GPU machine's image lacks it)
its rows are left out and the table says so; ours are still timed."""
from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.common import measure, table
from ffcv_resnet.data.augment import to_float
from ffcv_resnet.explain.cams import CamSettings, cams, grad_cam
from ffcv_resnet.explain.options import DEFAULT_METHODS, METHODS
from ffcv_resnet.explain.analysis import PassConfig, map_pass, score_pass
from ffcv_resnet.explain.faithfulness import (PERCENTILES, ScoreSettings, faithfulness,
                                              linear_impute, relevance_ranks, road_known)
from ffcv_resnet.model import resnet18
from ffcv_resnet.precision import auto_precision
from ffcv_resnet.timing import sync

PACKAGE = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
           "hirescam": "HiResCAM", "layercam": "LayerCAM", "eigencam": "EigenCAM",
           "scorecam": "ScoreCAM"}
MAPS_TIMED = "maps of one target class per image, on the device, synchronised"


def package_missing() -> str | None:
    """Why the reference rows cannot run here, or None: the package absent, or installed but
    failing to import (mismatched wheels, say), is the same gap, named."""
    for name in ("pytorch_grad_cam", "ttach"):
        if importlib.util.find_spec(name) is None:
            return f"the grad-cam package is not installed here (no {name}): its rows are left out"
    for name in ("pytorch_grad_cam", "pytorch_grad_cam.metrics.road",
                 "pytorch_grad_cam.utils.model_targets"):
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 (any failure to import is the package missing)
            first = (str(e).strip().splitlines() or [""])[0][:160]
            return (f"the grad-cam package does not import here ({type(e).__name__}: {first}): "
                    "its rows are left out")
    return None


def _model(device: torch.device) -> torch.nn.Module:
    """Random weights with BatchNorm statistics of real forwards, channels_last on the device."""
    torch.manual_seed(0)
    model = resnet18().to(device, memory_format=torch.channels_last).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(64, 3, 32, 32, device=device))
    return model.eval()


def _record(name: str, m: dict, timed: str, **extra) -> dict:
    print(f"  gradcam {name:>40}: {m['items_per_second']:>9,.1f} images/s", flush=True)
    return {"benchmark": "gradcam", "name": name, "images": m["items"],
            "seconds": m["median_seconds"], "images_per_second": m["items_per_second"],
            "timed": timed, **extra}


@dataclass(frozen=True)
class Bench:
    """What every record of the suite measures on: the model, a batch of images with a class
    each, the layer, the device and the repeats of each timing."""
    model: torch.nn.Module
    x: torch.Tensor  # (N, 3, 32, 32) float, channels_last
    classes: torch.Tensor  # (N,)
    layer: str
    device: torch.device
    repeats: int
    missing: str | None  # why the grad-cam package is not compared (None: it is)


def method_records(b: Bench, single: int) -> list[dict]:
    """Each method, ours vs the package's, batched; Grad-CAM one image at a time too."""
    model, x, classes, layer, device, repeats, missing = (b.model, b.x, b.classes, b.layer,
                                                          b.device, b.repeats, b.missing)
    out = []
    for method in METHODS:
        n = single if method == "scorecam" else len(x)  # Score-CAM: C forwards per image

        def ours(n=n, method=method):
            float(cams(model, x[:n], classes[:n], CamSettings((method,), layer))[method].maps.sum())
            return n
        out.append(_record(f"{method}: ours batched", measure(ours, device, 1, repeats),
                           MAPS_TIMED, method=method))
        if missing:
            continue
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        targets = [ClassifierOutputTarget(int(c)) for c in classes[:n]]
        with getattr(pytorch_grad_cam, PACKAGE[method])(
                model=model, target_layers=[dict(model.named_modules())[layer]]) as ref:
            ref.batch_size = 256  # Score-CAM's forwards per batch (the package's default: 16)

            def reference(n=n, ref=ref, targets=targets):
                ref(input_tensor=x[:n], targets=targets)
                return n
            out.append(_record(f"{method}: grad-cam batched",
                               measure(reference, device, 1, repeats), MAPS_TIMED,
                               method=method))
        model.zero_grad(set_to_none=True)

    def one(n=single):  # one image at a time: what a per-image loop costs
        for i in range(n):
            grad_cam(model, x[i:i + 1], classes[i:i + 1], layer)
        return n
    out.append(_record("gradcam: ours one at a time", measure(one, device, 1, repeats),
                       MAPS_TIMED, method="gradcam"))
    return out


def family_records(b: Bench, precision: str) -> list[dict]:
    """Explain's maps of both classes: Grad-CAM alone vs all default methods together."""
    model, x, classes, layer, device, repeats = (b.model, b.x, b.classes, b.layer, b.device,
                                                 b.repeats)
    both = torch.stack([classes, (classes + 1) % 10])
    out = []
    for name, methods in (("gradcam alone", ("gradcam",)), ("all six", DEFAULT_METHODS)):
        def run(methods=methods):
            out_ = cams(model, x, both, CamSettings(methods, layer, precision=precision))
            float(sum(r.maps.sum() for r in out_.values()))
            return len(x)
        out.append(_record(f"family: {name}, 2 classes, {precision}",
                           measure(run, device, 1, repeats),
                           "maps of the predicted and the true class from one forward and one "
                           "backward per class set; on the device, synchronised",
                           methods=list(methods), precision=precision))
    return out


def road_records(b: Bench, n: int, precision: str) -> list[dict]:
    """ROAD (combined, 18 imputations per map) over n maps: ours vs the package's; the
    imputation alone; and the largest difference of our imputation from the exact solve."""
    model, x, classes, layer, device, missing = (b.model, b.x, b.classes, b.layer, b.device,
                                                 b.missing)
    maps = cams(model, x[:n], classes[:n], CamSettings(("gradcam",), layer))["gradcam"].maps
    xs, cs = x[:n], classes[:n]

    def ours():
        settings = ScoreSettings("road_combined", precision=precision)
        float(faithfulness(model, xs, maps, cs, settings).sum())
        return n
    out = [_record(f"ROAD combined: ours, {precision}", measure(ours, device, 1, 2),
                   "ROADCombined over n Grad-CAM maps (18 imputations and forwards each, and "
                   "the one forward before), on the device, synchronised", precision=precision)]
    ranks = relevance_ranks(maps)
    known = torch.cat([road_known(ranks, p, morf, (32, 32)) for morf in (True, False)
                       for p in PERCENTILES])
    imgs = xs.repeat(len(PERCENTILES) * 2, 1, 1, 1)

    def impute():
        float(linear_impute(imgs, known).sum())
        return len(known)
    out.append(_record("ROAD imputation alone: ours", measure(impute, device, 1, 2),
                       "the noisy linear imputations alone (18 per map), batched conjugate "
                       "gradients; images/s counts imputations"))
    if missing:
        return out
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in cs]
    cpu_maps = maps.cpu().numpy()

    def reference():
        ROADCombined(list(PERCENTILES))(xs, cpu_maps, targets, model)
        return n
    # the package's pass takes seconds: one timed call after no warm-up says enough
    out.append(_record("ROAD combined: grad-cam", measure(reference, device, 0, 1),
                       "the package's ROADCombined on the same maps (fp32: it cannot run "
                       "under autocast), one call"))
    cpu_imgs, cpu_known = imgs.cpu(), known.cpu()
    start = time.perf_counter()
    exact = torch.stack([NoisyLinearImputer(noise=0)(cpu_imgs[i], cpu_known[i, 0].float())
                         for i in range(len(cpu_known))])
    seconds = time.perf_counter() - start
    diff = float((linear_impute(imgs, known).cpu() - exact).abs().max())
    print(f"  gradcam ROAD imputation: largest difference from the exact solve {diff:.2e}")
    out.append({"benchmark": "gradcam", "name": "ROAD imputation alone: grad-cam",
                "images": len(known), "seconds": seconds,
                "images_per_second": len(known) / seconds, "largest_difference": diff,
                "timed": "the package's NoisyLinearImputer (scipy spsolve, image by image, "
                         "noise 0) on the same masks, one pass; largest_difference: the most "
                         "any pixel of ours differs from its exact solution"})
    return out


def pass_record(b: Bench, precision: str) -> dict:
    """Explain's whole pass: every default method's maps of both classes and every default
    score of every map, per error."""
    model, x, classes, layer, device = b.model, b.x, b.classes, b.layer, b.device
    ex = PassConfig(layer=layer, precision=precision)  # explain's defaults otherwise
    both = torch.stack([classes, (classes + 1) % 10])
    u8 = to_float((x * 255).round().to(torch.uint8))

    def run():
        p = map_pass(model, u8, both, ex)
        s = score_pass(model, u8, both, p, np.arange(len(x)), ex)
        sync(device)
        float(sum(v.nan_to_num().sum() for v in s.values()))
        return len(x)
    return _record(f"explain pass: every method and score, {precision}",
                   measure(run, device, 1, 1),
                   f"map_pass + score_pass of explain with its defaults ({len(ex.methods)} "
                   f"methods x 2 classes, {', '.join(ex.metrics)}); images/s counts "
                   "errors; one timed call", precision=precision,
                   methods=list(ex.methods), metrics=list(ex.metrics))


def run(device: torch.device, images: int, single: int, repeats: int,
        layer: str = "layer3") -> tuple[list[dict], str]:
    missing = package_missing()
    model = _model(device)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(images, 3, 32, 32, generator=g).to(device).contiguous(
        memory_format=torch.channels_last)
    classes = torch.randint(0, 10, (images,), generator=g).to(device)
    precision = auto_precision(device)
    b = Bench(model, x, classes, layer, device, repeats, missing)
    records = method_records(b, single)
    records += family_records(b, "fp32")
    if precision != "fp32":
        records += family_records(b, precision)
    # the package's ROAD takes ~0.3 s a map on any machine (scipy, image by image): 64 at most
    records += road_records(b, max(2, min(2 * single, 64)), precision)
    records.append(pass_record(b, precision))
    return records, markdown(records, missing)


def markdown(records: list[dict], missing: str | None) -> str:
    """The suite's tables: methods, the family, ROAD, the explain pass."""
    by = {r["name"]: r for r in records}
    rows = []
    for method in METHODS:
        ours, ref = by.get(f"{method}: ours batched"), by.get(f"{method}: grad-cam batched")
        rows.append([method, ours["images"], ours["images_per_second"],
                     ref["images_per_second"] if ref else "n/a",
                     f"{ours['images_per_second'] / ref['images_per_second']:.1f}x" if ref
                     else "n/a"])
    one = by["gradcam: ours one at a time"]
    rows.append(["gradcam, ours one at a time", one["images"], one["images_per_second"], "", ""])
    out = [table(["method", "images", "ours images/s", "grad-cam images/s", "x grad-cam"], rows)]
    fam = [r for r in records if r["name"].startswith("family:")]
    base = {r["precision"]: r["seconds"] for r in fam if r["methods"] == ["gradcam"]}
    out.append(table(["maps of both classes", "images", "seconds", "x Grad-CAM alone"],
                     [[r["name"].removeprefix("family: "), r["images"], r["seconds"],
                       f"{r['seconds'] / base[r['precision']]:.2f}x"] for r in fam]))
    road = [r for r in records if r["name"].startswith("ROAD")]
    rows = [[r["name"], r["images"], r["seconds"], r["images_per_second"]] for r in road]
    out.append(table(["ROAD", "maps or imputations", "seconds", "per second"], rows))
    notes = []
    if "ROAD combined: grad-cam" in by:
        ours = next(r for r in road if r["name"].startswith("ROAD combined: ours"))
        ref, imp = by["ROAD combined: grad-cam"], by["ROAD imputation alone: grad-cam"]
        notes.append(f"ROAD: ours {ref['seconds'] / ours['seconds']:.1f}x the package's speed "
                     f"in all; the imputation alone "
                     f"{by['ROAD imputation alone: ours']['images_per_second'] / imp['images_per_second']:.1f}x"
                     f"; our imputation differs from the package's exact solve by at most "
                     f"{imp['largest_difference']:.1e} (pixel values in [0, 1]).")
    e = next(r for r in records if r["name"].startswith("explain pass"))
    notes.append(f"Explain's whole pass ({len(e['methods'])} methods x 2 classes, "
                 f"{', '.join(e['metrics'])}): {e['seconds']:.2f} s for {e['images']} errors, "
                 f"{e['seconds'] / e['images'] * 1000:.0f} ms per error, {e['precision']}.")
    if missing:
        notes.append(f"Not run: {missing}.")
    return "\n\n".join(out + [" ".join(notes)])
