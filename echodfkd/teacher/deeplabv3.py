"""DeepLabV3 with a dilated ResNet-50 backbone, in plain torch.

Written from the architecture (He et al. 2016, ResNet v1.5 with the stride on the 3x3
convolution; Chen et al. 2017, DeepLabV3) so that the module tree, parameter and buffer names
and shapes are those of torchvision's ``deeplabv3_resnet50(weights=None, weights_backbone=None,
num_classes=1, aux_loss=False)``. An EchoNet-Dynamic checkpoint (docs/design.md §2) therefore loads
into :class:`DeepLabV3ResNet50` with ``strict=True`` once the ``module.`` prefix is removed.

Shape of the computation for an input (B, 3, H, W)::

    conv1 7x7/2, maxpool 3x3/2          -> (B,   64, H/4, W/4)
    layer1  3 Bottlenecks               -> (B,  256, H/4, W/4)
    layer2  4 Bottlenecks, stride 2     -> (B,  512, H/8, W/8)
    layer3  6 Bottlenecks, dilation 2   -> (B, 1024, H/8, W/8)   (no stride: output stride 8)
    layer4  3 Bottlenecks, dilation 4   -> (B, 2048, H/8, W/8)
    ASPP (1x1, 3x3 at rates 12/24/36, image pooling) -> 1x1 projection -> (B, 256, H/8, W/8)
    3x3 conv 256, BN, ReLU, 1x1 conv    -> (B, num_classes, H/8, W/8)
    bilinear upsampling (align_corners=False) to (H, W)

``forward`` returns ``OrderedDict(out=logits)`` with logits float (B, num_classes, H, W).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

EXPANSION = 4  # Bottleneck output channels = planes * EXPANSION


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride, dilation) -> 1x1 expand, plus identity or projection shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


def _make_layer(inplanes: int, planes: int, blocks: int, stride: int, dilate: bool,
                dilation: int) -> tuple[nn.Sequential, int, int]:
    """One ResNet stage; returns (stage, output channels, dilation after the stage).

    With ``dilate`` the stage keeps the resolution: its stride becomes extra dilation. As in
    the reference design, the first block of a dilated stage still uses the dilation of the
    previous stage; the following blocks use the new one.
    """
    previous = dilation
    if dilate:
        dilation *= stride
        stride = 1
    downsample = None
    if stride != 1 or inplanes != planes * EXPANSION:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * EXPANSION, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * EXPANSION),
        )
    layers = [Bottleneck(inplanes, planes, stride, previous, downsample)]
    inplanes = planes * EXPANSION
    layers += [Bottleneck(inplanes, planes, 1, dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers), inplanes, dilation


class ResNet50Backbone(nn.Module):
    """ResNet-50 trunk up to ``layer4`` (no avgpool, no fc); layers 3 and 4 dilated.

    ``forward`` returns ``OrderedDict(out=features)``, features (B, 2048, H/8, W/8), like
    torchvision's ``IntermediateLayerGetter(resnet, {"layer4": "out"})``.
    """

    def __init__(self, replace_stride_with_dilation: tuple[bool, bool, bool] = (False, True, True)
                 ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes, dilation = 64, 1
        self.layer1, inplanes, dilation = _make_layer(inplanes, 64, 3, 1, False, dilation)
        d2, d3, d4 = replace_stride_with_dilation
        self.layer2, inplanes, dilation = _make_layer(inplanes, 128, 4, 2, d2, dilation)
        self.layer3, inplanes, dilation = _make_layer(inplanes, 256, 6, 2, d3, dilation)
        self.layer4, inplanes, dilation = _make_layer(inplanes, 512, 3, 2, d4, dilation)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return OrderedDict(out=x)


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> list[nn.Module]:
    pad = dilation if kernel == 3 else 0
    return [nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU()]


class ASPPPooling(nn.Sequential):
    """Image-level branch: global average pool, 1x1 conv, BN, ReLU, broadcast back to (h, w)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 branch, one 3x3 branch per rate, pooling branch,
    concatenated and projected to ``cout`` channels (then dropout 0.5 in training)."""

    def __init__(self, cin: int, rates: tuple[int, ...] = (12, 24, 36), cout: int = 256) -> None:
        super().__init__()
        branches = [nn.Sequential(*_conv_bn_relu(cin, cout, 1))]
        branches += [nn.Sequential(*_conv_bn_relu(cin, cout, 3, r)) for r in rates]
        branches.append(ASPPPooling(cin, cout))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*_conv_bn_relu(len(branches) * cout, cout, 1),
                                     nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    """ASPP, 3x3 conv 256 + BN + ReLU, 1x1 conv to ``num_classes`` logits."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__(ASPP(cin, (12, 24, 36)), *_conv_bn_relu(256, 256, 3),
                         nn.Conv2d(256, num_classes, 1))


class DeepLabV3ResNet50(nn.Module):
    """DeepLabV3-ResNet50, output stride 8, no auxiliary head.

    Input float32 (B, 3, H, W) (normalised pixels); output ``OrderedDict(out=logits)``,
    logits float32 (B, num_classes, H, W). ``num_classes=1`` (the default) is the EchoNet-Dynamic
    LV segmentation teacher: ~39.6M weights.
    """

    def __init__(self, num_classes: int = 1) -> None:
        super().__init__()
        self.backbone = ResNet50Backbone((False, True, True))
        self.classifier = DeepLabHead(512 * EXPANSION, num_classes)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        size = x.shape[-2:]
        logits = self.classifier(self.backbone(x)["out"])
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return OrderedDict(out=logits)


def deeplabv3_resnet50(num_classes: int = 1) -> DeepLabV3ResNet50:
    """A randomly initialised :class:`DeepLabV3ResNet50` (no pretrained weights)."""
    return DeepLabV3ResNet50(num_classes=num_classes)
