"""Supermask layers (edge-popup, Ramanujan et al. 2020; soft-iep.txt §2, eq. 1).

A layer holds frozen random weights θ0 and a learnable score per weight. Its forward uses
m ⊙ θ0, where m keeps exactly n - ⌊k·n⌋ weights with the largest |score| (ANCHORS item 2).
The mask is a step function of the scores, so the gradient reaches them through a
straight-through estimator: every score, selected or not, receives ∂L/∂(m⊙θ0)·θ0.

Selection costs a top-k over the layer, so the mask is computed once per score update and
cached (ANCHORS item 3), instead of a full sort in every forward as in hidden-networks.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from trainables.models.layers import LayerFactory
from trainables.sparse.density import kept_count

__all__ = [
    "SUPERMASK",
    "StraightThrough",
    "SupermaskConv2d",
    "SupermaskLinear",
    "SupermaskMixin",
    "supermask_modules",
    "topk_mask",
]


class StraightThrough(torch.autograd.Function):
    """Forward: the given 0/1 mask. Backward: the incoming gradient, unchanged, to `scores`.

    The mask is a step function of the scores (zero gradient almost everywhere); treating
    its derivative as the identity is what lets unselected edges "pop up" later.
    """

    @staticmethod
    def forward(ctx: Any, scores: Tensor, mask: Tensor) -> Tensor:
        # A view, so the cached mask tensor itself never gets a grad_fn attached.
        return mask.view_as(mask)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return grad_output, None


def topk_mask(scores: Tensor, keep: int) -> Tensor:
    """Bool mask of `scores`' shape selecting exactly `keep` entries of largest |score|.

    `torch.topk` over the smaller side (the `keep` largest or the n - keep smallest) returns
    an exact count even under ties — a `>= threshold` test would add every tied entry.
    No full sort, no host sync.
    """
    flat = scores.detach().abs().flatten()
    n = flat.numel()
    if not 0 <= keep <= n:
        raise ValueError(f"keep must lie in [0, {n}], got {keep}")
    if keep == n:
        return torch.ones_like(scores, dtype=torch.bool)
    if keep == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    # scatter_ of a scalar at unique indices: deterministic, and cheaper than `mask[idx] = v`
    # (index_put_, which deterministic mode reroutes through a sort on CUDA).
    if keep <= n - keep:
        idx = torch.topk(flat, keep, largest=True, sorted=False).indices
        mask = torch.zeros(n, dtype=torch.bool, device=flat.device).scatter_(0, idx, True)
    else:
        idx = torch.topk(flat, n - keep, largest=False, sorted=False).indices
        mask = torch.ones(n, dtype=torch.bool, device=flat.device).scatter_(0, idx, False)
    return mask.view(scores.shape)


# Fused optimizers (e.g. Adam(fused=True), SGD(fused=True)) update parameters without bumping
# their version counter, so the cache key also counts optimizer steps process-wide.
_step_count = 0
_hook_installed = False


def _on_optimizer_step(optimizer: Any, args: Any, kwargs: Any) -> None:
    global _step_count
    _step_count += 1


def _install_step_hook() -> None:
    global _hook_installed
    if not _hook_installed:
        register_optimizer_step_post_hook(_on_optimizer_step)
        _hook_installed = True


class SupermaskMixin:
    """Scores, prune rate and the cached mask shared by the conv and linear layers.

    The cache is keyed on (scores object, scores._version, data pointer, prune rate, number of
    optimizer steps taken in the process): an optimizer step, an in-place edit under
    `torch.no_grad()`, `load_state_dict`, a device/dtype move or a new prune rate all force
    a new selection. An in-place edit through `scores.data` bypasses the version counter:
    call `invalidate_mask()` after one.
    """

    weight: Tensor
    scores: nn.Parameter

    def _init_supermask(self, prune_rate: float) -> None:
        if getattr(self, "bias", None) is not None:
            raise ValueError("supermask layers carry no bias (the bias would be trained dense)")
        _install_step_hook()
        self.weight.requires_grad_(False)
        self.scores = nn.Parameter(torch.empty_like(self.weight))
        nn.init.kaiming_uniform_(self.scores, a=5**0.5)
        self.prune_rate = prune_rate
        self.invalidate_mask()

    @property
    def prune_rate(self) -> float:
        """k: fraction of this layer's weights pruned (density = 1 - k)."""
        return self._prune_rate

    @prune_rate.setter
    def prune_rate(self, value: float) -> None:
        value = float(value)
        if not 0 <= value < 1:
            raise ValueError(f"prune rate k must lie in [0, 1), got {value}")
        self._prune_rate = value

    def keep_count(self) -> int:
        """Number of weights the mask keeps: n - floor(k n)."""
        return kept_count(self.scores.numel(), self._prune_rate)

    def invalidate_mask(self) -> None:
        """Forget the cached mask (needed only after edits through `scores.data`)."""
        self._cache_ref: weakref.ref[Tensor] | None = None
        self._cache_key: tuple[Any, ...] | None = None
        self._cached_bool: Tensor | None = None
        self._cached_float: Tensor | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The cache (and its weakref) is derived state: never pickle or deep-copy it.
        state = self.__dict__.copy()
        state.update(_cache_ref=None, _cache_key=None, _cached_bool=None, _cached_float=None)
        return state

    def _refresh(self) -> None:
        s = self.scores
        key = (s._version, s.data_ptr(), s.dtype, s.device, self._prune_rate, _step_count)
        # The weakref identifies the tensor itself: a new scores Parameter allocated where
        # the old one lived cannot be mistaken for it.
        if self._cache_ref is not None and self._cache_ref() is s and self._cache_key == key:
            return
        # Plain (non-inference) tensors even when first called under inference_mode, so a
        # mask cached during eval can be reused by a training forward.
        with torch.inference_mode(False), torch.no_grad():
            mask = topk_mask(s, self.keep_count())
            self._cached_bool = mask
            self._cached_float = mask.to(s.dtype)
        self._cache_ref = weakref.ref(s)
        self._cache_key = key

    def current_mask(self) -> Tensor:
        """Bool mask of the current scores (cached; treat it as read-only)."""
        self._refresh()
        assert self._cached_bool is not None
        return self._cached_bool

    def masked_weight(self) -> Tensor:
        """θ0 ⊙ m with the straight-through path from m back to the scores.

        The estimator is applied to |s| (as hidden-networks does): selection ranks |s|, so
        ∂L/∂s = ∂L/∂(θ0⊙m) · θ0 · sign(s), which moves every score in the direction that
        changes its rank correctly, including negative ones.
        """
        self._refresh()
        assert self._cached_float is not None
        return self.weight * StraightThrough.apply(self.scores.abs(), self._cached_float)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, prune_rate={self._prune_rate}"  # type: ignore[misc]


