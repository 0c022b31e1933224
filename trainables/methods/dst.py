"""Dynamic sparse training (fantastic-weights-dst.txt §3): prune and regrow every Δt steps.

Init: Kaiming weights exactly as `Dense` draws them, then exact per-layer counts from
uniform / ER / ERK at global density D (`trainables.sparse.er`), drawn without replacement.
Every Δt optimizer steps until T, each sparse layer (local scope, the default) prunes
⌊ρ_t · active⌋ of its active weights by the criterion and grows as many among its inactive
ones (just-pruned weights may regrow); global scope ranks all sparse layers together
(appendix I). Layers at density 1 (capped by ER/ERK or kept dense) are never updated.

The update runs in `before_optimizer_step`, where θ and the step's ∇θL describe one state
(the criteria's scores and the Taylor view of SNIP need that pairing). Gradient growth needs
∂L/∂(m⊙θ) at inactive weights, which ∂L/∂θ does not have (the forward multiplies by m); the
masked layers keep that dense gradient on update steps only. Regrown weights start at zero,
and the optimizer state (momentum, Adam moments) of every pruned, regrown or inactive entry
is zeroed (momentum left on an inactive weight would move it); the step's gradient is masked to the surviving weights, so the
optimizer step that follows (unless `skip_step_on_update`, as RigL) cannot move them.

Recorded history: the OR of every mask (ITOP / dying ratio, the same mechanism as
edge-popup), the init mask (J_init), and at the first update and every K updates the sets
every criterion would prune from the same state (the criteria-Jaccard matrix, Fig. 6a).
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.config import ConfigError, DSTConfig, ExperimentConfig
from trainables.config.methods import CRITERION_NAMES
from trainables.methods.base import CycleEnd, Method, Position, StepContext
from trainables.methods.dense import decay_groups, init_dense_weights
from trainables.metrics.criteria_jaccard import (
    criteria_jaccard_rows,
    mean_layer_jaccard,
    random_reference,
)
from trainables.metrics.itop import itop_ratio, record_masks
from trainables.models.layers import LayerFactory
from trainables.rng import stable_generator
from trainables.sparse.bits import PackedBits
from trainables.sparse.density import pruned_count
from trainables.sparse.dst_criteria import (
    EXTRA_CRITERIA,
    EXTRA_GROWTH,
    grow_selection,
    growth_needs_gradient,
    prune_selection,
)
from trainables.sparse.er import layer_active_counts
from trainables.sparse.mask_io import masks_table
from trainables.sparse.masked import MASKED, MaskedMixin, masked_modules
from trainables.sparse.nm import group_counts, grow_in_groups, layer_patterns, nm_random_mask
from trainables.sparse.nm_pattern import NM

__all__ = ["DST", "prune_fraction_at"]

# Per-entry optimizer state that a regrown / pruned weight must not inherit (SGD and LARS:
# momentum_buffer; Adam: exp_avg, exp_avg_sq, max_exp_avg_sq). Anything else of the weight's
# shape is an optimizer we do not know: refuse rather than guess (as jaxpruner does).
RESETTABLE_STATE: frozenset[str] = frozenset({"momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"})


def prune_fraction_at(step: int, *, rho: float, schedule: str, end_step: int,
                      linear_factor: float = 0.99, linear_every: int = 600) -> float:
    """ρ_t: cosine ρ/2·(1 + cos(π t/T)) (§3.1), linear ρ·f^⌊t/N⌋ (appendix J), or constant ρ."""
    if schedule == "cosine":
        return 0.5 * rho * (1.0 + math.cos(math.pi * min(step, end_step) / max(1, end_step)))
    if schedule == "linear":
        return rho * linear_factor ** (step // linear_every)
    if schedule == "constant":
        return rho
    raise ValueError(f"prune schedule must be cosine, linear or constant, got {schedule!r}")


def _layers(model: nn.Module) -> dict[str, MaskedMixin]:
    layers = masked_modules(model)
    if not layers:
        raise ValueError("DST found no masked layer: build the model with method.layer_factory()")
    return layers


def _mean_across_ranks(tensors: list[Tensor]) -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for t in tensors:
            dist.all_reduce(t)
            t.div_(dist.get_world_size())


class DST(Method):
    """Hooks for DST (and static sparse training with update_period = 0)."""

    config_class = DSTConfig
    method_cfg: DSTConfig

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.ever: dict[str, PackedBits] = {}  # bit-packed, 1 bit per weight
        self.init_masks: dict[str, Tensor] = {}
        self.updates = 0
        self.update_seed = 0
        self.last_rho = 0.0
        self.jaccard_rows: list[dict[str, Any]] = []
        self.end_step = 0
        self.sparse: list[str] = []  # layers below density 1 at init: the only ones updated
        self.nm: dict[str, NM | None] = {}  # sparsity.pattern per layer (None: unstructured)

    # --- construction ---------------------------------------------------------------------
    def layer_factory(self) -> LayerFactory:
        return MASKED

    def init_model(self, model: nn.Module) -> None:
        """Dense's Kaiming weights, then masks with exact per-layer counts (one seeded stream)."""
        init_dense_weights(model, self.method_cfg.weight_init)
        mask_seed, self.update_seed = torch.randint(0, 2**62, (2,)).tolist()
        layers = _layers(model)
        names = list(layers)
        dense = {names[0]} if self.method_cfg.dense_first else set()
        dense |= {names[-1]} if self.method_cfg.dense_last else set()
        try:
            counts = layer_active_counts({n: tuple(layer.weight.shape) for n, layer in layers.items()},
                                         self.method_cfg.density, self.method_cfg.distribution, dense)
        except ValueError as e:
            raise ConfigError(f"method.density: {e}") from None
        generator = torch.Generator().manual_seed(mask_seed)
        shapes = {n: tuple(layer.weight.shape) for n, layer in layers.items()}
        self.nm = layer_patterns(shapes, self.cfg.sparsity.pattern, self.cfg.sparsity.misfit)
        for name, layer in layers.items():
            n = layer.weight.numel()
            nm = self.nm[name]
            if nm is not None:  # sparsity.pattern N:M: N random entries in every group of M
                mask = nm_random_mask(shapes[name], nm.n, nm.m, generator)
            else:
                idx = torch.randperm(n, generator=generator)[:counts[name]]
                mask = torch.zeros(n, dtype=torch.bool).scatter_(0, idx, True).view(layer.weight.shape)
            layer.set_mask(mask)
            self.init_masks[name] = mask.clone()

    def trainable_parameters(self, model: nn.Module) -> list[dict[str, Any]]:
        return decay_groups(model)

    # --- schedule ---------------------------------------------------------------------------
    def on_train_start(self, model: nn.Module, pos: Position) -> None:
        layers = _layers(model)
        self.end_step = self.method_cfg.update_end or self.cfg.total_epochs * pos.steps_per_epoch
        device = next(iter(layers.values())).mask.device
        self.init_masks = {n: t.to(device=device, dtype=torch.bool) for n, t in self.init_masks.items()}
        self.sparse = [n for n, t in self.init_masks.items() if not bool(t.all())]
        record_masks(self.ever, {n: layer.mask for n, layer in layers.items()})

    def is_update_step(self, step: int) -> bool:
        p = self.method_cfg.update_period
        return bool(p and self.sparse and step > 0 and step % p == 0 and step < self.end_step)

    def rho(self, step: int) -> float:
        return prune_fraction_at(step, rho=self.method_cfg.prune_fraction, schedule=self.method_cfg.prune_schedule,
                                 end_step=self.end_step, linear_factor=self.method_cfg.linear_factor,
                                 linear_every=self.method_cfg.linear_every)

    # --- training hooks -------------------------------------------------------------------
    def before_step(self, model: nn.Module, ctx: StepContext) -> None:
        if growth_needs_gradient(self.method_cfg.growth) and not self.method_cfg.update_batch_size and self.is_update_step(ctx.step):
            layers = _layers(model)
            for name in self.sparse:
                layers[name].retain_effective_grad(True)

    def before_optimizer_step(self, model: nn.Module, ctx: StepContext) -> bool:
        if not self.is_update_step(ctx.step):
            return False
        layers = _layers(model)
        grads, effective = self._update_gradients(model, layers, ctx)
        rho = self.rho(ctx.step)
        state = {n: (layers[n].weight, grads[n], layers[n].mask) for n in self.sparse}
        if self.updates == 0 or (self.method_cfg.jaccard_every and self.updates % self.method_cfg.jaccard_every == 0):
            self._record_jaccard(state, rho, ctx.step)
        pruned = self._prune_sets(self.method_cfg.criterion, state, rho, ctx.step)
        kept = {n: layers[n].mask & ~pruned[n] for n in self.sparse}
        grown = self._grow_sets(kept, pruned, effective, ctx.step)
        self._install(layers, kept, grown, ctx.optimizer)
        for name in self.sparse:
            layers[name].retain_effective_grad(False)
        self.updates += 1
        self.last_rho = rho
        record_masks(self.ever, {n: layers[n].mask for n in self.sparse})
        return self.method_cfg.skip_step_on_update

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        """θ ← θ ⊙ m: weight decay or momentum must not revive a masked weight."""
        for layer in _layers(model).values():
            layer.apply_mask_()

    # --- the update -------------------------------------------------------------------------
    def _update_gradients(self, model: nn.Module, layers: dict[str, MaskedMixin], ctx: StepContext
                          ) -> tuple[dict[str, Tensor], dict[str, Tensor | None]]:
        """∇θL and ∂L/∂(m⊙θ) per sparse layer: of the step's batch, or of a separate batch."""
        if not self.method_cfg.update_batch_size:
            grads = {n: self._grad_or_zeros(layers[n]) for n in self.sparse}
            effective = {n: layers[n].effective_grad() for n in self.sparse}
            _mean_across_ranks([g for g in effective.values() if g is not None])  # DDP averaged ∇θ only
            return grads, effective
        if ctx.sample_batch is None:
            raise RuntimeError("method.update_batch_size needs StepContext.sample_batch from the engine")
        x, y = ctx.sample_batch(self.method_cfg.update_batch_size)
        params = [p for p in model.parameters() if p.requires_grad]
        saved = [p.grad for p in params]
        buffers = {n: b.clone() for n, b in model.named_buffers() if b.dtype != torch.bool}
        for p in params:
            p.grad = None
        if growth_needs_gradient(self.method_cfg.growth):
            for name in self.sparse:
                layers[name].retain_effective_grad(True)
        with torch.enable_grad():
            F.cross_entropy(model(x).float(), y).backward()
        grads = {n: self._grad_or_zeros(layers[n]).clone() for n in self.sparse}
        effective = {n: layers[n].effective_grad() for n in self.sparse}
        for p, g in zip(params, saved, strict=True):
            p.grad = g
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in buffers:
                    b.copy_(buffers[n])  # the extra forward must not move BatchNorm statistics
        _mean_across_ranks([*grads.values(), *(g for g in effective.values() if g is not None)])
        return grads, effective

    @staticmethod
    def _grad_or_zeros(layer: MaskedMixin) -> Tensor:
        g = layer.weight.grad
        return torch.zeros_like(layer.weight) if g is None else g

    def _prune_sets(self, criterion: str, state: dict[str, tuple[Tensor, Tensor, Tensor]], rho: float,
                    step: int) -> dict[str, Tensor]:
        """What `criterion` prunes from `state` (name -> (θ, ∇θL, mask)), as bool masks."""
        generator = stable_generator("prune", self.update_seed, step)
        kw = {"mest_lambda": self.method_cfg.mest_lambda, "generator": generator,
              "params": self._rule_params(EXTRA_CRITERIA.get(criterion))}
        if self.method_cfg.scope == "local":
            out = {}
            for name, (w, g, m) in state.items():
                n = pruned_count(int(torch.count_nonzero(m)), rho)
                out[name] = prune_selection(criterion, w, g, m, n, **kw).view(m.shape)
            return out
        w, g, m = (torch.cat([t[i].detach().flatten() for t in state.values()]) for i in range(3))
        n = pruned_count(int(torch.count_nonzero(m)), rho)
        return self._split(prune_selection(criterion, w, g, m.bool(), n, **kw), state)

    def _grow_sets(self, kept: dict[str, Tensor], pruned: dict[str, Tensor],
                   effective: dict[str, Tensor | None], step: int) -> dict[str, Tensor]:
        """As many inactive entries as were pruned (per layer, or in total for global scope)."""
        generator = stable_generator("grow", self.update_seed, step)
        params = self._rule_params(EXTRA_GROWTH.get(self.method_cfg.growth))
        if growth_needs_gradient(self.method_cfg.growth) and any(effective[n] is None for n in self.sparse):
            raise RuntimeError("gradient growth found no ∂L/∂(m⊙θ): the layers did not retain it")
        if self.method_cfg.scope == "local":
            out = {}
            for name in self.sparse:
                nm = self.nm.get(name)
                if nm is not None:  # N:M: regrow in each group what was pruned from it
                    out[name] = self._grow_nm(nm, kept[name], pruned[name], effective[name], generator)
                    continue
                n = int(torch.count_nonzero(pruned[name]))
                out[name] = grow_selection(self.method_cfg.growth, ~kept[name].flatten(), n,
                                           effective_grad=_flat(effective[name]),
                                           generator=generator, params=params).view(kept[name].shape)
            return out
        inactive = torch.cat([~kept[n].flatten() for n in self.sparse])
        eff = None if not growth_needs_gradient(self.method_cfg.growth) else torch.cat([_flat(effective[n]) for n in self.sparse])
        n = sum(int(torch.count_nonzero(pruned[k])) for k in self.sparse)
        grown = grow_selection(self.method_cfg.growth, inactive, n, effective_grad=eff, generator=generator,
                               params=params)
        return self._split(grown, kept)

    def _grow_nm(self, nm: NM, kept: Tensor, pruned: Tensor, effective: Tensor | None,
                 generator: torch.Generator) -> Tensor:
        """The growth criterion's best inactive entries of each group, as many as it lost.

        The prune set is the criterion's worst active entries of the layer (so each group
        loses its own worst); regrowth stays in the group, restoring N per group of M.
        """
        if self.method_cfg.growth == "random":
            key = torch.rand(kept.shape, generator=generator).to(kept.device)
        else:
            key = effective.detach().abs().float()  # type: ignore[union-attr]
        return grow_in_groups(key, ~kept, group_counts(pruned, nm.m), nm.m)

    def _rule_params(self, rule: Any) -> dict[str, Any]:
        """A plugin rule's parameters, read from its config keys method.<rule>_<param>."""
        return {} if rule is None else {p: getattr(self.method_cfg, f"{rule.name}_{p}") for p in rule.params}

    def _split(self, flat: Tensor, like: dict[str, Any]) -> dict[str, Tensor]:
        out, offset = {}, 0
        for name, ref in like.items():
            shape = ref[2].shape if isinstance(ref, tuple) else ref.shape
            size = math.prod(shape)
            out[name] = flat[offset:offset + size].view(shape)
            offset += size
        return out

    @torch.no_grad()
    def _install(self, layers: dict[str, MaskedMixin], kept: dict[str, Tensor], grown: dict[str, Tensor],
                 optimizer: torch.optim.Optimizer | None) -> None:
        """New masks; regrown weights at zero; no state or gradient left outside the survivors."""
        before = {n: int(torch.count_nonzero(layers[n].mask)) for n in self.sparse}
        for name in self.sparse:
            layer = layers[name]
            new_mask = kept[name] | grown[name]
            survivors = kept[name] & ~grown[name]
            layer.mask.copy_(new_mask)
            layer.weight.mul_(survivors)
            if layer.weight.grad is not None:
                layer.weight.grad.mul_(survivors)
            if optimizer is not None:
                _reset_state(optimizer, layer.weight, survivors)
        after = {n: int(torch.count_nonzero(layers[n].mask)) for n in self.sparse}
        if self.method_cfg.scope == "local" and after != before:
            bad = {n: (before[n], after[n]) for n in self.sparse if before[n] != after[n]}
            raise RuntimeError(f"DST update changed per-layer active counts (before, after): {bad}")
        if sum(after.values()) != sum(before.values()):
            raise RuntimeError(f"DST update changed the active count: {sum(before.values())} -> "
                               f"{sum(after.values())}")

    def _record_jaccard(self, state: dict[str, tuple[Tensor, Tensor, Tensor]], rho: float, step: int) -> None:
        """Every criterion's prune set from the same state; eq. 1 per layer and pair (Fig. 6a)."""
        sets = {c: self._prune_sets(c, state, rho, step) for c in CRITERION_NAMES}  # plugins' too
        active = {n: int(torch.count_nonzero(m)) for n, (_, _, m) in state.items()}
        sizes = {n: m.numel() for n, (_, _, m) in state.items()}
        info = {"update": self.updates + 1, "step": step, "rho": rho, "driver": self.method_cfg.criterion,
                "growth": self.method_cfg.growth, "density": self.method_cfg.density}
        self.jaccard_rows += criteria_jaccard_rows(sets, active=active, sizes=sizes, info=info)

    # --- metrics and outputs ------------------------------------------------------------------
    def end_of_epoch(self, model: nn.Module, epoch: int) -> dict[str, float]:
        layers = _layers(model)
        counts = {n: int(torch.count_nonzero(layer.mask)) for n, layer in layers.items()}
        total = sum(layer.mask.numel() for layer in layers.values())
        itop = itop_ratio(self.ever)
        out = {
            "density": sum(counts.values()) / total,
            "itop": itop,  # its dying ratio is 1 - itop: logged once, as the paper's ITOP rate
            "updates": float(self.updates),
            "prune_fraction": self.last_rho,
        }
        out.update({f"layer_density/{n}": c / layers[n].mask.numel() for n, c in counts.items()})
        return out

    def end_of_cycle(self, model: nn.Module, cycle: int) -> CycleEnd:
        masks = self.masks(model)
        metrics = {  # itop and updates are the last epoch's, logged there
            "jaccard_init": mean_layer_jaccard(masks, self.init_masks),
            "jaccard_init_random": random_reference(
                (m.numel(), int(torch.count_nonzero(m))) for m in self.init_masks.values()),
        }
        tables = {"init_masks": masks_table(self.init_masks)}
        if self.jaccard_rows:
            tables["criteria_jaccard"] = pa.Table.from_pylist(self.jaccard_rows)
        return CycleEnd(metrics=metrics, masks=masks, tables=tables)

    def masks(self, model: nn.Module) -> dict[str, Tensor]:
        """Current bool masks by parameter name (copies)."""
        return {name: layer.mask.clone() for name, layer in _layers(model).items()}

    # --- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "ever": {n: t.unpack().cpu() for n, t in self.ever.items()},  # bool, as before packing
            "init_masks": {n: t.detach().cpu().clone() for n, t in self.init_masks.items()},
            "updates": self.updates,
            "update_seed": self.update_seed,
            "last_rho": self.last_rho,
            "jaccard_rows": [dict(r) for r in self.jaccard_rows],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the history; `on_train_start` moves it to the model's device."""
        self.ever = {n: PackedBits.of(t.detach().cpu().to(torch.bool)) for n, t in state["ever"].items()}
        self.init_masks = {n: t.to(torch.bool).clone() for n, t in state["init_masks"].items()}
        self.updates = int(state["updates"])
        self.update_seed = int(state["update_seed"])
        self.last_rho = float(state["last_rho"])
        self.jaccard_rows = [dict(r) for r in state["jaccard_rows"]]


def _flat(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.flatten()


def _reset_state(optimizer: torch.optim.Optimizer, weight: Tensor, keep: Tensor) -> None:
    """Zero the per-entry optimizer state of `weight` outside `keep`; refuse unknown state."""
    for key, value in optimizer.state.get(weight, {}).items():
        if not isinstance(value, Tensor) or value.shape != weight.shape:
            continue  # e.g. Adam's scalar step count
        if key not in RESETTABLE_STATE:
            raise ValueError(f"DST cannot reset optimizer state {key!r} of {type(optimizer).__name__}: "
                             f"unknown per-weight state (known: {sorted(RESETTABLE_STATE)})")
        value.mul_(keep)
