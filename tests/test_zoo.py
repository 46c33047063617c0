"""The zoo: the papers' feature-map sizes and parameter counts, readable layer names, loading by name."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vizkit.errors import ModelError
from vizkit.load import Preprocessing, load_model
from vizkit.load.registry import ZooModel, get_zoo_model, list_zoo_models, register_model
from vizkit.load.zoo import LeNet5, MobileNetV1, ZFNet, mobilenet_v1


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _sizes(seq: nn.Sequential, x: torch.Tensor) -> dict[str, int]:
    out = {}
    for name, layer in seq.named_children():
        x = layer(x)
        out[name] = x.shape[-1]
    return out


def test_zfnet_sizes_match_the_paper():
    model = ZFNet().eval()
    with torch.no_grad():
        sizes = _sizes(model.features, torch.zeros(1, 3, 224, 224))
    # Zeiler & Fergus 2014, Fig. 3: 224 -> 110 -> 55 -> 26 -> 13 -> 13 -> 13 -> 6.
    got = [sizes[k] for k in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")]
    assert got == [110, 55, 26, 13, 13, 13, 13, 6]
    assert [model.features.conv1.out_channels, model.features.conv2.out_channels,
            model.features.conv3.out_channels, model.features.conv4.out_channels,
            model.features.conv5.out_channels] == [96, 256, 384, 384, 256]
    assert model.classifier.fc6.in_features == 9216
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
        assert model(torch.zeros(1, 3, 256, 256)).shape == (1, 1000)  # the adaptive pool takes other sizes


def test_zfnet_layer_names():
    names = [n for n, m in ZFNet().named_modules() if n and not isinstance(m, nn.Sequential)]
    assert names[:4] == ["features.conv1", "features.relu1", "features.pool1", "features.norm1"]
    assert names[-9:] == ["avgpool", "flatten", "classifier.drop6", "classifier.fc6", "classifier.relu6",
                          "classifier.drop7", "classifier.fc7", "classifier.relu7", "classifier.fc8"]


def test_lenet5_shapes_and_params():
    model = LeNet5().eval()
    with torch.no_grad():
        sizes = _sizes(model.features, torch.zeros(1, 1, 32, 32))
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 10)
    assert [sizes[k] for k in ("conv1", "pool1", "conv2", "pool2", "conv3")] == [28, 14, 10, 5, 1]
    # 156 + 2,416 + 48,120 (convs) + 10,164 + 850 (fully connected) = 61,706
    assert _n_params(model) == 61_706
    assert isinstance(model.features.pool1, nn.MaxPool2d)  # switches for the deconvnet
    assert [n for n, _ in model.classifier.named_children()] == ["fc4", "relu4", "fc5"]


def test_mobilenet_v1_params():
    # 4,231,976 = 3,185,088 conv weights + 21,888 BN gamma/beta + 1,025,000 for the 1024 -> 1000 FC with bias
    # (BN running statistics are buffers, not parameters). The paper's Table 8 rounds this to 4.2M.
    model = MobileNetV1()
    assert _n_params(model) == 4_231_976
    convs = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    bns = sum(m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert (convs, bns, _n_params(model.classifier)) == (3_185_088, 21_888, 1_025_000)
    # Table 6: alpha 0.75 -> 2.6M, 0.5 -> 1.3M, 0.25 -> 0.5M.
    assert [round(_n_params(mobilenet_v1(a)) / 1e6, 1) for a in (0.75, 0.5, 0.25)] == [2.6, 1.3, 0.5]


@pytest.mark.parametrize("name,width,last", [("mobilenet_v1", 1.0, 1024), ("mobilenet_v1_0.5", 0.5, 512)])
def test_mobilenet_v1_structure(name, width, last):
    entry = get_zoo_model(name)
    assert entry is not None
    model = entry.build().eval()
    assert model.width_mult == width
    blocks = [n for n, _ in model.features.named_children()]
    assert blocks == ["stem"] + [f"block{i}" for i in range(1, 14)]
    b = model.features.block1
    assert b.dw_conv.groups == b.dw_conv.in_channels and b.pw_conv.kernel_size == (1, 1)
    with torch.no_grad():
        feats = model.features(torch.zeros(1, 3, 224, 224))
        assert feats.shape == (1, last, 7, 7)
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_load_zoo_models_by_name(tmp_path):
    lenet = load_model("lenet5")
    assert lenet.preprocessing == Preprocessing(32, 32, (0.5,), (0.5,), channels=1)
    assert lenet.pretrained is False and lenet.weights == "none (random init)" and lenet.class_names is None
    assert not lenet.model.training
    zf = load_model("zfnet", weights="none")
    assert zf.preprocessing.resize == 256 and zf.preprocessing.crop == 224
    assert zf.class_names is not None and zf.class_names[652] == "military uniform"
    assert load_model("mobilenet_v1_0.25").model.width_mult == 0.25


def test_zoo_weights_file_and_no_published_weights(tmp_path):
    torch.manual_seed(0)
    trained = LeNet5()
    path = tmp_path / "lenet.pth"
    torch.save(trained.state_dict(), path)
    lm = load_model("lenet5", weights=str(path))
    assert lm.pretrained is None and lm.weights_sha256 is not None  # a file of one's own: unknown
    assert all(torch.equal(a, b)
               for a, b in zip(lm.model.state_dict().values(), trained.state_dict().values(), strict=True))
    with pytest.raises(ModelError, match="no published weights"):
        load_model("lenet5", weights="DEFAULT")


def test_registry_lists_every_provider_in_order_and_labnet_registers_itself():
    names = list_zoo_models()
    assert names == ["lenet5", "zfnet", "mobilenet_v1", "mobilenet_v1_0.75", "mobilenet_v1_0.5", "mobilenet_v1_0.25",
                     "labnet"]
    labnet = get_zoo_model("LabNet")
    assert isinstance(labnet, ZooModel) and labnet.provider == "vizkit.lab.labnet"
    assert labnet.preprocessing.crop == 64 and get_zoo_model("resnet50") is None
    shipped = labnet.resolve_weights(None)
    assert shipped.shipped and shipped.file is not None and shipped.file.endswith("labnet.pt")
    assert labnet.resolve_weights("none").file == "none" and not labnet.resolve_weights("none").shipped


def test_register_model_refuses_a_name_taken_by_another_module():
    def lenet5() -> nn.Module:  # same name, another module (this test file)
        return LeNet5()

    with pytest.raises(ValueError, match="registered twice"):
        register_model()(lenet5)
