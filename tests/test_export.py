"""Inference export at the end of a sparse trial: folded weights, a program that loads with torch
alone and reproduces the trial's test accuracy bit for bit; CSR layers to float tolerance; the
per-layer CSR-or-dense choice; the GPU 2:4 path's eligibility rules (CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from engine_tools import run_collecting
from safetensors.torch import load_file
from torch import nn

from trainables.config import ExperimentConfig
from trainables.data import eval_batches, load_data
from trainables.export import latency as lat_mod
from trainables.export.fold import fold_model, load_program
from trainables.export.latency import (
    CSR_ATOL,
    CSR_RTOL,
    CsrConv2d,
    CsrLinear,
    measure_latency,
    sparse_model,
)
from trainables.export.semi_structured import is_two_four, semi_structured_problem
from trainables.export.trial import INFER_KEYS
from trainables.loop import STATE_FILE, build_state

BASE = {"data.dataset": "digits", "model.name": "mlp", "model.mlp_hidden": "48,32", "data.batch_size": 64,
        "schedule.epochs": 2, "run.max_steps_per_epoch": 5, "optim.lr": 0.05, "run.infer_seconds": 1}

FAMILIES = {
    "ep_coats": {"method.name": "edge_popup", "method.prune_rate": 0.5, "method.coats": 2},
    "dst_2_4": {"method.name": "dst", "method.density": 0.5, "method.distribution": "uniform",
                "method.update_period": 3, "sparsity.pattern": "2:4"},
    "imp": {"method.name": "imp", "method.rounds": 2, "schedule.epochs": 1, "method.reinit_baseline": False},
    "ep_conv": {"method.name": "edge_popup", "model.name": "conv2", "method.prune_rate": 0.9},
}


def _accuracy(model: nn.Module, cfg: ExperimentConfig, data: object) -> tuple[float, torch.Tensor]:
    correct, n, logits = 0, 0, []
    with torch.no_grad():
        for x, y in eval_batches(data, batch_size=cfg.data.eval_batch_size):  # type: ignore[arg-type]
            out = model(x).float()
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
            logits.append(out)
    return correct / n, torch.cat(logits)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_reproduces_the_trials_test_accuracy(family: str, tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_flat({**BASE, **FAMILIES[family]})
    reports, ckpts = run_collecting(cfg, tmp_path / "run")
    last, export = reports[-1], ckpts[-1] / "artifacts" / "export"
    assert all(k in last for k in INFER_KEYS) and last["infer_speedup"] > 0
    program = load_program((export / "model.pt2").read_bytes())
    data = load_data(cfg.data)
    acc, logits = _accuracy(program, cfg, data)
    assert acc == last["test_acc"]  # bit for bit: the same weights through the same kernels
    # the weights file is the program's weights, masks folded in (zeros where pruned)
    weights = load_file(export / "model.safetensors")
    for name, value in program.state_dict().items():
        assert torch.equal(weights[name], value), name
    described = json.loads((export / "model.json").read_text())
    assert described["architecture"] == cfg.model.name and described["pattern"] == cfg.sparsity.pattern
    densities = [layer["density"] for layer in described["layers"].values()]
    assert min(densities) < 1.0
    choices = json.loads((export / "latency.json").read_text())["layers"]
    assert set(choices) == set(described["layers"])
    # every layer as CSR: the same accuracy, logits to float tolerance (CSR sums in another order)
    plain = fold_model(_trained(cfg, ckpts[-1]))
    plain_acc, plain_logits = _accuracy(plain, cfg, data)
    assert plain_acc == acc and torch.equal(plain_logits, logits)
    csr = sparse_model(plain, {n: "csr" for n in described["layers"]})
    csr_acc, csr_logits = _accuracy(csr, cfg, data)
    assert torch.allclose(csr_logits, logits, rtol=CSR_RTOL, atol=CSR_ATOL)
    assert csr_acc == acc


def _trained(cfg: ExperimentConfig, ckpt: Path) -> nn.Module:
    """The trial's model as its last checkpoint holds it (CPU)."""
    state = build_state(cfg, torch.device("cpu"), 1)
    state.model.load_state_dict(torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)["model"])
    return state.model.eval()


