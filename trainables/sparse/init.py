"""Weight and score initialisations for supermask (and dense) layers, by config name.

Names match `trainables.config.WEIGHT_INITS` / `SCORE_INITS`. Every function fills a tensor
in place from a CPU `torch.Generator` when one is given, so a seed gives the same values on
any device (see `trainables.methods.edge_popup`, which draws weights and scores from two
separate streams so that changing one init leaves the other unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from trainables.config import SCORE_INITS, WEIGHT_INITS
from trainables.sparse.density import density

__all__ = [
    "SCORE_INIT",
    "WEIGHT_INIT",
    "fan_in",
    "init_scores",
    "init_weight",
    "kaiming_normal",
    "kaiming_uniform",
    "scaled_signed_constant",
    "score_kaiming_normal",
    "score_kaiming_uniform",
    "signed_constant",
]

WeightInit = Callable[..., None]
ScoreInit = Callable[..., None]


def fan_in(weight: Tensor) -> int:
    """Inputs feeding one output unit: in_features, or in_channels/groups · kh · kw."""
    if weight.dim() < 2:
        raise ValueError(f"fan_in needs a weight with >= 2 dims, got shape {tuple(weight.shape)}")
    return weight.shape[1] * math.prod(weight.shape[2:])


def _relu_gain() -> float:
    return nn.init.calculate_gain("relu")


def _empty(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Scratch tensor on the generator's device (CPU draws are device-independent)."""
    device = generator.device if generator is not None else like.device
    return torch.empty(like.shape, dtype=like.dtype, device=device)


def _fill(tensor: Tensor, values: Tensor) -> None:
    with torch.no_grad():
        tensor.copy_(values)


def _signs(weight: Tensor, generator: torch.Generator | None) -> Tensor:
    """±1 with the signs of a Kaiming-normal draw (a zero counts as +, so every entry is ±1)."""
    draw = _empty(weight, generator)
    nn.init.kaiming_normal_(draw, mode="fan_in", nonlinearity="relu", generator=generator)
    return torch.where(draw >= 0, 1.0, -1.0)


def signed_constant(weight: Tensor, *, prune_rate: float = 0.0,
                    generator: torch.Generator | None = None) -> None:
    """θ = sign · gain/√fan_in: the Kaiming-normal std as one constant (Ramanujan et al.)."""
    del prune_rate
    _fill(weight, _signs(weight, generator) * (_relu_gain() / math.sqrt(fan_in(weight))))


def scaled_signed_constant(weight: Tensor, *, prune_rate: float = 0.0,
                           generator: torch.Generator | None = None) -> None:
    """θ = sign · gain/√(fan_in · density), density = 1 - k the KEPT fraction.

    The kept subnetwork has on average density · fan_in inputs per unit, so this keeps the
    variance of the masked layer's output at the Kaiming value.
    """
    scale = _relu_gain() / math.sqrt(fan_in(weight) * density(prune_rate))
    _fill(weight, _signs(weight, generator) * scale)


def kaiming_normal(weight: Tensor, *, prune_rate: float = 0.0,
                   generator: torch.Generator | None = None) -> None:
    """N(0, gain²/fan_in), gain = √2 (ReLU)."""
    del prune_rate
    _kaiming(weight, nn.init.kaiming_normal_, generator)


def kaiming_uniform(weight: Tensor, *, prune_rate: float = 0.0,
                    generator: torch.Generator | None = None) -> None:
    """U(±gain·√(3/fan_in)), gain = √2 (ReLU)."""
    del prune_rate
    _kaiming(weight, nn.init.kaiming_uniform_, generator)


def _kaiming(weight: Tensor, init: Any, generator: torch.Generator | None) -> None:
    """torch's Kaiming init (fan_in, ReLU) drawn from `generator` into `weight`."""
    draw = _empty(weight, generator)
    init(draw, mode="fan_in", nonlinearity="relu", generator=generator)
    _fill(weight, draw)


def score_kaiming_uniform(scores: Tensor, *, generator: torch.Generator | None = None) -> None:
    """U(±1/√fan_in): nn.init.kaiming_uniform_ with a = √5, as hidden-networks' scores."""
    draw = _empty(scores, generator)
    nn.init.kaiming_uniform_(draw, a=math.sqrt(5), generator=generator)
    _fill(scores, draw)


def score_kaiming_normal(scores: Tensor, *, generator: torch.Generator | None = None) -> None:
    """N(0, 2/fan_in): Kaiming normal (fan_in, ReLU), the paper's "k-normal" score init."""
    draw = _empty(scores, generator)
    nn.init.kaiming_normal_(draw, mode="fan_in", nonlinearity="relu", generator=generator)
    _fill(scores, draw)


WEIGHT_INIT: dict[str, WeightInit] = {
    "signed_constant": signed_constant,
    "scaled_signed_constant": scaled_signed_constant,
    "kaiming_normal": kaiming_normal,
    "kaiming_uniform": kaiming_uniform,
}

SCORE_INIT: dict[str, ScoreInit] = {
    "kaiming_uniform": score_kaiming_uniform,
    "kaiming_normal": score_kaiming_normal,
}

assert set(WEIGHT_INIT) == set(WEIGHT_INITS), "WEIGHT_INIT out of sync with config.WEIGHT_INITS"
assert set(SCORE_INIT) == set(SCORE_INITS), "SCORE_INIT out of sync with config.SCORE_INITS"


def init_weight(weight: Tensor, name: str, *, prune_rate: float = 0.0,
                generator: torch.Generator | None = None) -> None:
    """Fill `weight` in place by the init called `name` (prune_rate used by the scaled one)."""
    if name not in WEIGHT_INIT:
        raise ValueError(f"unknown weight init {name!r}; one of {', '.join(WEIGHT_INIT)}")
    WEIGHT_INIT[name](weight, prune_rate=prune_rate, generator=generator)


def init_scores(scores: Tensor, name: str, *, generator: torch.Generator | None = None) -> None:
    """Fill `scores` in place by the score init called `name`."""
    if name not in SCORE_INIT:
        raise ValueError(f"unknown score init {name!r}; one of {', '.join(SCORE_INIT)}")
    SCORE_INIT[name](scores, generator=generator)
