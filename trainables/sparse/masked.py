"""Masked-weight layers: trained weights θ whose forward uses θ ⊙ m, m a bool buffer.

The sparse methods that TRAIN weights (magnitude pruning with LR rewinding, IMP, dynamic
sparse training) build their conv / linear layers from `MASKED`. A masked weight is kept at
exactly zero: the forward multiplies by the mask, so its gradient is zero, and
`apply_mask_` (called by the methods after every optimizer step) undoes what weight decay or
momentum carried over (sparse_learning lets inactive weights keep momentum, a bug source). Biases and BatchNorm stay dense and affine.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.models.layers import LayerFactory, non_affine_bn

__all__ = ["MASKED", "MASKED_NONAFFINE", "MaskedConv2d", "MaskedLinear", "MaskedMixin", "masked_modules"]


class MaskedMixin:
    """The mask buffer and the masked weight shared by the conv and linear layers."""

    weight: nn.Parameter
    mask: Tensor

    def _init_masked(self) -> None:
        self.register_buffer("mask", torch.ones_like(self.weight, dtype=torch.bool))  # type: ignore[attr-defined]
        self._retain_effective = False
        self._effective: Tensor | None = None
        self._float_key: tuple[Any, ...] | None = None
        self._float_mask: Tensor | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # the float copy is derived: never pickled or deep-copied
        state.update(_float_key=None, _float_mask=None)
        return state

    def float_mask(self) -> Tensor:
        """The mask in the weight's dtype, converted once per mask change (cached).

        A product with a bool mask converts it on every call: 6x the product's cost, three
        times a step (forward, backward, re-masking), measurable on IMP's and DST's steps.
        Keyed on the mask's version and storage, so every in-place edit, `load_state_dict`
        or move makes a new copy.
        """
        m, w = self.mask, self.weight
        key = (m._version, m.data_ptr(), m.device, w.dtype)
        if self._float_key != key or self._float_mask is None:
            self._float_mask = m.to(w.dtype)
            self._float_key = key
        return self._float_mask

    def effective_weight(self) -> Tensor:
        """θ ⊙ m (the gradient reaching θ is ∂L/∂(θ⊙m) ⊙ m: zero where masked)."""
        w = self.weight * self.float_mask()
        if self._retain_effective and w.requires_grad:
            w.retain_grad()
            self._effective = w
        return w

    def retain_effective_grad(self, on: bool) -> None:
        """Keep ∂L/∂(θ⊙m), dense, from the next backward (DST's gradient growth).

        Meant for update steps only: it holds one more weight-sized tensor per layer.
        Turning it off drops what was kept.
        """
        self._retain_effective = on
        if not on:
            self._effective = None

    def effective_grad(self) -> Tensor | None:
        """∂L/∂(θ⊙m) of the last backward while retaining (None if not retained)."""
        return None if self._effective is None else self._effective.grad

    @torch.no_grad()
    def set_mask(self, mask: Tensor) -> None:
        """Install a new mask and zero the weights it removes."""
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask of shape {tuple(mask.shape)} for a weight of shape "
                             f"{tuple(self.weight.shape)}")
        self.mask.copy_(mask.to(device=self.mask.device, dtype=torch.bool))
        self.weight.mul_(self.float_mask())

    @torch.no_grad()
    def apply_mask_(self) -> None:
        """θ ← θ ⊙ m, after an optimizer step."""
        self.weight.mul_(self.float_mask())


class MaskedConv2d(MaskedMixin, nn.Conv2d):
    """nn.Conv2d with a weight mask."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_masked()

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class MaskedLinear(MaskedMixin, nn.Linear):
    """nn.Linear with a weight mask."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_masked()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


def _masked_conv(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 padding: int = 0, groups: int = 1, bias: bool = False) -> nn.Module:
    return MaskedConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                        groups=groups, bias=bias)


def _masked_linear(in_features: int, out_features: int, *, bias: bool = True) -> nn.Module:
    return MaskedLinear(in_features, out_features, bias=bias)


MASKED = LayerFactory(conv=_masked_conv, linear=_masked_linear, norm=nn.BatchNorm2d)


# IMP's affine-BatchNorm knob (understanding-imp.txt appendix A.3 makes all normalisation affine).
MASKED_NONAFFINE = LayerFactory(conv=_masked_conv, linear=_masked_linear, norm=non_affine_bn)


def masked_modules(model: nn.Module) -> dict[str, MaskedMixin]:
    """Masked layers by mask name: the module's qualified name + ".weight"."""
    return {f"{name}.weight" if name else "weight": m
            for name, m in model.named_modules() if isinstance(m, MaskedMixin)}
