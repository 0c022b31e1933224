"""GPU packing and cost estimates, offline: the share `--gpus-per-worker auto` picks per model,
the resources a packed trial asks Ray for, and the dry run's GPU-hours. No GPU, no Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from orchestrator.cluster.packing import (
    AUTO,
    describe_estimate,
    estimate,
    gpu_share,
    memory_gb,
    profile,
    train_steps,
    trials_per_gpu,
)
from orchestrator.cluster.resources import check_resources, parse_gpus, trial_resources
from orchestrator.settings import Settings
from orchestrator.sweep import main
from search_spaces import get_space, make_plan
from trainables.config import ConfigError, ExperimentConfig
from trainables.models import DENSE, build_model


def cfg(model: str, *, dataset: str = "cifar10", batch: int = 128, **extra: object) -> ExperimentConfig:
    return ExperimentConfig.from_flat({"model.name": model, "data.dataset": dataset, "data.data_dir": "/d",
                                       "data.batch_size": batch, **extra})


SMALL_32PX = ["mlp", "mlp_small", "lenet5_caffe", "cnn_small", "conv2", "conv4", "conv6", "conv8",
              "resnet20", "resnet32", "resnet44", "resnet56"]


# At batch 128 on 32x32 inputs, compute binds for all of them (memory would allow >= 5): the
# largest power of two <= 400 GFLOP / (the model's GFLOP per step), at most 8. E.g. conv4 takes
# 75.5 GFLOP a step: 5.3 -> 4; conv6 118 GFLOP: 3.4 -> 2 (not 3); resnet20 31.3 GFLOP: 12.8 -> 8.
SMALL_32PX_SHARE = {"mlp": 8, "mlp_small": 8, "lenet5_caffe": 8, "cnn_small": 8, "conv2": 8, "conv4": 4,
                    "conv6": 2, "conv8": 2, "resnet20": 8, "resnet32": 4, "resnet44": 4, "resnet56": 4}


@pytest.mark.parametrize("model", SMALL_32PX)
def test_small_models_share_a_gpu_2_to_8_ways(model: str) -> None:
    expected = SMALL_32PX_SHARE[model]
    assert trials_per_gpu(cfg(model)) == expected
    assert gpu_share(cfg(model)) == {8: 0.125, 4: 0.25, 2: 0.5}[expected]
    assert 400 / profile(cfg(model)).step_gflop(128) >= expected  # compute allows it ...
    assert 400 / profile(cfg(model)).step_gflop(128) < 2 * expected or expected == 8  # ... not twice


@pytest.mark.parametrize(("model", "extra"), [
    ("resnet18", {}), ("resnext29_32x4d", {}),
    ("resnet50", {"data.resize": 224}), ("wide_resnet50_2", {"data.resize": 224}),
    ("resnet101", {"data.dataset": "imagenet", "data.batch_size": 256}),
])
def test_large_models_get_whole_gpus(model: str, extra: dict) -> None:
    assert trials_per_gpu(cfg(model, **extra)) == 1
    assert gpu_share(cfg(model, **extra)) == 1.0


def test_the_table_follows_the_batch_and_the_shape() -> None:
    # Fewer FLOPs per step pack more: conv8 at batch 32 takes a quarter of batch 128's step.
    assert trials_per_gpu(cfg("conv8", batch=32)) > trials_per_gpu(cfg("conv8"))
    # A small model whose activations at a huge batch need more than a GPU's share: memory wins.
    big_batch = cfg("resnet56", batch=4096)
    assert memory_gb(big_batch) > 16 and trials_per_gpu(big_batch) == 1
    # The same architecture on 8x8 digits is cheaper than on 32x32 CIFAR.
    assert profile(cfg("conv2", dataset="digits", batch=64)).flops_per_sample < profile(cfg("conv2")).flops_per_sample


def test_ddp_workers_take_whole_gpus() -> None:
    assert gpu_share(cfg("mlp"), workers=2) == 1.0


@pytest.mark.parametrize("model", ["conv4", "resnet20", "lenet5_caffe"])
def test_profiles_describe_the_real_model(model: str) -> None:
    c = cfg(model)
    real = build_model(c, DENSE)
    assert profile(c).params == sum(p.numel() for p in real.parameters())
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counted:
        real(torch.zeros(1, 3, 32, 32))
    assert profile(c).flops_per_sample == counted.get_total_flops()


def test_auto_resources_are_per_trial() -> None:
    from ray.tune import PlacementGroupFactory

    plan = make_plan(get_space("ep_quick"), search="grid", sets={"data.dataset": "cifar10", "data.data_dir": "/d"},
                     grid_overrides={"model.name": ["conv4", "resnet18"]}, num_samples=1)
    request = trial_resources(Settings(gpus_per_worker=AUTO, cpus_per_worker=2), AUTO, plan)
    small, large = (request({**plan.base, "model.name": m, "method.prune_rate": 0.2}) for m in ("conv4", "resnet18"))
    assert isinstance(small, PlacementGroupFactory)
    assert small.bundles == [{"CPU": 2.0, "GPU": gpu_share(cfg("conv4", batch=64))}]
    assert large.bundles == [{"CPU": 2.0, "GPU": 1.0}]
    assert trial_resources(Settings(gpus_per_worker=0.5), 0.5) == {"cpu": 1.0, "gpu": 0.5}


def test_auto_on_clusters_with_and_without_gpus(capsys: pytest.CaptureFixture[str]) -> None:
    plan = make_plan(get_space("ep_quick"), search="grid", sets={}, grid_overrides={}, num_samples=1)
    settings = Settings(gpus_per_worker=AUTO)
    assert check_resources(settings, plan, {"CPU": 2, "GPU": 1}, remote=False) == AUTO
    assert check_resources(settings, plan, {"CPU": 2}, remote=True) == AUTO  # the autoscaler adds GPUs
    assert check_resources(settings, plan, {"CPU": 2}, remote=False) == 0.0
    assert "local Ray has no GPU" in capsys.readouterr().err


def test_parse_gpus() -> None:
    assert parse_gpus(None) is None and parse_gpus("auto") == AUTO and parse_gpus("0.25") == 0.25
    with pytest.raises(ConfigError, match=r"'half' is not a number in \[0, 64\]"):
        parse_gpus("half")
    with pytest.raises(ConfigError, match=r"'-1' is out of range; allowed: a number in \[0, 64\]"):
        parse_gpus("-1")
    with pytest.raises(ConfigError, match="1.5 is more than one GPU but not a whole number"):
        parse_gpus("1.5")
    assert parse_gpus("2") == 2.0


def test_estimate_counts_steps_and_packing() -> None:
    quick = cfg("conv4", dataset="digits", batch=64, **{"schedule.epochs": 15})
    assert train_steps(quick) == (1437 // 64) * 15
    capped = cfg("conv4", dataset="digits", batch=64, **{"run.max_steps_per_epoch": 3, "schedule.epochs": 2})
    assert train_steps(capped) == 6
    iterative = cfg("conv4", dataset="digits", batch=64, **{"method.name": "iep", "method.cycles": 3,
                                                            "schedule.epochs": 4})
    assert train_steps(iterative) == (1437 // 64) * 12
    small, large = estimate([cfg("conv4")]), estimate([cfg("resnet18")])
    assert small[0].gpu_hours * small[0].share < small[0].gpu_hours  # packed costs less
    assert large[0].share == 1.0
    text = describe_estimate([*small, *large])
    assert "GPU-hours unpacked" in text and "packed (--gpus-per-worker auto)" in text
    assert "conv4" in text and "resnet18" in text


def test_dry_run_prints_the_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--space", "ep_quick", "--dry-run", "--storage", str(tmp_path / "s"), "--gpus-per-worker", "auto"]) == 0
    out = capsys.readouterr().out
    assert "cost estimate (3 trials, training steps only):" in out
    assert "GPU-hours unpacked" in out and "hours of training at the CPU speed" in out
    assert not (tmp_path / "s").exists()