class SupermaskConv2d(SupermaskMixin, nn.Conv2d):
    """nn.Conv2d whose frozen weight is masked by the top (1 - k) |scores|."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = False,
                 padding_mode: str = "zeros", *, prune_rate: float = 0.5,
                 device: Any = None, dtype: Any = None) -> None:
        if bias:
            raise ValueError("SupermaskConv2d carries no bias (bias=True was asked)")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=False,
                         padding_mode=padding_mode, device=device, dtype=dtype)
        self._init_supermask(prune_rate)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.masked_weight(), None)


class SupermaskLinear(SupermaskMixin, nn.Linear):
    """nn.Linear whose frozen weight is masked by the top (1 - k) |scores|."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *,
                 prune_rate: float = 0.5, device: Any = None, dtype: Any = None) -> None:
        if bias:
            raise ValueError("SupermaskLinear carries no bias (bias=True was asked)")
        super().__init__(in_features, out_features, bias=False, device=device, dtype=dtype)
        self._init_supermask(prune_rate)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.masked_weight())


def _supermask_conv(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                    padding: int = 0, bias: bool = False) -> nn.Module:
    del bias  # refused: supermask layers never carry a bias, as in hidden-networks
    return SupermaskConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)


def _supermask_linear(in_features: int, out_features: int, *, bias: bool = True) -> nn.Module:
    del bias  # refused, as above
    return SupermaskLinear(in_features, out_features)


def _non_affine_bn(num_features: int) -> nn.Module:
    return nn.BatchNorm2d(num_features, affine=False)


SUPERMASK = LayerFactory(conv=_supermask_conv, linear=_supermask_linear, norm=_non_affine_bn)


def supermask_modules(model: nn.Module) -> dict[str, SupermaskMixin]:
    """Supermask layers by mask name: the module's qualified name + ".weight"."""
    return {f"{name}.weight" if name else "weight": m
            for name, m in model.named_modules() if isinstance(m, SupermaskMixin)}
