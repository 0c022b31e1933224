"""Supermask layers (edge-popup, Ramanujan et al. 2020; soft-iep.txt §2, eq. 1).

A layer holds frozen random weights θ0 and a learnable score per weight. Its forward uses
m ⊙ θ0, where m keeps exactly n - ⌊k·n⌋ weights with the largest |score|; ties never add an
edge (a `>= threshold` test can).
The mask is a step function of the scores, so the gradient reaches them through a
straight-through estimator: every score, selected or not, receives ∂L/∂(m⊙θ0)·θ0.

Selection costs a top-k over the layer, so the mask is computed once per score update and
cached, instead of a full sort in every forward as in hidden-networks. On
CPU a one-coat layer first searches a band around its last threshold (`band_topk_mask`),
which returns exactly `topk_mask`'s mask or defers to it; a multicoat layer finds its N
thresholds with one bucket count of the keys (`fast_coat_mask`), exactly `coat_mask`'s
result or a deferral to it.
With the mask the cache keeps θ0 ⊙ m itself: every forward until the next score update
reuses it, and one fused autograd node (`MaskedWeight`) passes the straight-through
gradient back to the scores.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from trainables.models.layers import LayerFactory, non_affine_bn
from trainables.sparse.density import kept_count
from trainables.sparse.selection import (
    band_topk_mask,
    coat_mask,
    fast_coat_mask,
    selection_key,
    topk_mask,
)

__all__ = [
    "SUPERMASK",
    "StraightThrough",
    "SupermaskConv2d",
    "SupermaskLinear",
    "MaskedWeight",
    "SupermaskMixin",
    "coat_mask",
    "fast_coat_mask",
    "selection_key",
    "supermask_modules",
    "topk_mask",
]


class StraightThrough(torch.autograd.Function):
    """Forward: the given 0/1 mask. Backward: the incoming gradient, unchanged, to `scores`.

    The mask is a step function of the scores (zero gradient almost everywhere); treating
    its derivative as the identity is what lets unselected edges "pop up" later.

    A multicoated mask (a sum of N nested masks) passes `scale` = N times the gradient: each
    coat's own straight-through estimator passes it once, as in multicoated-supermasks.
    """

    @staticmethod
    def forward(ctx: Any, scores: Tensor, mask: Tensor, scale: float = 1.0) -> Tensor:
        ctx.scale = scale
        # A view, so the cached mask tensor itself never gets a grad_fn attached.
        return mask.view_as(mask)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None]:
        return (grad_output if ctx.scale == 1.0 else grad_output * ctx.scale), None, None


class MaskedWeight(torch.autograd.Function):
    """θ0 ⊙ m with the straight-through estimator on |s|, fused into one autograd node.

    Forward returns the cached θ0 ⊙ m (computed once per score update, and shared by every
    forward until the next one). Backward gives the scores exactly what the unfused chain
    `θ0 * StraightThrough(|s|, m)` gives, in the same order of roundings:
    ((∂L/∂W · θ0) · scale) · sign(s) — without the forward's |s|, the float mask's product
    and the autograd nodes of abs, the estimator and the product.
    """

    @staticmethod
    def forward(ctx: Any, scores: Tensor, weight: Tensor, masked: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(scores, weight)
        ctx.scale = scale
        return masked.view_as(masked)  # a view: the cached tensor never gets a grad_fn

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        scores, weight = ctx.saved_tensors
        grad = grad_output * weight
        if ctx.scale != 1.0:
            grad = grad * ctx.scale
        return grad.mul_(scores.sign()), None, None, None


#: Layers from this many weights up select their coats with `fast_coat_mask`.
FAST_COATS_MIN = 16384

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
    """Scores, prune rate(s), search space and the cached mask of the conv and linear layers.

    Coats (multicoated supermasks, soft-iep-appendix C.2.2 eq. 4): with prune rates
    k_1 < k_2 < ... < k_N the forward weight is θ0 ⊙ Σ_i m_{k_i}; one coat is plain
    edge-popup. `prune_rate` is k_1, so the boolean mask (the edges in use) is m_{k_1}.

    Search space (`allowed`, a bool buffer; None = every edge): hard iterative pruning
    freezes the previous cycle's mask here, and selection ranks only those edges.

    The cache is keyed on (scores object, scores._version, data pointer, dtype, device,
    prune rates, the search space's identity and version, number of optimizer steps taken
    in the process, the frozen weight's version, storage and dtype): an optimizer step, an in-place edit under `torch.no_grad()`,
    `load_state_dict`, a device/dtype move, new prune rates or a new search space all force
    a new selection. An in-place edit through `scores.data` bypasses the version counter:
    call `invalidate_mask()` after one.
    """

    weight: Tensor
    scores: nn.Parameter
    allowed: Tensor | None

    def _init_supermask(self, prune_rate: float) -> None:
        if getattr(self, "bias", None) is not None:
            raise ValueError("supermask layers carry no bias (the bias would be trained dense)")
        _install_step_hook()
        self.weight.requires_grad_(False)
        self.scores = nn.Parameter(torch.empty_like(self.weight))
        nn.init.kaiming_uniform_(self.scores, a=5**0.5)
        self.register_buffer("allowed", None)  # type: ignore[attr-defined]
        self.prune_rate = prune_rate
        self.invalidate_mask()

    @property
    def prune_rate(self) -> float:
        """k: fraction of this layer's weights pruned (density = 1 - k); k_1 with coats."""
        return self._coats[0]

    @prune_rate.setter
    def prune_rate(self, value: float) -> None:
        self.coat_rates = (value,)

    @property
    def coat_rates(self) -> tuple[float, ...]:
        """Prune rates of the coats, ascending (one entry: plain edge-popup)."""
        return self._coats

    @coat_rates.setter
    def coat_rates(self, rates: tuple[float, ...]) -> None:
        rates = tuple(float(k) for k in rates)
        if not rates or any(not 0 <= k < 1 for k in rates):
            raise ValueError(f"prune rates k must lie in [0, 1), got {list(rates)}")
        if any(a > b for a, b in zip(rates, rates[1:], strict=False)):
            raise ValueError(f"coat prune rates must ascend (coat 1 least pruned), got {list(rates)}")
        self._coats = rates

    def keep_count(self) -> int:
        """Number of weights the mask keeps: n - floor(k n)."""
        return kept_count(self.scores.numel(), self._coats[0])

    def set_allowed(self, allowed: Tensor | None) -> None:
        """Freeze the search space to `allowed` (bool, the weight's shape), or free it (None)."""
        if allowed is None:
            self.allowed = None
            return
        if allowed.shape != self.weight.shape:
            raise ValueError(f"search space of shape {tuple(allowed.shape)} for a weight of "
                             f"shape {tuple(self.weight.shape)}")
        allowed = allowed.detach().to(device=self.weight.device, dtype=torch.bool)
        if self.allowed is not None:
            self.allowed.copy_(allowed)  # in place: a DDP wrapper keeps seeing this buffer
        else:
            self.allowed = allowed.clone()

    def invalidate_mask(self) -> None:
        """Forget the cached mask (needed only after edits through `scores.data`)."""
        self._cache_ref: weakref.ref[Tensor] | None = None
        self._cache_key: tuple[Any, ...] | None = None
        self._cached_bool: Tensor | None = None
        self._cached_float: Tensor | None = None
        self._cached_weight: Tensor | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The cache (and its weakref) is derived state: never pickle or deep-copy it.
        state = self.__dict__.copy()
        state.update(_cache_ref=None, _cache_key=None, _cached_bool=None, _cached_float=None,
                     _cached_weight=None)
        return state

    # The cache must live outside any compiled graph: under torch.compile its key (versions,
    # pointers, a step counter) would otherwise become guards that recompile every step.
    # `compile_ready()` marks it so; not done at import, since torch.compiler.disable imports
    # torch._dynamo (about 2 s in every trial process, for a compile the engine never does).
    def _refresh(self) -> None:
        s = self.scores
        allowed = self.allowed
        space = None if allowed is None else (id(allowed), allowed._version, allowed.device)
        w = self.weight
        key = (s._version, s.data_ptr(), s.dtype, s.device, self._coats, space, _step_count,
               w._version, w.data_ptr(), w.dtype)
        # The weakref identifies the tensor itself: a new scores Parameter allocated where
        # the old one lived cannot be mistaken for it.
        if self._cache_ref is not None and self._cache_ref() is s and self._cache_key == key:
            return
        # Plain (non-inference) tensors even when first called under inference_mode, so a
        # mask cached during eval can be reused by a training forward.
        with torch.inference_mode(False), torch.no_grad():
            n = s.numel()
            if len(self._coats) == 1:
                mask = self._select(s, allowed)
                self._cached_bool = mask
                self._cached_float = None  # one coat: made on demand (coat_depth), not kept
                # θ0 ⊙ m: every forward until the next update. (bool -> uint8 view -> float: the
                # same 0/1 values, ~3x faster on CPU than converting the bool tensor itself)
                self._cached_weight = w * mask.view(torch.uint8).to(s.dtype)
            else:
                keeps = tuple(kept_count(n, k) for k in self._coats)
                depth = self._select_coats(s, keeps, allowed)
                self._cached_bool = depth > 0
                self._cached_float = depth
                self._cached_weight = w * depth
        self._cache_ref = weakref.ref(s)
        self._cache_key = key

    def _select(self, s: Tensor, allowed: Tensor | None) -> Tensor:
        """`topk_mask(s, keep, allowed)`; on CPU through `band_topk_mask` near the last threshold."""
        keep = self.keep_count()
        if s.device.type != "cpu" or not 0 < keep < s.numel():
            return topk_mask(s, keep, allowed)
        hint, width = getattr(self, "_sel_hint", None), getattr(self, "_sel_width", 0.01)
        found = band_topk_mask(s, keep, hint, width, allowed) if hint is not None else None
        if found is not None:
            mask, self._sel_hint = found
            return mask
        mask = topk_mask(s, keep, allowed)
        if hint is not None:
            self._sel_width = min(4 * width, 0.5)  # the threshold moved further: a wider band
        self._sel_hint = float(selection_key(s, allowed).flatten()[mask.flatten()].min())
        return mask

    def _select_coats(self, s: Tensor, keeps: tuple[int, ...], allowed: Tensor | None) -> Tensor:
        """`coat_mask(s, keeps, allowed)`; through `fast_coat_mask` (no top-k) where it pays."""
        # Below ~16 k weights the bucket search's fixed cost (~0.2 ms) exceeds the top-k's.
        depth = fast_coat_mask(s, keeps, allowed) if s.numel() >= FAST_COATS_MIN else None
        return coat_mask(s, keeps, allowed) if depth is None else depth

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
        assert self._cached_weight is not None
        return MaskedWeight.apply(self.scores, self.weight, self._cached_weight, float(len(self._coats)))

    def coat_depth(self) -> Tensor:
        """Σ_i m_{k_i} as a float tensor (equals the bool mask with one coat; read-only)."""
        self._refresh()
        assert self._cached_bool is not None
        if self._cached_float is None:
            return self._cached_bool.to(self.scores.dtype)
        return self._cached_float

    def extra_repr(self) -> str:
        rates = self._coats[0] if len(self._coats) == 1 else list(self._coats)
        return f"{super().extra_repr()}, prune_rate={rates}"  # type: ignore[misc]


def compile_ready() -> None:
    """Call before torch.compile of a model with supermask layers: their mask cache runs eagerly."""
    if not getattr(SupermaskMixin._refresh, "_outside_compile", False):
        refresh = torch.compiler.disable(SupermaskMixin._refresh)
        refresh._outside_compile = True  # type: ignore[attr-defined]
        SupermaskMixin._refresh = refresh  # type: ignore[method-assign]


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
                    padding: int = 0, groups: int = 1, bias: bool = False) -> nn.Module:
    del bias  # refused: supermask layers never carry a bias, as in hidden-networks
    return SupermaskConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                           groups=groups)


def _supermask_linear(in_features: int, out_features: int, *, bias: bool = True) -> nn.Module:
    del bias  # refused, as above
    return SupermaskLinear(in_features, out_features)


SUPERMASK = LayerFactory(conv=_supermask_conv, linear=_supermask_linear, norm=non_affine_bn)


def supermask_modules(model: nn.Module) -> dict[str, SupermaskMixin]:
    """Supermask layers by mask name: the module's qualified name + ".weight"."""
    return {f"{name}.weight" if name else "weight": m
            for name, m in model.named_modules() if isinstance(m, SupermaskMixin)}
