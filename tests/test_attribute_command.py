"""``vizkit attribute``: the job and the CLI write what the libraries compute (Captum called directly here), a bad
image is skipped with exit 2, ``--evaluate`` ranks the methods, targets may be functions, the model is left as it
was, refused methods fail with one line (or are skipped under ``all``), and ``report --method`` shows them.
Method-by-method equality with Captum, zennit and pytorch-grad-cam is in test_attribute*.py."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from test_custom_model import INPUT, MODEL_CODE
from torch import nn
from vizkit_cli.attribute import attribute as attribute_command

from vizkit.errors import ModelError, UserInputError
from vizkit.jobs.attribute import attribute_tensor
from vizkit.jobs.context import RunContext
from vizkit.load import LoadedModel, Preprocessing, load_model
from vizkit.project.attribute import attribute
from vizkit.project.attribute.methods import parse_methods
from vizkit.testing.model_state import flags, hook_count, state_fingerprint


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(attribute_command, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _pdf_pages(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


@pytest.fixture
def lenet_weights(tmp_path: Path) -> tuple[Path, nn.Module]:
    torch.manual_seed(5)
    model = load_model("lenet5", "none").model
    path = tmp_path / "lenet.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_cli_bad_image_skipped_exit_2_and_maps_equal_captum(tmp_path: Path, sample_paths: list[Path],
                                                            lenet_weights: tuple[Path, nn.Module]) -> None:
    from captum.attr import IntegratedGradients, Saliency

    weights, model = lenet_weights
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    out = tmp_path / "out"
    code, _, err = _run([str(sample_paths[1]), str(bad), str(sample_paths[2]), "--model", "lenet5",
                              "--weights", str(weights), "-M", "saliency", "-M", "integrated-gradients", "-M",
                              "gradcam", "-M", "lrp:epsilon-alpha2-beta1", "--samples", "8", "--batch-size", "1",
                              "--target", "3", "--out", str(out)])
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("vizkit: error:")]
    assert len(errors) == 1 and "broken.jpg" in errors[0] and "1 written, 1 failed" in err
    folder = out / "attribute"
    assert sorted(p.name for p in folder.iterdir()) == ["attribute.manifest.json", "attribute.npz", "attribute.pdf"]
    assert _pdf_pages(folder / "attribute.pdf") == 1 + 2  # page 1, one page per readable image
    arrays = np.load(folder / "attribute.npz")
    labels = ["saliency", "integrated-gradients", "gradcam", "lrp:epsilon-alpha2-beta1"]
    assert set(arrays.files) == {"input", "targets", "scores", *(f"{m}/attribution" for m in labels)}
    x = torch.from_numpy(arrays["input"])
    assert x.shape == (2, 1, 32, 32) and arrays["targets"].tolist() == [3, 3]
    for label in labels:
        a = arrays[f"{label}/attribution"]
        assert a.dtype == np.float32 and a.shape == ((2, 1, 32, 32))
    model.eval()
    ref = Saliency(model).attribute(x.clone().requires_grad_(True), target=3).detach().numpy()
    np.testing.assert_allclose(arrays["saliency/attribution"], ref, rtol=1e-5, atol=1e-8)
    ig = IntegratedGradients(model).attribute(x.clone().requires_grad_(True), torch.zeros_like(x), target=3,
                                              n_steps=8).detach().numpy()
    np.testing.assert_allclose(arrays["integrated-gradients/attribution"], ig, rtol=1e-5, atol=1e-7)
    probs = torch.softmax(model(x).detach().double(), dim=1)[:, 3].numpy()
    np.testing.assert_allclose(arrays["scores"], probs, rtol=1e-5)
    manifest = json.loads((folder / "attribute.manifest.json").read_text())
    assert manifest["settings"]["methods"] == labels and manifest["settings"]["images"] == 2
    assert set(manifest["seconds_per_method"]) == set(labels) and "ranking" not in manifest


def test_evaluate_writes_curves_and_ranking(tmp_path: Path, sample_paths: list[Path]) -> None:
    code, _, err = _run([str(sample_paths[1]), "--model", "lenet5", "--weights", "none", "-M", "saliency", "-M",
                         "gradcam", "--evaluate", "--steps", "4", "--out", str(tmp_path)])
    assert code == 0, err
    folder = tmp_path / "attribute"
    arrays = np.load(folder / "attribute.npz")
    assert arrays["fractions"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    for label in ("saliency", "gradcam"):
        for curve in ("deletion-morf", "deletion-lerf", "insertion-morf", "insertion-lerf"):
            assert arrays[f"{label}/{curve}"].shape == (1, 5)
        assert arrays[f"{label}/road-morf"].shape == (1, len(arrays["road_percentages"]))
        assert arrays[f"{label}/randomisation"].shape == (1,)
        # deletion starts from the image's own score and insertion ends there
        score = float(arrays["scores"][0])
        assert arrays[f"{label}/deletion-morf"][0, 0] == pytest.approx(score, rel=1e-5)
        assert arrays[f"{label}/insertion-morf"][0, -1] == pytest.approx(score, rel=1e-5)
    order = arrays["ranking/order"].tolist()
    assert sorted(order) == ["gradcam", "saliency"]
    manifest = json.loads((folder / "attribute.manifest.json").read_text())
    assert manifest["ranking"]["order"] == order
    rank = manifest["ranking"]["mean_rank"]
    assert (rank[order[0]] <= rank[order[1]]) and sorted(rank.values()) != [None, None]
    assert _pdf_pages(folder / "attribute.pdf") == 1 + 1 + 1  # page 1, ranking, one image


def _ctx(model: nn.Module, size: int = 16, classes: int = 6) -> RunContext:
    prep = Preprocessing(size, size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    loaded = LoadedModel("tiny", model, prep, [f"c{i}" for i in range(classes)], "none (random init)", None, False)
    return RunContext.from_loaded(loaded)


def _tiny() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 6))


def test_callable_target_equals_captum_on_the_scored_forward() -> None:
    from captum.attr import InputXGradient

    model = _tiny().eval()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    fn = lambda z: z[:, 1] + 2 * z[:, 4]  # noqa: E731 - a multi-label score
    result = attribute_tensor(_ctx(model), x, ["gradient-x-input", "gradcam"], fn, layer="2")
    assert result.targets.tolist() == [-1, -1, -1] and result.target_names == ["target function"] * 3
    np.testing.assert_allclose(result.scores, fn(model(x)).detach().numpy(), rtol=1e-5)
    ref = InputXGradient(lambda inp: fn(model(inp))).attribute(x.clone().requires_grad_(True)).detach().numpy()
    np.testing.assert_allclose(result.attribution("gradient-x-input"), ref, rtol=1e-5, atol=1e-7)
    # a class index k is the function z[:, k]
    by_class = attribute_tensor(_ctx(model), x, ["gradcam"], 4, layer="2")
    by_fn = attribute_tensor(_ctx(model), x, ["gradcam"], lambda z: z[:, 4], layer="2")
    np.testing.assert_allclose(by_class.attribution("gradcam"), by_fn.attribution("gradcam"), rtol=1e-6)


def test_model_left_unchanged_by_every_step_of_evaluate() -> None:
    model = _tiny()
    model.train()
    model[0].bias.requires_grad_(False)
    fc = model[6]
    assert isinstance(fc, nn.Linear)
    fc.weight.grad = torch.ones_like(fc.weight)
    before_state, before_flags = state_fingerprint(model), flags(model)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    rng = torch.get_rng_state()
    result = attribute_tensor(_ctx(model), x, ["smoothgrad", "deeplift", "lrp", "score-cam"], evaluate=True,
                              steps=3, layer="2", samples=3)
    assert result.evaluation is not None and len(result.evaluation.ranking.order) == 4
    assert torch.equal(torch.get_rng_state(), rng), "the caller's random stream was consumed"
    assert hook_count(model) == 0
    after = state_fingerprint(model)
    assert all(torch.equal(after[k], before_state[k]) for k in before_state)
    training, requires_grad, grads = flags(model)
    assert (training, requires_grad) == before_flags[:2]
    assert all(a is b for a, b in zip(grads, before_flags[2], strict=True))


def test_refused_methods_fail_with_one_line_or_are_skipped_under_all() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))

    model = Functional().eval()
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ModelError, match=r"deeplift.*F\.relu"):
        attribute_tensor(_ctx(model), x, ["deeplift"])
    with pytest.raises(ModelError, match=r"deeplift.*F\.relu"):  # a noise tunnel over DeepLift has its traps
        attribute_tensor(_ctx(model), x, ["smoothgrad:deeplift"])
    with pytest.raises(ModelError, match=r"deeplift.*F\.relu"):
        attribute(model, x, "smoothgrad", base="deeplift")
    result = attribute_tensor(_ctx(model), x, ["all"], layer="conv")
    labels = [m.label for m in result.maps]
    assert "deeplift" not in labels and "integrated-gradients" in labels and "lrp" in labels
    assert any(note.startswith("skipped deeplift") for note in result.notes)


def test_method_specs() -> None:
    specs = parse_methods(["lrp:epsilon-alpha2-beta1", "smoothgrad:integrated-gradients", "lrp", "lrp"])
    assert [s.label for s in specs] == ["lrp:epsilon-alpha2-beta1", "smoothgrad:integrated-gradients", "lrp"]
    assert specs[0].options == {"composite": "epsilon-alpha2-beta1"} and specs[1].options == {
        "base": "integrated-gradients"} and specs[1].signed
    assert not parse_methods(["smoothgrad"])[0].signed
    for bad, needle in (("lrp:nope", "epsilon-plus-flat"), ("saliency:x", "only lrp"), ("salency", "saliency")):
        with pytest.raises(UserInputError, match=needle):
            parse_methods([bad])


def test_cli_usage_error_is_one_line_before_any_image(tmp_path: Path, sample_paths: list[Path]) -> None:
    code, _, err = _run([str(sample_paths[1]), "--model", "lenet5", "--weights", "none", "-M", "lrp:nope",
                         "--out", str(tmp_path)])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "epsilon-plus-flat" in lines[0]
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_report_method_adds_the_attribution_section(tmp_path: Path, sample_paths: list[Path]) -> None:
    from vizkit.jobs.report import ReportConfig, run_report

    config = ReportConfig(images=[sample_paths[1]], model="lenet5", weights="none", methods=["saliency", "lrp"],
                          out=tmp_path, command="test")
    report = run_report(config)
    assert report.exit_code == 0
    page = (tmp_path / "chelsea" / "html" / "index.html").read_text()
    assert "Attribution (saliency, lrp)" in page
    manifest = json.loads((tmp_path / "chelsea" / "report.manifest.json").read_text())
    assert manifest["settings"]["methods"] == ["saliency", "lrp"] and "attribution" in manifest["timings"]


@pytest.mark.slow
def test_torchvision_resnet18_cli(tmp_path: Path, sample_paths: list[Path]) -> None:
    code, _, err = _run([str(sample_paths[1]), "--model", "resnet18", "--weights", "none", "-M", "deeplift",
                         "--out", str(tmp_path)])
    assert code == 2 and "deeplift: module" in err and "times per forward" in err  # the reused ReLU: refused
    code, _, err = _run([str(sample_paths[1]), "--model", "resnet18", "--weights", "none", "-M", "lrp", "-M",
                         "gradcam++", "-M", "saliency", "--out", str(tmp_path)])
    assert code == 0, err
    arrays = np.load(tmp_path / "attribute" / "attribute.npz")
    assert arrays["lrp/attribution"].shape == (1, 3, 224, 224)
    assert arrays["gradcam++/attribution"].shape == (1, 1, 224, 224)
    model = load_model("resnet18", "none").model
    x = torch.from_numpy(arrays["input"])
    ref = attribute(model, x, "saliency", arrays["targets"].tolist())
    np.testing.assert_allclose(arrays["saliency/attribution"], ref.numpy(), rtol=1e-5, atol=1e-8)


#: every method but the two perturbation ones (one forward per channel or window: minutes on a 1280-channel layer)
GRADIENT_METHODS = ["saliency", "gradient-x-input", "integrated-gradients", "smoothgrad", "deeplift", "gradient-shap",
                    "lrp", "gradcam", "gradcam++", "eigen-cam", "guided-backprop", "deconvnet"]


@pytest.mark.parametrize("name", ["lenet5", "zfnet", "mobilenet_v1", "labnet", "efficientnet_lite0", "timm:resnet18",
                                  "own"])
def test_every_method_on_the_zoo_the_default_timm_and_your_own_model(tmp_path: Path, sample_paths: list[Path],
                                                                     name: str) -> None:
    small = name in ("lenet5", "labnet", "own")  # all of them, score-cam and occlusion included; none refused
    methods = ["all"] if small else GRADIENT_METHODS
    model = ["--model", name, "--weights", "none"]
    if name == "own":
        (tmp_path / "my_net.py").write_text(MODEL_CODE)
        model = ["--model", f"{tmp_path / 'my_net.py'}:TinyNet", *INPUT]
    code, _, err = _run([str(sample_paths[1]), *model, *[a for m in methods for a in ("-M", m)], "--samples", "2",
                         "--out", str(tmp_path)])
    assert code == 0, err
    arrays = np.load(tmp_path / "attribute" / "attribute.npz")
    done = {k.split("/")[0] for k in arrays.files if k.endswith("/attribution")}
    assert done == ({m.label for m in parse_methods(["all"])} if small else set(GRADIENT_METHODS))
    assert all(np.isfinite(arrays[f"{m}/attribution"]).all() for m in done)


def test_rule_methods_and_gradcam_equal_captum_where_captum_is_right() -> None:
    """Guided backprop, the deconvnet and Grad-CAM against Captum called directly, on a model whose ReLUs are all
    modules run once (where Captum's module hooks are right)."""
    from captum.attr import Deconvolution, GuidedBackprop, LayerAttribution, LayerGradCam

    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 6)).eval()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    target = [0, 3, 5]
    result = attribute_tensor(_ctx(model), x, ["guided-backprop", "deconvnet", "gradcam"], target, layer="3")
    for label, algorithm in (("guided-backprop", GuidedBackprop), ("deconvnet", Deconvolution)):
        ref = algorithm(model).attribute(x.clone().requires_grad_(True), target=target).detach().numpy()
        np.testing.assert_allclose(result.attribution(label), ref, rtol=1e-5, atol=1e-7)
    cam = LayerGradCam(model, model[3]).attribute(x, target=target, relu_attributions=True)
    ref = LayerAttribution.interpolate(cam, (16, 16), interpolate_mode="bilinear").detach().numpy()
    np.testing.assert_allclose(result.attribution("gradcam"), ref, rtol=1e-5, atol=1e-7)


def test_pages_name_every_method_and_centre_signed_maps_at_zero() -> None:
    from vizkit.render.attribute_pages import image_page, map_picture

    model = _tiny().eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    result = attribute_tensor(_ctx(model), x, ["saliency", "gradient-x-input", "gradcam"], layer="2")
    fig = image_page(result, 0)
    texts = " ".join(t.get_text() for t in fig.texts)
    assert all(m.label in texts for m in result.maps) and "signed" in texts and "magnitude" in texts
    assert f"class {int(result.targets[0])} c{int(result.targets[0])}" in texts
    signed = np.zeros((1, 3, 3))
    signed[0, 0, 0], signed[0, 2, 2] = 2.0, -2.0
    picture, peak = map_picture(signed, signed=True)
    assert peak > 0 and picture[0, 0, 0] > picture[0, 0, 2]  # positive: red
    assert picture[2, 2, 2] > picture[2, 2, 0]  # negative: blue
    assert np.allclose(picture[1, 1], picture[1, 1].mean(), atol=0.03) and picture[1, 1].mean() > 0.9  # 0: white
    magnitude, _ = map_picture(np.abs(signed), signed=False)
    assert magnitude[1, 1].max() < 0.05  # 0: the dark end of a sequential map
