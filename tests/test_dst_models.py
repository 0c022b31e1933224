"""DST on the paper's architectures (built through the layer factory): exact ERK counts on
each, and one gradient-growth update through the hooks (depthwise convs, BatchNorm, heads) on
all but the two largest (ResNet-50, VGG-16: minutes of CPU for nothing the others miss)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainables.config import DATASETS, ExperimentConfig
from trainables.methods.base import Position, StepContext
from trainables.methods.dst import DST
from trainables.models import build_model
from trainables.optim import build_optimizer
from trainables.sparse.density import kept_count
from trainables.sparse.masked import masked_modules

PAPER_MODELS = [("mlp_small", "higgs", True), ("mlp_large", "cifar10", True), ("cnn_small", "cifar10", True),
                ("lenet5_caffe", "fashionmnist", True), ("resnet56", "cifar10", True),
                ("efficientnet_b0", "cifar100", True), ("vgg16_bn", "cifar100", False),
                ("resnet50", "cifar10", False)]


@pytest.mark.parametrize(("model", "dataset", "update"), PAPER_MODELS)
def test_dst_initialises_and_updates_every_paper_model(model: str, dataset: str, update: bool) -> None:
    cfg = ExperimentConfig.from_flat({
        "method.name": "dst", "model.name": model, "data.dataset": dataset, "data.data_dir": "/unused",
        "method.density": 0.05, "method.update_period": 1, "method.growth": "gradient",
        "method.criterion": "snip", "method.distribution": "er" if model.startswith("mlp") else "erk"})
    torch.manual_seed(0)
    method = DST(cfg)
    net = build_model(cfg, method.layer_factory())
    method.init_model(net)
    layers = masked_modules(net)
    assert len(layers) == sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in net.modules())
    total = sum(m.mask.numel() for m in layers.values())
    counts = {n: int(m.mask.sum()) for n, m in layers.items()}
    assert sum(counts.values()) == kept_count(total, 0.95)
    if not update:
        return
    spec = DATASETS[dataset]
    x = torch.randn(2, spec.channels, spec.image_size, spec.image_size)
    y = torch.tensor([0, 1])
    opt = build_optimizer(cfg, method.trainable_parameters(net))
    method.on_train_start(net, Position(step=0, epoch=0, cycle=1, steps_per_epoch=100))
    net.train()
    ctx = StepContext(step=1, optimizer=opt, x=x, y=y)
    method.before_step(net, ctx)
    F.cross_entropy(net(x), y).backward()
    method.before_optimizer_step(net, ctx)
    assert method.updates == 1
    assert {n: int(m.mask.sum()) for n, m in layers.items()} == counts
