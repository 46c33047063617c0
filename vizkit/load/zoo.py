"""Classic architectures torchvision lacks, written as ``nn.Sequential`` with readable layer names.

Every zoo model is ``features`` (convolutional part) -> ``flatten`` -> ``classifier``, with named layers such as
``features.conv1`` and ``classifier.fc6``. The zoo ships no pretrained weights, except ``labnet``'s: ``load_model``
gives the others random initialisation (``--weights none``, the default; seeded) or loads a state-dict file you pass.

- ``lenet5``: LeCun et al. 1998, 1x32x32 grayscale input, 10 outputs, 61,706 parameters. ReLU and max-pooling
  replace the original tanh and trainable sub-sampling, so the deconvnet has max-pool switches to unpool with.
- ``zfnet``: Zeiler & Fergus 2014 (Fig. 3), 224x224 RGB: feature maps 110 -> 55 -> 26 -> 13 -> 13 -> 13 -> 6.
- ``mobilenet_v1`` (alpha 1.0) and ``mobilenet_v1_0.75`` / ``_0.5`` / ``_0.25``: Howard et al. 2017,
  depthwise-separable convolutions with a width multiplier; 4,231,976 parameters at alpha 1.0.
- ``labnet``: the shortcut lab's small max-pool CNN, the one zoo model with shipped trained weights (its default)
  and per-epoch checkpoints; ``vizkit.lab.labnet`` registers it (``vizkit.load.registry``).

Each builder registers itself with ``@register_model`` (``vizkit.load.registry``): name, builder, preprocessing
and weights in one entry.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

from torch import nn

from vizkit.load.preprocessing import Preprocessing
from vizkit.load.registry import register_model

__all__ = ["LeNet5", "MobileNetV1", "ZFNet", "lenet5", "mobilenet_v1", "zfnet"]


class LeNet5(nn.Sequential):
    """LeNet-5 with ReLU and max-pooling: 1x32x32 -> 6@28 -> 6@14 -> 16@10 -> 16@5 -> 120@1 -> 84 -> classes."""

    def __init__(self, num_classes: int = 10) -> None:
        features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(1, 6, kernel_size=5)),
            ("relu1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(2, 2)),
            ("conv2", nn.Conv2d(6, 16, kernel_size=5)),
            ("relu2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(2, 2)),
            ("conv3", nn.Conv2d(16, 120, kernel_size=5)),
            ("relu3", nn.ReLU()),
        ]))
        classifier = nn.Sequential(OrderedDict([
            ("fc4", nn.Linear(120, 84)),
            ("relu4", nn.ReLU()),
            ("fc5", nn.Linear(84, num_classes)),
        ]))
        super().__init__(OrderedDict([("features", features), ("flatten", nn.Flatten(1)), ("classifier", classifier)]))


class ZFNet(nn.Sequential):
    """Zeiler & Fergus 2014, Fig. 3. Sizes for a 224x224 input: 110 (conv1) -> 55 (pool1) -> 26 (conv2) -> 13
    (pool2) -> 13 (conv3, conv4, conv5) -> 6 (pool5). Contrast normalisation across feature maps is
    ``LocalResponseNorm(5)`` with AlexNet's constants (alpha 1e-4, beta 0.75, k 2). An adaptive 6x6 average pool
    before the classifier (identity at 224x224) lets other input sizes work.

    ``vizkit_default_layers`` are the paper's layers 1-5 (Fig. 3), each taken where the layer ends: after
    pooling and normalisation for layers 1 and 2, after the ReLU for 3 and 4, after pooling for 5."""

    vizkit_default_layers = ("features.norm1", "features.norm2", "features.relu3", "features.relu4",
                             "features.pool5")

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 96, kernel_size=7, stride=2, padding=1)),
            ("relu1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
            ("norm1", nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)),
            ("conv2", nn.Conv2d(96, 256, kernel_size=5, stride=2)),
            ("relu2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
            ("norm2", nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)),
            ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)),
            ("relu3", nn.ReLU()),
            ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1)),
            ("relu4", nn.ReLU()),
            ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1)),
            ("relu5", nn.ReLU()),
            ("pool5", nn.MaxPool2d(3, stride=2)),
        ]))
        classifier = nn.Sequential(OrderedDict([
            ("drop6", nn.Dropout(dropout)),
            ("fc6", nn.Linear(256 * 6 * 6, 4096)),
            ("relu6", nn.ReLU()),
            ("drop7", nn.Dropout(dropout)),
            ("fc7", nn.Linear(4096, 4096)),
            ("relu7", nn.ReLU()),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))
        super().__init__(OrderedDict([
            ("features", features),
            ("avgpool", nn.AdaptiveAvgPool2d((6, 6))),
            ("flatten", nn.Flatten(1)),
            ("classifier", classifier),
        ]))


# (output channels at alpha 1, stride) of the 13 depthwise-separable blocks, Table 1 of Howard et al. 2017.
_MOBILENET_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                        (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def _conv_bn_relu(cin: int, cout: int, stride: int, groups: int = 1, kernel: int = 3,
                  prefix: str = "") -> list[tuple[str, nn.Module]]:
    pad = kernel // 2
    return [
        (f"{prefix}conv", nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False)),
        (f"{prefix}bn", nn.BatchNorm2d(cout)),
        (f"{prefix}relu", nn.ReLU()),
    ]


class MobileNetV1(nn.Sequential):
    """MobileNet v1: ``features.stem`` (3x3 conv s2, BN, ReLU), ``features.block1`` .. ``block13`` (depthwise 3x3
    ``dw_conv/dw_bn/dw_relu`` then pointwise 1x1 ``pw_conv/pw_bn/pw_relu``), global average pool, ``classifier.fc``.

    Channels scale as ``max(int(c * width_mult), 8)``, the rule of the reference TF-slim implementation."""

    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000) -> None:
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")

        def ch(c: int) -> int:
            return max(int(c * width_mult), 8)

        cin = ch(32)
        layers: list[tuple[str, nn.Module]] = [("stem", nn.Sequential(OrderedDict(_conv_bn_relu(3, cin, 2))))]
        for i, (c, stride) in enumerate(_MOBILENET_V1_BLOCKS, start=1):
            cout = ch(c)
            block = _conv_bn_relu(cin, cin, stride, groups=cin, prefix="dw_")
            block += _conv_bn_relu(cin, cout, 1, kernel=1, prefix="pw_")
            layers.append((f"block{i}", nn.Sequential(OrderedDict(block))))
            cin = cout
        super().__init__(OrderedDict([
            ("features", nn.Sequential(OrderedDict(layers))),
            ("avgpool", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten(1)),
            ("classifier", nn.Sequential(OrderedDict([("fc", nn.Linear(cin, num_classes))]))),
        ]))
        self.width_mult = width_mult
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)


# The input each model expects: the paper's (LeNet-5: 32x32 grayscale), else ImageNet's.
_LENET_PREP = Preprocessing(32, 32, (0.5,), (0.5,), "bilinear", channels=1)


@register_model(preprocessing=_LENET_PREP)
def lenet5(num_classes: int = 10) -> LeNet5:
    return LeNet5(num_classes=num_classes)


@register_model()
def zfnet(num_classes: int = 1000) -> ZFNet:
    return ZFNet(num_classes=num_classes)


@register_model()
def mobilenet_v1(width_mult: float = 1.0, num_classes: int = 1000) -> MobileNetV1:
    return MobileNetV1(width_mult=width_mult, num_classes=num_classes)


for _alpha in ("0.75", "0.5", "0.25"):
    register_model(f"mobilenet_v1_{_alpha}")(partial(mobilenet_v1, float(_alpha)))
