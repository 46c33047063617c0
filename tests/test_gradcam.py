"""Grad-CAM, guided backprop, guided Grad-CAM: hand-computed numbers, Captum equalities, GoogLeNet (where Captum's
module hooks see no ReLU), batching, targets, model state, and the `vizkit gradcam` command end to end."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from click.testing import CliRunner
from torch import nn
from vizkit_cli.gradcam import gradcam as gradcam_command

from vizkit.errors import ModelError, UserInputError
from vizkit.load import imagenet_categories
from vizkit.outputs.info import ReportInfo
from vizkit.project.gradcam import GradCamResult, default_gradcam_layer, gradcam, guided_backprop
from vizkit.project.targets import parse_targets, resolve_targets
from vizkit.render.gradcam import NPZ_KEYS, ZERO_CAM_NOTE, gradcam_pages
from vizkit.testing.model_state import hook_count, state_fingerprint

RTOL = 1e-5  # outputs are float32; references are float64


def rel_err(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(torch.as_tensor(b).detach().double().numpy())
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


class Tiny(nn.Module):
    """conv 3x3 (ch0: ones, ch1: -ones + 60) -> ReLU -> global average -> linear (no bias) to 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.conv.weight[0].fill_(1.0)
            self.conv.weight[1].fill_(-1.0)
            self.conv.bias.copy_(torch.tensor([0.0, 60.0]))
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 3.0], [0.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def tiny_input() -> torch.Tensor:
    return torch.arange(16, dtype=torch.float64).view(1, 1, 4, 4)


def test_hand_computed_tiny_net() -> None:
    # relu(conv): A0 = [[45, 54], [81, 90]], A1 = [[15, 6], [0, 0]]; logits = W @ mean(A) = (78, -51.75, 5.25).
    # The score's gradient w.r.t. A_k is W[c, k] / 4 everywhere, so cam = relu(W[c,0]/4 A0 + W[c,1]/4 A1).
    out = gradcam(Tiny().double(), tiny_input(), "relu", [[0, 1, 2]])
    np.testing.assert_allclose(out.cam_raw[0, 0], [[18.75, 16.5], [20.25, 22.5]], rtol=1e-7)
    np.testing.assert_array_equal(out.cam_raw[0, 1], np.zeros((2, 2)))  # -A0/4 + 3 A1/4 <= 0 everywhere
    np.testing.assert_allclose(out.cam_raw[0, 2], [[3.75, 1.5], [0, 0]], rtol=1e-7)
    assert out.zero_cam.tolist() == [[False, True, False]]
    # Bilinear 2 -> 4 (align_corners=False): rows/cols a, 3a/4 + b/4, a/4 + 3b/4, b; then divided by the max 22.5.
    a = np.array([[18.75, 16.5], [20.25, 22.5]])
    m = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    np.testing.assert_allclose(out.cam[0, 0], m @ a @ m.T / 22.5, rtol=1e-6)
    assert out.cam[0, 0, 0, 0] == pytest.approx(18.75 / 22.5) and out.cam[0, 0].max() == 1.0
    np.testing.assert_array_equal(out.cam[0, 1], np.zeros((4, 4)))  # all-zero CAM: no division by zero
    logits = np.array([78.0, -51.75, 5.25])
    np.testing.assert_allclose(out.scores[0], np.exp(logits) / np.exp(logits).sum(), rtol=1e-6, atol=1e-38)
    # Guided backprop: class 0 sends +1/4 into ch0 (all on) and +1/2 into ch1 (top row on); class 1 sends -1/4
    # into ch0 (guided: dropped) and +3/4 into ch1. The conv's transpose spreads them over the 3x3 windows.
    cover_all = np.array([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])
    cover_top = np.array([[1, 2, 2, 1], [1, 2, 2, 1], [1, 2, 2, 1], [0, 0, 0, 0]])
    np.testing.assert_allclose(out.guided_backprop[0, 0, 0], 0.25 * cover_all - 0.5 * cover_top, atol=1e-12)
    np.testing.assert_allclose(out.guided_backprop[0, 1, 0], -0.75 * cover_top, atol=1e-12)  # plain: adds -A/4
    np.testing.assert_allclose(out.guided_gradcam[0, :, 0], out.guided_backprop[0, :, 0] * out.cam[0], atol=1e-12)


def test_tiny_net_agrees_with_captum_layer_gradcam() -> None:
    from captum.attr import LayerGradCam

    model = Tiny().double()
    out = gradcam(model, tiny_input(), "relu", [[0, 2]])
    for t, target in enumerate((0, 2)):
        ref = LayerGradCam(model, model.relu).attribute(tiny_input(), target=target, relu_attributions=True)
        np.testing.assert_allclose(out.cam_raw[0, t], ref[0, 0].detach().numpy(), rtol=1e-7)


def small_vgg() -> nn.Module:
    """vgg11_bn with a narrow classifier: keeps its ReLU modules above the feature layers, 20x fewer weights."""
    model = torchvision.models.vgg11_bn(weights=None)
    model.classifier[0], model.classifier[3], model.classifier[6] = nn.Linear(25088, 64), nn.Linear(64, 64), \
        nn.Linear(64, 10)
    return model


def perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """Float64, eval, with nonzero biases and BN statistics so random nets have informative gradients."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    return model.double().eval()


MODELS = {
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
    "vgg11_bn": small_vgg,
    "googlenet": lambda: torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True),
}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: perturbed(make()) for name, make in MODELS.items()}


def images(n: int = 2, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(("name", "layer"), [("resnet18", "layer4"), ("resnet18", "layer3"),
                                             ("vgg11_bn", "features.27"), ("vgg11_bn", "features.28"),
                                             ("googlenet", "inception5b")])
def test_cam_raw_equals_captum_layer_gradcam(models: dict[str, nn.Module], name: str, layer: str) -> None:
    from captum.attr import LayerGradCam

    model, x = models[name], images()
    out = gradcam(model, x, layer, [[1, 7], [4, None]])
    cams_only = gradcam(model, x, layer, [[1, 7], [4, None]], guided=False)  # graph starts at the layer
    np.testing.assert_allclose(cams_only.cam_raw, out.cam_raw, rtol=1e-6, atol=1e-30)
    assert cams_only.guided_backprop.shape == (2, 2, 0, 64, 64)
    method = LayerGradCam(model, dict(model.named_modules())[layer])
    nonzero = 0
    for t in range(2):
        target = [int(v) for v in out.targets[:, t]]
        ref = method.attribute(x, target=target, relu_attributions=True)[:, 0]
        assert rel_err(out.cam_raw[:, t], ref) < RTOL
        up = F.interpolate(ref[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        peak = up.amax(dim=(1, 2), keepdim=True)
        assert rel_err(out.cam[:, t], torch.where(peak > 0, up / peak.clamp(min=1e-300), 0.0)) < RTOL
        nonzero += int((peak > 0).sum())
    assert nonzero >= 2


@pytest.mark.parametrize("name", ["resnet18", "vgg11_bn"])
def test_guided_backprop_equals_captum_where_relus_are_modules(models: dict[str, nn.Module], name: str) -> None:
    from captum.attr import GuidedBackprop

    model, x = models[name], images()
    targets = [[2, 5], [3, 0]]
    ours = guided_backprop(model, x, targets)
    assert ours.shape == (2, 2, 3, 64, 64) and ours.dtype == np.float32
    for t in range(2):
        ref = GuidedBackprop(model).attribute(x, target=[row[t] for row in targets])
        assert rel_err(ours[:, t], ref) < RTOL
    np.testing.assert_array_equal(gradcam(model, x, "features.28" if name == "vgg11_bn" else "layer4",
                                          targets).guided_backprop, ours)


def test_other_rectifiers_above_and_below_the_layer_mobilenet_v3() -> None:
    """Hardswish/ReLU/hardsigmoid gates, and a Hardswish in the classifier above the layer: the CAM must use the
    ordinary gradient there (Captum), guided backprop the guided rule everywhere (GuidedBackpropRules directly)."""
    from captum.attr import LayerGradCam

    from vizkit.project.rules import GuidedBackpropRules

    torch.manual_seed(0)
    model, x = perturbed(torchvision.models.mobilenet_v3_small(weights=None)), images(2)
    out = gradcam(model, x, "features.12", [[4], [8]])
    ref = LayerGradCam(model, model.features[12]).attribute(x, target=[4, 8], relu_attributions=True)[:, 0]
    assert rel_err(out.cam_raw[:, 0], ref) < RTOL
    xr = x.clone().requires_grad_(True)
    with GuidedBackpropRules() as rules:
        logits = model(xr)
    (gbp,) = torch.autograd.grad(logits[[0, 1], [4, 8]].sum(), xr)
    assert rel_err(out.guided_backprop[:, 0], gbp) < RTOL
    assert {a.op for a in out.audit} >= {"hardswish", "relu", "sigmoid gate"} and out.audit == rules.audit()


class _HandGuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype)


def test_googlenet_functional_relus_where_captum_returns_the_plain_gradient(models: dict[str, nn.Module],
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from captum.attr import GuidedBackprop, Saliency

    model, x = models["googlenet"], images(1)
    ours = guided_backprop(model, x, [[3]])[:, 0]
    plain = Saliency(model).attribute(x, target=3, abs=False)
    captum = GuidedBackprop(model).attribute(x, target=3)
    assert rel_err(captum, plain) < 1e-12  # Captum's module hooks find no ReLU module in GoogLeNet
    # Independent reference: every F.relu call replaced by a hand-written guided ReLU, plain autograd.
    reference = copy.deepcopy(model)
    monkeypatch.setattr(torch.nn.functional, "relu", lambda t, inplace=False: _HandGuidedReLU.apply(t))
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(reference(xr)[0, 3], xr)
    monkeypatch.undo()
    assert rel_err(ours, ref) < RTOL
    assert rel_err(ours, plain) > 0.1  # and it is not the plain gradient


@pytest.fixture(scope="module")
def resnet(models: dict[str, nn.Module]) -> nn.Module:
    return models["resnet18"]


def test_batch_equals_one_by_one_and_targets_equal_single_runs(resnet: nn.Module) -> None:
    x = images(3)
    targets = [[1, 2, None], [3, None, 9], [None, 5, 5]]
    batched = gradcam(resnet, x, "layer3", targets)
    assert batched.targets.shape == (3, 3)
    for n in range(3):
        alone = gradcam(resnet, x[n:n + 1], "layer3", [targets[n]])
        for key in ("targets", "scores", "cam_raw", "cam", "guided_backprop", "guided_gradcam"):
            np.testing.assert_allclose(getattr(batched, key)[n], getattr(alone, key)[0], rtol=1e-5, atol=1e-30)
        for t, target in enumerate(alone.targets[0]):
            single = gradcam(resnet, x[n:n + 1], "layer3", [[int(target)]])
            np.testing.assert_allclose(alone.cam_raw[0, t], single.cam_raw[0, 0], rtol=1e-6)
            np.testing.assert_allclose(alone.guided_backprop[0, t], single.guided_backprop[0, 0], rtol=1e-6,
                                       atol=1e-30)
    top1 = gradcam(resnet, x, "layer3")  # targets=None: top-1 of each image
    assert top1.targets[:, 0].tolist() == top1.logits.argmax(axis=1).tolist()
    assert [batched.targets[0, 2], batched.targets[1, 1], batched.targets[2, 0]] == top1.targets[:, 0].tolist()


def test_model_state_is_restored_also_when_the_forward_raises() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.train()
    model.layer2.eval()
    model.fc.weight.requires_grad_(False)
    model.conv1.weight.grad = torch.ones_like(model.conv1.weight)
    flags = {n: m.training for n, m in model.named_modules()}
    before = state_fingerprint(model)
    x = torch.randn(1, 3, 32, 32)
    x_before = x.clone()

    def check() -> None:
        assert {n: m.training for n, m in model.named_modules()} == flags
        assert [p.requires_grad for p in model.parameters()].count(False) == 1
        assert torch.equal(model.conv1.weight.grad, torch.ones_like(model.conv1.weight))
        assert all(p.grad is None for n, p in model.named_parameters() if n != "conv1.weight")
        assert hook_count(model) == 0 and torch._C._len_torch_function_stack() == 0
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert torch.equal(x, x_before) and not x.requires_grad

    gradcam(model, x, "layer4", [[1, 2]])
    check()
    gradcam(model, x, "layer4", [[1, 2]], guided=False)
    check()

    def boom(*args: object) -> None:
        raise RuntimeError("boom")

    handle = model.layer4.register_forward_hook(boom)
    for guided in (True, False):
        with pytest.raises(RuntimeError, match="boom"):
            gradcam(model, x, "layer3", [[1]], guided=guided)
    handle.remove()
    check()


def test_bad_layers_and_scripted_models_are_refused(resnet: nn.Module) -> None:
    x = images(1, 32)
    with pytest.raises(ModelError, match=r"not \(N, C, h, w\)"):
        gradcam(resnet, x, "fc")
    with pytest.raises(ModelError, match=r"unknown layer 'layer9'.*layer4"):
        gradcam(resnet, x, "layer9")
    with pytest.raises(ModelError, match="TorchScript"):
        gradcam(torch.jit.script(Tiny()), tiny_input().float(), "relu")
    with pytest.raises(UserInputError, match="3 classes"):
        gradcam(Tiny().double(), tiny_input(), "relu", [[3]])


def test_parse_targets() -> None:
    names = list(imagenet_categories())
    assert parse_targets([], names, 1000) == [None]
    assert parse_targets(["auto", "AUTO", " 285 ", "egyptian CAT", "Tiger cat"], names, 1000) == [None, None, 285,
                                                                                               285, 282]
    with pytest.raises(UserInputError, match=r"Did you mean: .*Egyptian cat"):
        parse_targets(["egyptain cat"], names, 1000)
    with pytest.raises(UserInputError, match="1000 classes"):
        parse_targets(["1000"], names, 1000)
    with pytest.raises(UserInputError, match="does not exist"):
        parse_targets(["-1"], names, 1000)
    assert parse_targets(["Cardigan", "cardigan"], names, 1000) == [264, 474]  # the corgi and the sweater
    with pytest.raises(UserInputError, match="264, 474"):
        parse_targets(["CARDIGAN"], names, 1000)
    with pytest.raises(UserInputError, match="no class names"):
        parse_targets(["cat"], None, 10)
    with pytest.raises(UserInputError, match="same, nonzero number"):
        resolve_targets([[1], [1, 2]], torch.zeros(2, 5))


def test_default_layers_per_family(default_model) -> None:
    tv = torchvision.models
    golden = {"resnet50": "layer4.2", "vgg16": "features.30", "densenet121": "features.norm5"}
    for name, layer in golden.items():
        assert default_gradcam_layer(tv.get_model(name, weights=None), (1, 3, 224, 224)) == layer
    assert default_gradcam_layer(default_model.model, (1, 3, 224, 224)) == "bn2"


def test_zero_cam_is_said_on_the_page() -> None:
    out = gradcam(Tiny().double(), tiny_input(), "relu", [[1]])
    result = GradCamResult(input=tiny_input().float().numpy(), image=np.zeros((4, 4, 3), np.uint8), layer="relu",
                           targets=out.targets[0], class_names=["one"], scores=out.scores[0],
                           cam_raw=out.cam_raw[0], cam=out.cam[0], guided_backprop=out.guided_backprop[0],
                           guided_gradcam=out.guided_gradcam[0], audit=out.audit)
    info = ReportInfo("tiny.png", "tiny", "random init", None, False, {}, {"layer": "relu"}, "test")
    texts = [t.get_text() for fig in gradcam_pages(result, info) for t in [*fig.texts, *(u for a in fig.axes
                                                                                  for u in a.texts)]]
    assert any(ZERO_CAM_NOTE in t for t in texts) and any("CAM all zero" in t for t in texts)


# ---- the command -------------------------------------------------------------------------------------------------

def _pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(gradcam_command, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def lenet_weights(tmp_path: Path) -> tuple[Path, nn.Module]:
    from vizkit.load import load_model

    torch.manual_seed(3)
    model = load_model("lenet5", "none").model
    path = tmp_path / "lenet.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_cli_writes_pdf_npz_manifest_matching_the_library(tmp_path: Path, sample_paths: list[Path],
                                                          lenet_weights: tuple[Path, nn.Module]) -> None:
    weights, model = lenet_weights
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    out_dir = tmp_path / "out"
    code, _, err = _run([str(sample_paths[2]), str(bad), str(sample_paths[1]), "--model", "lenet5", "--weights",
                           str(weights), "--target", "3", "--target", "auto", "--out", str(out_dir),
                           "--batch-size", "2"])
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("vizkit: error:")]
    assert len(errors) == 1 and "notes.jpg" in errors[0] and "2 written, 1 failed" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["chelsea", "coffee"]
    folder = out_dir / "coffee"
    assert sorted(p.name for p in folder.iterdir()) == ["gradcam.manifest.json", "gradcam.npz", "gradcam.pdf"]
    assert _pdf_pages(folder / "gradcam.pdf") == 1
    arrays = np.load(folder / "gradcam.npz")
    assert sorted(arrays.files) == sorted(NPZ_KEYS)
    x = torch.from_numpy(arrays["input"])
    assert x.shape == (1, 1, 32, 32) and arrays["targets"][0] == 3
    assert arrays["cam_raw"].shape == (2, 5, 5) and arrays["cam"].shape == (2, 32, 32)
    assert arrays["guided_backprop"].shape == arrays["guided_gradcam"].shape == (2, 1, 32, 32)
    assert arrays["cam"].min() >= 0.0 and arrays["cam"].max() <= 1.0
    ref = gradcam(model, x, "features.pool2", [[3, None]])
    assert arrays["targets"].tolist() == ref.targets[0].tolist()
    for key in ("scores", "cam_raw", "cam", "guided_backprop", "guided_gradcam"):
        np.testing.assert_allclose(arrays[key], getattr(ref, key)[0], rtol=1e-5, atol=1e-7)
    manifest = json.loads((folder / "gradcam.manifest.json").read_text())
    assert manifest["settings"]["layer"] == "features.pool2" and manifest["settings"]["targets"] == ["3", "auto"]
    assert {f["path"] for f in manifest["files"]} == {"gradcam.npz", "gradcam.pdf"}
    assert not list(out_dir.glob(".*"))


def test_cli_default_model_class_name_target(tmp_path: Path, sample_paths: list[Path]) -> None:
    code, _, err = _run([str(sample_paths[1]), "--target", "egyptian CAT", "--out", str(tmp_path)])
    assert code == 0, err
    arrays = np.load(tmp_path / "chelsea" / "gradcam.npz")
    assert arrays["targets"].tolist() == [285] and arrays["cam_raw"].shape == (1, 7, 7)
    assert arrays["scores"][0] > 0.3 and arrays["cam"].max() == 1.0


@pytest.mark.parametrize(("args", "needle"), [
    (["--target", "2000"], "1000 classes"),
    (["--target", "egyptain cat"], "Egyptian cat"),
    (["--layer", "bn9"], "bn2"),
])
def test_cli_usage_errors_are_one_line_exit_2(tmp_path: Path, sample_paths: list[Path], args: list[str],
                                              needle: str) -> None:
    code, _, err = _run([str(sample_paths[0]), *args, "--out", str(tmp_path)])
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vizkit: error:") and needle in lines[0]
    assert not list(tmp_path.iterdir())
