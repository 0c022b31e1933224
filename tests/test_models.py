"""Model zoo: shapes, layer widths, parameter counts, and that every layer is the factory's."""

from __future__ import annotations

import pytest
import torch
from engine_tools import RecordingFactory
from torch import nn

from trainables.config import MODELS, ExperimentConfig
from trainables.models import build_model
from trainables.models.layers import DENSE


def _cfg(model: str, dataset: str = "digits", **kw) -> ExperimentConfig:
    overrides = {"model.name": model, "data.dataset": dataset, **kw}
    if dataset != "digits":
        overrides["data.data_dir"] = "/unused"  # models never read data
    return ExperimentConfig().with_overrides(overrides)


def _layers(model: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize(("model", "dataset", "shape"), [
    *[(m, "digits", (1, 8)) for m in ("mlp", "conv2", "conv4", "resnet18")],
    *[(m, "cifar10", (3, 32)) for m in MODELS],
    ("conv4", "cifar100", (3, 32)),
    ("conv8", "digits", (1, 32)),  # via data.resize
])
def test_forward_shape_and_every_layer_from_factory(model: str, dataset: str, shape) -> None:
    channels, side = shape
    extra = {"data.resize": side} if side != (8 if dataset == "digits" else 32) else {}
    cfg = _cfg(model, dataset, **extra)
    counter = RecordingFactory()
    net = build_model(cfg, counter.factory)
    out = net(torch.randn(2, channels, side, side))
    classes = 100 if dataset == "cifar100" else 10
    assert out.shape == (2, classes)
    made = {id(m) for m in counter.made}
    built = _layers(net, nn.Conv2d) + _layers(net, nn.Linear) + _layers(net, nn.BatchNorm2d)
    assert built and {id(m) for m in built} == made


def test_resnet18_cifar10_parameter_count() -> None:
    net = build_model(_cfg("resnet18", "cifar10"), DENSE)
    # Counted by hand (conv weights k*k*in*out, no conv bias; BN = 2 per channel):
    #   stem   3*64*9 + 2*64                                        =     1,856
    #   stage1 2 blocks * (2*64*64*9 + 2*2*64)                      =   147,968
    #   stage2 (64*128*9 + 128*128*9 + 4*128 + 64*128 + 2*128)
    #          + (2*128*128*9 + 4*128)                              =   525,568
    #   stage3 (128*256*9 + 256*256*9 + 4*256 + 128*256 + 2*256)
    #          + (2*256*256*9 + 4*256)                              = 2,099,712
    #   stage4 (256*512*9 + 512*512*9 + 4*512 + 256*512 + 2*512)
    #          + (2*512*512*9 + 4*512)                              = 8,393,728
    #   fc     512*10 + 10                                          =     5,130
    #   total                                                       = 11,173,962
    assert sum(p.numel() for p in net.parameters()) == 11_173_962


def test_conv8_layer_widths() -> None:
    net = build_model(_cfg("conv8", "cifar10"), DENSE)
    convs, linears = _layers(net, nn.Conv2d), _layers(net, nn.Linear)
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.bias is None for c in convs)
    assert [(lin.in_features, lin.out_features) for lin in linears] == [
        (512 * 2 * 2, 256), (256, 256), (256, 10)]
    assert all(lin.bias is None for lin in linears)
    assert len(_layers(net, nn.MaxPool2d)) == 4 and not _layers(net, nn.BatchNorm2d)


@pytest.mark.parametrize("model", ["conv4", "resnet18", "mlp"])
def test_width_two_doubles_channels(model: str) -> None:
    def widths(width: float) -> list[int]:
        net = build_model(_cfg(model, "cifar10", **{"model.width": width}), DENSE)
        return [m.out_channels for m in _layers(net, nn.Conv2d)] + \
               [m.out_features for m in _layers(net, nn.Linear)][:-1]  # not the class count
    assert widths(2.0) == [2 * w for w in widths(1.0)]


def test_mlp_hidden_sizes() -> None:
    net = build_model(_cfg("mlp", **{"model.mlp_hidden": "64,32", "model.width": 0.5}), DENSE)
    assert [(m.in_features, m.out_features) for m in _layers(net, nn.Linear)] == [
        (64, 32), (32, 16), (16, 10)]
