"""ImageFolder datasets streamed from disk (Tiny-ImageNet, ImageNet) on tiny generated folders:
availability checks, the batch contract of the in-memory datasets, determinism across
loader workers and DDP ranks, pinned memory, and training through the engine (1 process and
2 gloo DDP processes)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from torch.utils.data import DistributedSampler

from trainables.config import ConfigError, ExperimentConfig
from trainables.data import FolderData, check_available, load_data, loader_workers, sample_batch
from trainables.loop import DistContext, run_experiment

CLASSES = ("n01443537", "n01629819", "n01641577")


def write_folder(root: Path, *, train: int, val: int, size: tuple[int, int], nested: bool) -> None:
    """ImageFolder trees of random JPEGs (Tiny-ImageNet keeps train images in <class>/images/)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c in CLASSES:
            d = root / split / c / ("images" if nested and split == "train" else "")
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{c}_{i}.JPEG", quality=90)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folders")
    write_folder(root / "tiny-imagenet-200", train=8, val=3, size=(64, 64), nested=True)
    write_folder(root / "imagenet", train=2, val=2, size=(80, 96), nested=False)
    return root


def flat(data_dir: Path, **extra: object) -> dict:
    return {"data.dataset": "tiny_imagenet", "data.data_dir": str(data_dir), "model.name": "conv2",
            "model.width": 0.25, "method.name": "dense", "data.batch_size": 4, "data.eval_batch_size": 5,
            "schedule.epochs": 2, "optim.lr": 0.01, **extra}


@pytest.fixture(autouse=True)
def one_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a Ray trial that reserved 1 CPU: no loader workers unless a test asks for them."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_missing_or_malformed_folders_are_one_line(tmp_path: Path, data_dir: Path) -> None:
    cfg = ExperimentConfig.from_flat(flat(tmp_path)).data
    with pytest.raises(ConfigError, match=r"dataset tiny_imagenet not found, missing .*tiny-imagenet-200/train/<class>/"):
        check_available(cfg)
    (tmp_path / "tiny-imagenet-200" / "train" / "n01").mkdir(parents=True)
    (tmp_path / "tiny-imagenet-200" / "val" / "n01").mkdir(parents=True)
    with pytest.raises(ConfigError, match="holds no images"):
        check_available(cfg)
    with pytest.raises(ConfigError, match="tiny_imagenet is never downloaded"):
        check_available(dataclasses.replace(cfg, download=True))
    check_available(ExperimentConfig.from_flat(flat(data_dir)).data)  # the real layout passes


def test_loaded_lazily_with_the_bundle_api(data_dir: Path) -> None:
    data = load_data(ExperimentConfig.from_flat(flat(data_dir)).data)
    assert isinstance(data, FolderData)
    assert (data.n_train, data.n_test, data.num_classes, data.image_size) == (24, 9, 200, 64)
    assert len(data.train.classes) == 3
    x, y = next(data.train_batches(batch_size=4, epoch=0, seed=0, augment=True))
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert sum(len(y) for _, y in data.eval_batches(batch_size=5)) == 9


