"""RunContext and the tensor-level job steps: built once per run, no second preprocessing or probe, models
without parameters, folders among the images, non-spatial layers refused, untrained weights flagged."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from vizkit_cli.main import main

from vizkit.errors import ModelError
from vizkit.jobs import RunContext, activations_image, deconv_image, model_device
from vizkit.jobs.context import TINY_ACTIVATION_NOTE
from vizkit.load import LoadedModel, Preprocessing


def loaded_from(model: nn.Module, channels: int = 3, **extra: object) -> LoadedModel:
    prep = Preprocessing(resize=32, crop=32, mean=(0.5,) * channels, std=(0.5,) * channels, channels=channels)
    loaded = LoadedModel(name="tiny", model=model.eval(), preprocessing=prep, class_names=None,
                         weights="none (random init)", weights_sha256=None, pretrained=False)
    for key, value in extra.items():
        object.__setattr__(loaded, key, value)  # fields the loader may add (seed, checksum_match)
    return loaded


def test_model_without_parameters_runs(sample_paths: list[Path]) -> None:
    model = nn.Sequential(nn.MaxPool2d(2), nn.ReLU(), nn.MaxPool2d(2))
    ctx = RunContext.from_loaded(loaded_from(model))
    assert model_device(model) == torch.device("cpu") and ctx.input_shape == (1, 3, 32, 32)
    result = deconv_image(ctx, sample_paths[0], ["2"], top_k=2)
    assert result.layers[0].units and result.input.shape == (1, 3, 32, 32)
    assert activations_image(ctx, sample_paths[0], ["0"], top=2).grids[0].maps.shape == (2, 16, 16)
    assert ctx.default_layers()[-1] == "2"  # the probe runs without a parameter to ask for the device


def test_info_is_built_by_keywords_with_the_loaders_provenance() -> None:
    ctx = RunContext.from_loaded(loaded_from(nn.Sequential(nn.Conv2d(3, 2, 3)), seed=5, checksum_match=None),
                                 command=["vizkit", "deconv"])
    info = ctx.info("a/cat.jpg", {"top_k": 3})
    assert (info.image_path, info.model, info.seed, info.checksum_match, info.pretrained) == (
        "a/cat.jpg", "tiny", 5, None, False)
    assert info.preprocessing["crop"] == 32 and info.command == ["vizkit", "deconv"]
    assert ctx.info(None, {}).image_path is None


def test_activations_too_small_for_trained_weights_are_flagged(sample_paths: list[Path]) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.ReLU())
    ctx = RunContext.from_loaded(loaded_from(model))
    assert TINY_ACTIVATION_NOTE not in deconv_image(ctx, sample_paths[0], ["4"], top_k=2).notes
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(1e-5)
                m.bias.zero_()
    assert TINY_ACTIVATION_NOTE in deconv_image(ctx, sample_paths[0], ["4"], top_k=2).notes
    assert TINY_ACTIVATION_NOTE in activations_image(ctx, sample_paths[0], ["4"], top=2).notes


def test_report_preprocesses_once_and_probes_once(sample_paths: list[Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import vizkit.capture.stages as stages
    import vizkit.jobs.context as context
    import vizkit.project.occlusion as occlusion
    from vizkit.jobs.report import ReportConfig, run_report

    calls = {"preprocess": 0, "probe": 0, "occlusion_deconv": 0}

    def counted(name: str, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(context, "preprocess", counted("preprocess", context.preprocess))
    monkeypatch.setattr(stages, "default_layers", counted("probe", stages.default_layers))
    monkeypatch.setattr(occlusion, "deconv", counted("occlusion_deconv", occlusion.deconv))
    report = run_report(ReportConfig(images=sample_paths[:2], model="lenet5", weights="none", top_k=2,
                                     out=tmp_path, command="test"))
    assert report.exit_code == 0 and len(report.written) == 2
    assert calls == {"preprocess": 2, "probe": 1, "occlusion_deconv": 0}


def test_folder_among_images_is_named_and_the_batch_goes_on(sample_paths: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["deconv", str(folder), str(sample_paths[1]), "--model", "lenet5",
                                       "--top-k", "2", "--out", str(out)])
    assert result.exit_code == 2
    assert "photos" in result.stderr and "folder" in result.stderr and "1 written, 1 failed" in result.stderr
    assert (out / "chelsea" / "deconv.pdf").exists()


@pytest.mark.parametrize("layer", ["classifier.fc4", "classifier"])
def test_deconv_refuses_a_non_spatial_layer_with_one_line(layer: str, sample_paths: list[Path],
                                                          tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["deconv", str(sample_paths[1]), "--model", "lenet5", "--layer", layer,
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2 and not (tmp_path / "chelsea").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"layer '{layer}'" in lines[0] and "spatial" in lines[0]


def test_global_pool_is_refused_but_a_one_by_one_conv_is_not() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 2, 1))
    ctx = RunContext.from_loaded(loaded_from(model))
    with pytest.raises(ModelError, match=r"layer '2'.*spatial"):
        ctx.spatial_layers(["2"])
    assert ctx.spatial_layers(["3", "1"]) == ["3", "1"]


def test_lazy_job_names_resolve_to_the_objects_even_after_every_submodule_loaded() -> None:
    import importlib
    import pkgutil

    import vizkit.jobs as jobs

    for info in pkgutil.iter_modules(jobs.__path__):
        importlib.import_module(f"vizkit.jobs.{info.name}")  # a submodule named like an export would shadow it
    for name in jobs.__all__:
        value = getattr(jobs, name)
        assert not isinstance(value, type(jobs)), name
        assert value is getattr(importlib.import_module(value.__module__), name), name
