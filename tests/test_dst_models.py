"""DST on the paper's architectures (built through the layer factory): exact ERK counts on
each, and one gradient-growth update through the hooks (depthwise convs, BatchNorm, heads) on
all but the two largest (ResNet-50, VGG-16: minutes of CPU for nothing the others miss)."""

from __future__ import annotations

import math

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
    before = {n: layers[n].mask.clone() for n in method.sparse}
    assert method.sparse and all(bool((layers[n].weight[before[n]] != 0).all()) for n in method.sparse)
    method.before_optimizer_step(net, ctx)
    assert method.updates == 1
    assert {n: int(m.mask.sum()) for n, m in layers.items()} == counts
    # step 1 of the cosine schedule: ρ_1 = ρ/2 (1 + cos(π/T)), just under ρ = 0.5. Each sparse layer
    # prunes floor(ρ_1 · active) and grows as many, at weight 0 (a pruned entry may grow back,
    # so the grown set is the new mask's zero weights, not the mask's difference).
    rho_1 = 0.5 * 0.5 * (1 + math.cos(math.pi / method.end_step))
    assert method.last_rho == pytest.approx(rho_1) and 0.49 < rho_1 < 0.5
    for n in method.sparse:
        new = layers[n].mask
        grown = new & (layers[n].weight == 0)
        assert int(grown.sum()) == math.floor(rho_1 * counts[n]) > 0, n
        assert int((before[n] & ~new).sum()) == int((new & ~before[n]).sum()) <= int(grown.sum()), n