def epoch(data: FolderData, **kw: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(data.train_batches(batch_size=6, epoch=1, seed=3, augment=True, **kw))


def test_same_batches_whatever_the_number_of_loader_workers(data_dir: Path) -> None:
    data = load_data(ExperimentConfig.from_flat(flat(data_dir)).data)
    alone = epoch(dataclasses.replace(data, workers=0))
    pooled = epoch(dataclasses.replace(data, workers=2))
    assert len(alone) == 24 // 6
    for (xa, ya), (xb, yb) in zip(alone, pooled, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = list(data.train_batches(batch_size=6, epoch=2, seed=3, augment=True))
    assert not torch.equal(alone[0][0], other[0][0])  # another epoch: another order and crops


def test_ddp_ranks_share_each_global_batch(data_dir: Path) -> None:
    data = dataclasses.replace(load_data(ExperimentConfig.from_flat(flat(data_dir)).data), workers=0)
    whole = epoch(data)
    ranks = [epoch(data, rank=r, world_size=2) for r in range(2)]
    loader = data.train_loader(batch_size=6, epoch=1, seed=3, rank=1, world_size=2, augment=True)
    indices = loader.sampler.indices
    assert isinstance(indices, DistributedSampler) and (indices.rank, indices.num_replicas) == (1, 2)
    for step, (x, _) in enumerate(whole):
        parts = torch.cat([ranks[0][step][0], ranks[1][step][0]])
        assert parts.shape == x.shape
        # The same examples with the same augmentation, in another order.
        key = lambda t: sorted(t.flatten(1).sum(1).tolist())  # noqa: E731
        assert key(parts) == pytest.approx(key(x))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_pinned_memory_on_gpu_only_and_workers_from_the_cpu_share(data_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_data(ExperimentConfig.from_flat(flat(data_dir)).data)
    kw = {"batch_size": 4, "epoch": 0, "seed": 0, "augment": True}
    assert data.to("cuda").train_loader(**kw).pin_memory is True  # built, not iterated: no GPU here
    assert data.to("cpu").train_loader(**kw).pin_memory is False
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # what Ray sets for a trial that reserved 4 CPUs
    assert loader_workers() == 3 and data.train_loader(**kw).num_workers == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert loader_workers() == 0


def test_imagenet_crops_and_update_batches(data_dir: Path) -> None:
    cfg = ExperimentConfig.from_flat(flat(data_dir, **{"data.dataset": "imagenet", "data.resize": 32,
                                                       "data.batch_size": 2}))
    data = load_data(cfg.data)
    x, _ = next(data.train_batches(batch_size=2, epoch=0, seed=0, augment=True))
    assert x.shape == (2, 3, 32, 32)  # RandomResizedCrop to data.resize
    assert next(data.eval_batches(batch_size=4))[0].shape == (4, 3, 32, 32)  # resize + center crop
    a = sample_batch(data, 3, key=7, seed=0, augment=True)
    b = sample_batch(data, 3, key=7, seed=0, augment=True)
    assert a[0].shape == (3, 3, 32, 32) and torch.equal(a[0], b[0])


def _reports(cfg: ExperimentConfig, ctx: DistContext, out: Path | None = None) -> list[dict]:
    reports: list[dict] = []

    def reporter(metrics: dict, ckpt: Path | None) -> None:
        reports.append({k: v for k, v in metrics.items() if k != "epoch_time_s"})
        if ckpt is not None and out is not None:
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(ckpt, out)

    run_experiment(cfg, reporter=reporter, ctx=ctx)
    return reports


def test_training_through_the_engine_is_repeatable(data_dir: Path) -> None:
    cfg = ExperimentConfig.from_flat(flat(data_dir))
    first, second = _reports(cfg, DistContext()), _reports(cfg, DistContext())
    assert first == second and len(first) == 2
    assert 0 <= first[-1]["test_acc"] <= 1


def _ddp_worker(rank: int, store: str, data_dir: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        reports = _reports(ExperimentConfig.from_flat(flat(Path(data_dir))), DistContext(rank=rank, world_size=2))
        if rank == 0:
            torch.save(reports, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(240)
def test_two_gloo_ranks_train_what_one_process_trains(data_dir: Path, tmp_path: Path) -> None:
    """Conv-2 has no BatchNorm: DDP's averaged half-batch gradients are the full-batch one."""
    single = _reports(ExperimentConfig.from_flat(flat(data_dir)), DistContext())
    mp.spawn(_ddp_worker, args=(str(tmp_path / "store"), str(data_dir), str(tmp_path / "r.pt")), nprocs=2)
    ddp = torch.load(tmp_path / "r.pt")
    for a, b in zip(single, ddp, strict=True):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
