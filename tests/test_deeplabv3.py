"""DeepLabV3-ResNet50: module tree, state-dict names and shapes as torchvision's
``deeplabv3_resnet50(num_classes=1, aux_loss=False)``, dilation, output size."""

from collections import OrderedDict

import pytest
import torch

from echodfkd.teacher.deeplabv3 import DeepLabV3ResNet50, deeplabv3_resnet50


def bn(prefix, c):
    return [(f"{prefix}.weight", (c,)), (f"{prefix}.bias", (c,)), (f"{prefix}.running_mean", (c,)),
            (f"{prefix}.running_var", (c,)), (f"{prefix}.num_batches_tracked", ())]


def conv(prefix, cout, cin, k):
    return [(f"{prefix}.weight", (cout, cin, k, k))]


# ResNet-50 stages: (name, blocks, input channels, bottleneck width); output = 4 * width.
STAGES = [("layer1", 3, 64, 64), ("layer2", 4, 256, 128), ("layer3", 6, 512, 256),
          ("layer4", 3, 1024, 512)]


def expected_entries(num_classes=1):
    e = conv("backbone.conv1", 64, 3, 7) + bn("backbone.bn1", 64)
    for name, blocks, cin, w in STAGES:
        for b in range(blocks):
            p = f"backbone.{name}.{b}"
            e += conv(f"{p}.conv1", w, cin if b == 0 else 4 * w, 1) + bn(f"{p}.bn1", w)
            e += conv(f"{p}.conv2", w, w, 3) + bn(f"{p}.bn2", w)
            e += conv(f"{p}.conv3", 4 * w, w, 1) + bn(f"{p}.bn3", 4 * w)
            if b == 0:
                e += conv(f"{p}.downsample.0", 4 * w, cin, 1) + bn(f"{p}.downsample.1", 4 * w)
    a = "classifier.0"
    e += conv(f"{a}.convs.0.0", 256, 2048, 1) + bn(f"{a}.convs.0.1", 256)
    for i in (1, 2, 3):
        e += conv(f"{a}.convs.{i}.0", 256, 2048, 3) + bn(f"{a}.convs.{i}.1", 256)
    e += conv(f"{a}.convs.4.1", 256, 2048, 1) + bn(f"{a}.convs.4.2", 256)
    e += conv(f"{a}.project.0", 256, 1280, 1) + bn(f"{a}.project.1", 256)
    e += conv("classifier.1", 256, 256, 3) + bn("classifier.2", 256)
    e += [("classifier.4.weight", (num_classes, 256, 1, 1)), ("classifier.4.bias", (num_classes,))]
    return e


# A few keys written out in full, as they appear in an EchoNet-Dynamic checkpoint.
LITERAL = {
    "backbone.conv1.weight": (64, 3, 7, 7),
    "backbone.layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "backbone.layer2.0.conv2.weight": (128, 128, 3, 3),
    "backbone.layer3.5.bn3.running_var": (1024,),
    "backbone.layer4.0.downsample.1.num_batches_tracked": (),
    "backbone.layer4.2.conv3.weight": (2048, 512, 1, 1),
    "classifier.0.convs.0.0.weight": (256, 2048, 1, 1),
    "classifier.0.convs.3.0.weight": (256, 2048, 3, 3),
    "classifier.0.convs.4.1.weight": (256, 2048, 1, 1),
    "classifier.0.convs.4.2.running_mean": (256,),
    "classifier.0.project.0.weight": (256, 1280, 1, 1),
    "classifier.1.weight": (256, 256, 3, 3),
    "classifier.2.bias": (256,),
    "classifier.4.weight": (1, 256, 1, 1),
    "classifier.4.bias": (1,),
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return deeplabv3_resnet50().eval()


def test_state_dict_names_and_shapes(model):
    sd = model.state_dict()
    got = [(k, tuple(v.shape)) for k, v in sd.items()]
    assert got == expected_entries(1)
    for k, shape in LITERAL.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.startswith(("backbone.fc", "backbone.avgpool", "aux_classifier"))
                   for k in sd)


def test_totals(model):
    sd = model.state_dict()
    assert len(sd) == 362
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 60
    # torchvision's 42,004,074 (21 classes, aux head) - 2,365,205 (aux) - 5,140 (21 -> 1 class)
    assert sum(p.numel() for p in model.parameters()) == 39_633_729
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 39_633_729


def test_module_tree(model):
    assert [n for n, _ in model.named_children()] == ["backbone", "classifier"]
    assert [n for n, _ in model.backbone.named_children()] == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    assert [n for n, _ in model.classifier.named_children()] == ["0", "1", "2", "3", "4"]
    assert isinstance(model.classifier[0].project[3], torch.nn.Dropout)


def test_dilation_and_strides(model):
    b = model.backbone
    c = lambda layer, i: getattr(b, layer)[i].conv2  # noqa: E731
    assert (c("layer2", 0).stride, c("layer2", 0).dilation) == ((2, 2), (1, 1))
    # layer3/4 trade their stride for dilation; the first block keeps the previous dilation.
    assert (c("layer3", 0).stride, c("layer3", 0).dilation) == ((1, 1), (1, 1))
    assert [c("layer3", i).dilation for i in range(1, 6)] == [(2, 2)] * 5
    assert c("layer4", 0).dilation == (2, 2) and c("layer4", 0).padding == (2, 2)
    assert [c("layer4", i).dilation for i in (1, 2)] == [(4, 4)] * 2
    assert b.layer3[0].downsample[0].stride == (1, 1)
    assert b.layer4[0].downsample[0].stride == (1, 1)
    rates = [model.classifier[0].convs[i][0].dilation for i in (1, 2, 3)]
    assert rates == [(12, 12), (24, 24), (36, 36)]


def test_forward_shapes(model):
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        feats = model.backbone(x)
        out = model(x)
    assert list(feats) == ["out"] and feats["out"].shape == (1, 2048, 8, 8)  # output stride 8
    assert isinstance(out, OrderedDict) and list(out) == ["out"]
    assert out["out"].shape == (1, 1, 64, 64) and out["out"].dtype == torch.float32
    assert torch.isfinite(out["out"]).all()


def test_num_classes():
    m = DeepLabV3ResNet50(num_classes=3)
    assert m.classifier[4].weight.shape == (3, 256, 1, 1)
