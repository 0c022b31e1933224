"""Edge-popup (Ramanujan et al. 2020; soft-iep.txt §2-3): learn scores, keep the top 1 - k.

Weights are frozen at a random init (or pre-trained ones, appendix C.2.4), BatchNorm is
non-affine, and the optimizer sees only the scores (weight decay applies to them, as in
hidden-networks). `EdgePopup` is also the base of the whole strong-lottery family: it owns
what they share, and iterative edge-popup (`trainables.methods.iterative_edge_popup`) adds
only its cycle boundary.

Exploration history (soft-iep.txt §3, appendix C.3): before every step the mask that step's
forward uses is OR-ed into `ever` (all cycles) and `ever_cycle` (this cycle; the paper
counts dying edges per cycle, §5), and added to `visits` (steps selected this cycle, 1 byte
per edge, saturated at 6: Fig. 17's last bucket is "more than 5"); the mask at each epoch's
end is OR-ed in too. `trainables.metrics` turns these into d_t (eq. 2),
the apparent dying ratio of hard pruning and the visit buckets of Fig. 17. Both "ever"
histories are kept bit-packed (`trainables.sparse.bits.PackedBits`, 1 bit per weight; the
mask is packed once per step and ORed into both); `ever` / `ever_cycle` unpack them for the
metrics and checkpoints, which store them as bool tensors as before.

Variants of plain EP: `coats` N > 1 (multicoated supermask, appendix C.2.2) and
`progressive_stages` C > 1 (the prune rate rises in C equal stages of one run, C.1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from torch import Tensor, nn

from trainables.config import EdgePopupConfig, ExperimentConfig, SupermaskConfig
from trainables.keys import DYING_RATIO_ALL_CYCLES
from trainables.methods.base import CycleEnd, Method, Position, StepContext
from trainables.metrics.dying import dying_ratio
from trainables.metrics.neurons import dying_neurons, second_last_pair
from trainables.metrics.ranks import rank_table, sample_edges
from trainables.metrics.visits import BUCKETS, VISIT_CAP, add_visit, visit_histogram
from trainables.models.layers import LayerFactory
from trainables.rng import stable_generator
from trainables.sparse.bits import PackedBits, pack_bits
from trainables.sparse.init import init_scores, init_weight
from trainables.sparse.mask_io import masks_table
from trainables.sparse.nm import layer_patterns
from trainables.sparse.schedules import coat_prune_rates, progressive_prune_rates
from trainables.sparse.selection import selection_key
from trainables.sparse.supermask import SUPERMASK, SupermaskMixin, supermask_modules

__all__ = ["EdgePopup", "supermask_layers"]

VISITS_SCHEMA = pa.schema([pa.field("cycle", pa.int32()), pa.field("layer", pa.string()),
                           pa.field("numel", pa.int64()),
                           *(pa.field(f"visits_{b}", pa.int64()) for b in BUCKETS)])


def supermask_layers(model: nn.Module) -> dict[str, SupermaskMixin]:
    layers = supermask_modules(model)
    if not layers:
        raise ValueError("edge-popup found no supermask layer: build the model with "
                         "method.layer_factory()")
    return layers


class EdgePopup(Method):
    """Hooks for edge-popup; the state is the exploration history (and s_0 when needed)."""

    config_class: type[SupermaskConfig] = SupermaskConfig  # iEP shares these hooks
    method_cfg: SupermaskConfig

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.multi_cycle = cfg.method.cycle_count() > 1
        self._ever: dict[str, PackedBits] = {}
        self._ever_cycle: dict[str, PackedBits] = {}  # `_ever` itself for single-cycle methods
        self.visits: dict[str, Tensor] = {}
        self.initial_scores: dict[str, Tensor] = {}  # s_0, kept on CPU when a boundary needs it
        self.rank_edges: list[tuple[str, int]] = []
        self._rate: float | None = None  # prune rate k (the first coat's) now in the layers

    # --- prune rates ----------------------------------------------------------------------
    def prune_rate_at(self, pos: Position) -> float:
        """k for the step at `pos`: EP's (possibly progressive) rate."""
        assert isinstance(self.method_cfg, EdgePopupConfig)
        c = self.method_cfg
        if c.progressive_stages == 1:
            return c.prune_rate
        rates = progressive_prune_rates(c.prune_rate, c.progressive_stages, c.progressive_schedule)
        total = self.cfg.schedule.epochs * pos.steps_per_epoch
        return rates[min(len(rates) - 1, pos.step * len(rates) // max(total, 1))]

    def init_prune_rate(self) -> float:
        """k the layers start with (and that the scaled signed-constant init scales by)."""
        assert isinstance(self.method_cfg, EdgePopupConfig)
        return self.method_cfg.prune_rate

    def set_prune_rate(self, model: nn.Module, k: float) -> None:
        """Give every layer rate k (its coats spanned from k), if it changed."""
        if k == self._rate:
            return
        rates = coat_prune_rates(k, self.method_cfg.coats)
        for layer in supermask_layers(model).values():
            layer.coat_rates = rates
        self._rate = k

    # --- construction ---------------------------------------------------------------------
    def layer_factory(self) -> LayerFactory:
        return SUPERMASK

    def init_model(self, model: nn.Module) -> None:
        """Set k on every layer, then fill weights and scores from two seeded streams.

        Two CPU generators seeded from the (engine-seeded) global RNG: changing the weight
        init leaves the scores unchanged and vice versa, and values do not depend on device.
        """
        c = self.method_cfg
        layers = supermask_layers(model)
        k = self.init_prune_rate()
        self.set_prune_rate(model, k)
        # sparsity.pattern: N:M layers select per group (misfits, if allowed, stay unstructured)
        shapes = {name: tuple(layer.weight.shape) for name, layer in layers.items()}
        for name, nm in layer_patterns(shapes, self.cfg.sparsity.pattern, self.cfg.sparsity.misfit).items():
            layers[name].nm = nm
        weight_seed, score_seed = torch.randint(0, 2**62, (2,)).tolist()
        g_weight = torch.Generator().manual_seed(weight_seed)
        g_score = torch.Generator().manual_seed(score_seed)
        if c.weight_init == "pretrained":
            from trainables.models.pretrained import copy_pretrained_weights, load_weight_tensors

            copy_pretrained_weights(model, load_weight_tensors(Path(c.pretrained_path).expanduser()))
        for layer in layers.values():
            if c.weight_init != "pretrained":
                init_weight(layer.weight, c.weight_init, prune_rate=k, generator=g_weight)
            init_scores(layer.scores, c.score_init, generator=g_score)
        if c.rank_sample:
            sizes = {name: layer.scores.numel() for name, layer in layers.items()}
            self.rank_edges = sample_edges(sizes, c.rank_sample,
                                           stable_generator("rank-sample", self.cfg.run.seed, top_bits=True))

    def trainable_parameters(self, model: nn.Module) -> list[dict[str, Any]]:
        """The scores, and nothing else: a stray trainable tensor means a non-factory layer."""
        layers = supermask_layers(model)
        score_ids = {id(m.scores) for m in layers.values()}
        stray = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in score_ids]
        if stray:
            raise ValueError(f"edge-popup trains scores only, but these parameters require grad: "
                             f"{stray[:5]} (build every layer through method.layer_factory())")
        return [{"params": [m.scores for m in layers.values()]}]

    # --- history ----------------------------------------------------------------------------
    @property
    def ever(self) -> dict[str, Tensor]:
        """Edges selected at least once, all cycles (bool tensors, unpacked copies)."""
        return {name: bits.unpack() for name, bits in self._ever.items()}

    @property
    def ever_cycle(self) -> dict[str, Tensor]:
        """Edges selected at least once this cycle (bool tensors, unpacked copies)."""
        return {name: bits.unpack() for name, bits in self._ever_cycle.items()}

    def history_bytes(self) -> dict[str, int]:
        """Bytes the history holds in memory: the packed `ever` bits (one set per cycle
        scope) and the visit counts."""
        packed = {id(b): b.nbytes for d in (self._ever, self._ever_cycle) for b in d.values()}
        return {"ever_bits": sum(packed.values()), "weights": sum(b.numel() for b in self._ever.values()),
                "visits": sum(t.numel() * t.element_size() for t in self.visits.values())}

    def on_train_start(self, model: nn.Module, pos: Position) -> None:
        """Rates for `pos`; move a restored history on-device, or start it (d_0 = k)."""
        self.set_prune_rate(model, self.prune_rate_at(pos))
        for name, layer in supermask_layers(model).items():
            mask = layer.current_mask()
            self._ever[name] = self._restored_bits(self._ever.get(name), mask)
            if self.multi_cycle:
                self._ever_cycle[name] = self._restored_bits(self._ever_cycle.get(name), mask)
            else:
                self._ever_cycle[name] = self._ever[name]
            if self.method_cfg.track_visits:
                self.visits[name] = self._restored(self.visits.get(name), mask, torch.uint8, fill=0)

    @staticmethod
    def _restored_bits(past: PackedBits | None, mask: Tensor) -> PackedBits:
        if past is None:
            return PackedBits.of(mask)
        if past.shape != mask.shape:
            raise ValueError(f"restored history has shape {tuple(past.shape)}, the layer {tuple(mask.shape)}")
        return past.to(mask.device).or_(mask)

    @staticmethod
    def _restored(past: Tensor | None, mask: Tensor, dtype: torch.dtype, fill: int | None = None) -> Tensor:
        if past is None:
            return torch.zeros_like(mask, dtype=dtype) if fill is not None else mask.clone()
        if past.shape != mask.shape:
            raise ValueError(f"restored history has shape {tuple(past.shape)}, the layer {tuple(mask.shape)}")
        past = past.to(device=mask.device, dtype=dtype)
        return past if fill is not None else past.logical_or_(mask)

    def _remember(self, model: nn.Module) -> None:
        """OR the current masks into both histories (no visit: used at epoch ends)."""
        for name, layer in supermask_layers(model).items():
            self._record(name, layer.current_mask())

    def _record(self, name: str, mask: Tensor) -> None:
        """OR `mask` into the layer's history bits (packed once for both scopes)."""
        packed = pack_bits(mask)
        self._ever[name].bits.bitwise_or_(packed)
        if self.multi_cycle:
            self._ever_cycle[name].bits.bitwise_or_(packed)

    def before_step(self, model: nn.Module, ctx: StepContext) -> None:
        """Rate for this step, then record the mask this step's forward will use."""
        if self._progressive:
            self.set_prune_rate(model, self.prune_rate_at(
                Position(ctx.step, ctx.epoch, ctx.cycle, ctx.steps_per_epoch)))
        track = self.method_cfg.track_visits
        for name, layer in supermask_layers(model).items():
            mask = layer.current_mask()  # cached: the forward reuses this selection
            self._record(name, mask)
            if track:
                add_visit(self.visits[name], mask)

    @property
    def _progressive(self) -> bool:
        return isinstance(self.method_cfg, EdgePopupConfig) and self.method_cfg.progressive_stages > 1

    def reset_cycle_history(self, model: nn.Module) -> None:
        """A new cycle counts its own dying edges and visits (soft-iep.txt §5)."""
        for name in supermask_layers(model):
            self._ever_cycle[name].zero_()
            if name in self.visits:
                self.visits[name].zero_()

    # --- metrics ----------------------------------------------------------------------------
    def _mask_stats(self, model: nn.Module) -> tuple[dict[str, Tensor], float]:
        masks = {name: layer.current_mask() for name, layer in supermask_layers(model).items()}
        kept = sum(int(torch.count_nonzero(m)) for m in masks.values())
        return masks, kept / sum(m.numel() for m in masks.values())

    def exploration_metrics(self, model: nn.Module) -> dict[str, float]:
        """d (this cycle), k - d and density (= 1 - k: k itself is the config's or the cycle's
        schedule value, not logged twice); with several cycles also sparsesweep's own
        `dying_ratio_all_cycles` (never in the mask in any cycle: can only fall, capped by cycle 1's d)."""
        _, remaining = self._mask_stats(model)
        d = dying_ratio(self._ever_cycle)
        k = self._rate if self._rate is not None else self.init_prune_rate()
        out = {"dying_ratio": d, "k_minus_dying": k - d, "density": remaining}
        if self.multi_cycle:
            out[DYING_RATIO_ALL_CYCLES] = dying_ratio(self._ever)
        return out

    def end_of_epoch(self, model: nn.Module, epoch: int) -> dict[str, float]:
        self._remember(model)  # the mask the epoch ends with (what eval and the ticket use)
        return self.exploration_metrics(model)

    def end_of_cycle(self, model: nn.Module, cycle: int) -> CycleEnd:
        """Cycle metrics, its final mask, and the rank / visit / coat tables."""
        masks, _ = self._mask_stats(model)
        metrics = self.exploration_metrics(model)
        tables: dict[str, pa.Table] = {}
        if self.method_cfg.track_visits:
            hist = visit_histogram(self.visits)
            total = sum(hist.values())
            # bucket 0 (never visited) is the dying ratio, logged once as that
            metrics.update({f"visits_{b}": hist[b] / total for b in BUCKETS if b != "0"})
            tables["visits"] = self._visit_table(cycle)
        pair = second_last_pair(masks)
        if pair is not None:
            neurons = dying_neurons(masks[pair[0]], masks[pair[1]])
            metrics.update({f"dying_neurons_{k}": v for k, v in neurons.items()})
        layers = supermask_layers(model)
        if self.rank_edges:
            keys = {name: selection_key(layer.scores, layer.allowed) for name, layer in layers.items()}
            tables["ranks"] = rank_table(cycle, self.rank_edges, keys, masks)
        if self.method_cfg.coats > 1:
            depth = {name: layer.coat_depth() for name, layer in layers.items()}
            coats = {f"{name}/coat{j}": d >= j for name, d in depth.items()
                     for j in range(1, self.method_cfg.coats + 1)}
            tables["coats"] = masks_table(coats)
        return CycleEnd(metrics=metrics, masks={n: m.clone() for n, m in masks.items()}, tables=tables)

    def _visit_table(self, cycle: int) -> pa.Table:
        rows: dict[str, list[Any]] = {f.name: [] for f in VISITS_SCHEMA}
        for name, counts in self.visits.items():
            hist = visit_histogram(counts)
            rows["cycle"].append(cycle)
            rows["layer"].append(name)
            rows["numel"].append(counts.numel())
            for b in BUCKETS:
                rows[f"visits_{b}"].append(hist[b])
        return pa.table(rows, schema=VISITS_SCHEMA)

    # --- outputs ----------------------------------------------------------------------------
    def masks(self, model: nn.Module) -> dict[str, Tensor]:
        """Current bool masks (the union of the coats) by mask name (copies)."""
        return {name: layer.current_mask().clone() for name, layer in supermask_layers(model).items()}

    # --- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Histories (and s_0) on CPU, so a checkpoint loads on any device."""
        def cpu(d: dict[str, Tensor]) -> dict[str, Tensor]:
            return {name: t.detach().cpu().clone() for name, t in d.items()}

        state: dict[str, Any] = {"ever": cpu(self.ever)}  # bool, as before packing
        if self.multi_cycle:
            state["ever_cycle"] = cpu(self.ever_cycle)
        if self.visits:
            state["visits"] = {n: t.to(torch.int32) for n, t in cpu(self.visits).items()}  # int32, as before
        if self.initial_scores:
            state["initial_scores"] = cpu(self.initial_scores)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the histories; `on_train_start` moves them to the model's device."""
        self._ever = {name: PackedBits.of(t.detach().cpu()) for name, t in state["ever"].items()}
        self._ever_cycle = {name: PackedBits.of(t.detach().cpu()) for name, t in state.get("ever_cycle", {}).items()}
        self.visits = {name: t.detach().clamp(max=VISIT_CAP).to(torch.uint8)  # old files: unbounded counts
                       for name, t in state.get("visits", {}).items()}
        if "initial_scores" in state:
            self.initial_scores = {name: t.detach().clone() for name, t in state["initial_scores"].items()}