def test_the_export_loads_with_torch_alone(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_flat({**BASE, **FAMILIES["ep_coats"]})
    _, ckpts = run_collecting(cfg, tmp_path / "run")
    export = ckpts[-1] / "artifacts" / "export"
    script = ("import sys, torch\n"
              f"m = torch.export.load({str(export / 'model.pt2')!r}).module()\n"
              "out = m(torch.zeros(3, 1, 8, 8))\n"
              "assert out.shape == (3, 10), out.shape\n"
              "assert not any(k.split('.')[0] in ('trainables', 'orchestrator') for k in sys.modules)\n"
              "print('ok')\n")
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_switched_off_exports_and_measures_nothing(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_flat({**BASE, **FAMILIES["ep_coats"], "run.export": False, "run.infer_seconds": 0})
    reports, ckpts = run_collecting(cfg, tmp_path / "run")
    assert not any(k in reports[-1] for k in INFER_KEYS)
    assert not (ckpts[-1] / "artifacts" / "export").exists()


def test_an_untraceable_architecture_still_exports_its_weights(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from trainables.export import fold

    def untraceable(*_: object) -> bytes:
        raise RuntimeError("data-dependent control flow")

    monkeypatch.setattr(fold, "_program_bytes", untraceable)
    cfg = ExperimentConfig.from_flat({**BASE, **FAMILIES["ep_coats"], "run.infer_seconds": 0})
    _, ckpts = run_collecting(cfg, tmp_path / "run")
    export = ckpts[-1] / "artifacts" / "export"
    described = json.loads((export / "model.json").read_text())
    assert not (export / "model.pt2").exists() and (export / "model.safetensors").is_file()
    assert described["files"]["program"] is None
    assert described["program_error"] == "RuntimeError: data-dependent control flow"


def test_fold_gives_theta0_times_the_coat_depth() -> None:
    from trainables.sparse.supermask import SupermaskLinear

    layer = SupermaskLinear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, -4.0], [5.0, 6.0, -7.0, 8.0]]))
        layer.scores.copy_(torch.tensor([[0.1, 0.4, 0.3, 0.2], [0.8, 0.5, 0.6, 0.7]]))
    layer.coat_rates = (0.5, 0.75)  # coat 1 keeps 4 of 8, coat 2 keeps 2 of 8 (inside coat 1)
    plain = fold_model(nn.Sequential(layer))[0]
    assert type(plain) is nn.Linear
    # scores rank 0.8, 0.7, 0.6, 0.5 (coat 1) and 0.8, 0.7 (coat 2): depth 2, 2, 1, 1
    assert plain.weight.tolist() == [[0.0, 0.0, 0.0, 0.0], [10.0, 6.0, -7.0, 16.0]]


@pytest.mark.parametrize(("stride", "padding", "dilation"), [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_csr_layers_match_dense_to_float_tolerance(stride: int, padding: int, dilation: int) -> None:
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=padding, dilation=dilation, bias=True)
    lin = nn.Linear(12, 7)
    with torch.no_grad():
        for m in (conv, lin):
            m.weight.mul_(torch.rand(m.weight.shape, generator=g) < 0.3)
    x = torch.randn(2, 3, 9, 9, generator=g)
    assert torch.allclose(CsrConv2d(conv)(x), conv(x), rtol=CSR_RTOL, atol=CSR_ATOL)
    v = torch.randn(4, 12, generator=g)
    assert torch.allclose(CsrLinear(lin)(v), lin(v), rtol=CSR_RTOL, atol=CSR_ATOL)
    assert torch.allclose(CsrConv2d(conv)(x), F.conv2d(x, conv.weight, conv.bias, stride, padding, dilation),
                          rtol=CSR_RTOL, atol=CSR_ATOL)


def test_each_layer_takes_the_faster_kernel_and_the_model_never_loses(monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    x = torch.randn(2, 8)
    # layer 0: csr faster (1 < 2), layer 2: dense faster (3 < 5); then the whole model
    times = iter([(2.0, 1.0), (3.0, 5.0), (10.0, 7.0)])
    monkeypatch.setattr(lat_mod, "_paired_ms", lambda *a, **k: next(times))
    lat = measure_latency(model, x, seconds=5, threads=1)
    assert lat.choices == {"0": "csr", "2": "dense"}
    assert (lat.infer_ms, lat.infer_ms_dense, lat.speedup) == (7.0, 10.0, pytest.approx(10 / 7))
    # the layers' gains do not add up in the model: everything falls back to dense
    times = iter([(2.0, 1.0), (3.0, 5.0), (10.0, 12.0)])
    lat = measure_latency(model, x, seconds=5, threads=1)
    assert lat.choices == {"0": "dense", "2": "dense"} and lat.speedup == 1.0


def test_two_four_eligibility_rules() -> None:
    w = torch.zeros(64, 64)
    w[:, 0::4] = 1.0
    w[:, 1::4] = 2.0
    layer = nn.Linear(64, 64)
    with torch.no_grad():
        layer.weight.copy_(w)
    assert is_two_four(layer.weight)
    assert semi_structured_problem(layer, (8, 0), torch.float16) is None
    assert semi_structured_problem(layer, (7, 5), torch.float16) == "compute capability 7.5 < 8.0"
    assert semi_structured_problem(layer, None, torch.float16) == "no CUDA device"
    assert "dtype" in str(semi_structured_problem(layer, (9, 0), torch.float32))
    with torch.no_grad():
        layer.weight[0, 2] = 3.0  # 3 non-zeros in the first group
    assert not is_two_four(layer.weight) and semi_structured_problem(layer, (9, 0), torch.bfloat16) == \
        "weight is not 2:4"
    small = nn.Linear(32, 64)
    assert "multiple of 64" in str(semi_structured_problem(small, (9, 0), torch.float16))
