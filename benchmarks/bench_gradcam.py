"""vizkit's Grad-CAM against pytorch-grad-cam's ``GradCAM``: same model, batch, layer and targets; speed and maps.

    pip install -r benchmarks/requirements.txt     # grad-cam (pytorch-grad-cam), benchmark only
    python benchmarks/bench_gradcam.py [--images 16] [--threads 2] [--repeat 3] [--size 224]

ResNet-50 (seeded random weights, eval) on 16 images of 224x224 (crops and flips of the three sample photos,
ImageNet mean/std), layer ``layer4``, target = each image's top-1 class. Timed, alternately, best of ``--repeat``:

- pytorch-grad-cam: ``GradCAM(model, [model.layer4])(x, targets=None)``: Grad-CAM only (one forward, one backward
  that also computes every weight gradient, per-image min-max scaling, cv2 resize);
- vizkit, like for like: ``gradcam(model, x, "layer4", guided=False)``: Grad-CAM only (one forward whose autograd
  graph starts at the layer, one backward from the scores to the layer);
- vizkit, for information: ``gradcam(model, x, "layer4")``: Grad-CAM *and* guided backprop *and* guided Grad-CAM
  (what ``vizkit gradcam`` runs: one forward, one backward to the layer with the ordinary gradient, one guided
  backward to the input; no weight gradients).

Maps compared (max |a - b| over all pixels; maps are in [0, 1] unless stated):

- ``cam_raw`` vs pytorch-grad-cam's raw map ``relu(sum_c mean(grad_c) * act_c)`` at 7x7, relative to its maximum;
- like with like: vizkit's ``cam_raw`` passed through pytorch-grad-cam's own scaling (min-max at 7x7, cv2 resize,
  min-max again) vs its output;
- as shipped, for information: vizkit's ``cam`` (upsampled first, then divided by the max, so 0 stays "no
  evidence") vs pytorch-grad-cam's min-max maps; these differ by design wherever a map's minimum is above 0;
- interpolation alone: torch bilinear (align_corners=False) vs cv2.resize INTER_LINEAR on the same 7x7 maps.

Exits 1 (FAIL) if vizkit's Grad-CAM is slower than pytorch-grad-cam's or the like-with-like maps differ by more
than 1e-4. The machine may be shared: compare only times from the same run.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from _machine import machine  # sibling module; benchmarks run as scripts

from vizkit.project.gradcam import gradcam

TOLERANCE = 1e-4




def batch(n: int, size: int) -> torch.Tensor:
    """n views (seeded random crops, some flipped) of the three sample photos, ImageNet-normalised."""
    from torchvision import transforms

    from vizkit.load import load_image, sample_images

    torch.manual_seed(0)
    photos = [load_image(p) for p in sample_images()]
    tf = transforms.Compose([transforms.RandomResizedCrop(size, scale=(0.4, 1.0)), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    return torch.stack([tf(photos[i % len(photos)].convert("RGB")) for i in range(n)])


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def pgc_scale(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """pytorch-grad-cam's own post-processing of (N, h, w) raw maps, as in BaseCAM.forward."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(scale_cam_image(np.maximum(cams, 0), size[::-1])[:, None, :].mean(axis=1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds; best time is reported")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import cv2
    from pytorch_grad_cam import GradCAM

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    x = batch(args.images, args.size)
    print(f"machine: {machine('grad-cam')}")
    print(f"ResNet-50 (random init, seed 0), {args.images} images {args.size}x{args.size}, layer4, top-1 targets")

    best = {"vizkit": float("inf"), "vizkit full": float("inf"), "pytorch-grad-cam": float("inf")}
    for _ in range(args.repeat):
        t, ours = timed(lambda: gradcam(model, x, "layer4", guided=False))
        best["vizkit"] = min(best["vizkit"], t)
        t, full = timed(lambda: gradcam(model, x, "layer4"))
        best["vizkit full"] = min(best["vizkit full"], t)
        cam = GradCAM(model=model, target_layers=[model.layer4])
        t, theirs = timed(lambda cam=cam: cam(input_tensor=x, targets=None))
        best["pytorch-grad-cam"] = min(best["pytorch-grad-cam"], t)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        their_targets = cam.outputs.argmax(dim=1).numpy()
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)  # pytorch-grad-cam leaves weight gradients behind
    for p in model.parameters():
        p.requires_grad_(True)

    raw_theirs = np.maximum((grads.mean(axis=(2, 3))[:, :, None, None] * acts).sum(axis=1), 0)
    raw_ours = ours.cam_raw[:, 0]
    size = (args.size, args.size)
    like = pgc_scale(raw_ours, size)
    interp_torch = F.interpolate(torch.from_numpy(raw_ours)[:, None], size=size, mode="bilinear",
                                 align_corners=False)[:, 0].numpy()
    interp_cv2 = np.stack([cv2.resize(m, size[::-1]) for m in raw_ours])
    zero = int(ours.zero_cam.sum())

    ratio = best["pytorch-grad-cam"] / best["vizkit"]
    ratio_full = best["pytorch-grad-cam"] / best["vizkit full"]
    same_full = bool(np.array_equal(full.cam_raw, ours.cam_raw))
    diff_raw = float(np.abs(raw_ours - raw_theirs).max() / raw_theirs.max())
    diff_like = float(np.abs(like - theirs).max())
    diff_shipped = float(np.abs(ours.cam[:, 0] - theirs).max())
    diff_interp = float(np.abs(interp_torch - interp_cv2).max() / interp_cv2.max())
    print(f"targets identical: {bool((ours.targets[:, 0] == their_targets).all())}; all-zero CAMs: {zero}")
    print(f"Grad-CAM, best of {args.repeat}: vizkit {best['vizkit']:.2f} s, pytorch-grad-cam "
          f"{best['pytorch-grad-cam']:.2f} s; pytorch-grad-cam / vizkit = {ratio:.2f}x")
    print(f"vizkit Grad-CAM + guided backprop + guided Grad-CAM: {best['vizkit full']:.2f} s; pytorch-grad-cam "
          f"(Grad-CAM only) / that = {ratio_full:.2f}x; its cam_raw identical to the CAM-only run: {same_full}")
    print(f"max |diff| cam_raw vs raw weighted sum (relative to max): {diff_raw:.2e}")
    print(f"max |diff| upsampled maps, both with pytorch-grad-cam's scaling (like with like): {diff_like:.2e}")
    print(f"max |diff| torch bilinear vs cv2.resize on the same maps (relative): {diff_interp:.2e}")
    print(f"max |diff| vizkit cam (upsample, / max) vs pytorch-grad-cam (min-max, resize, min-max), by design: "
          f"{diff_shipped:.3f}")
    ok = ratio >= 1.0 and diff_like <= TOLERANCE and diff_raw <= TOLERANCE and same_full
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
