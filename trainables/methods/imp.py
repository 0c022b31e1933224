"""Lottery tickets by iterative magnitude pruning (understanding-imp.txt; Frankle & Carbin 2019;
rewinding: Frankle et al. 2020a; reference code: open_lth).

A round trains, then prunes ⌈p·remaining⌉ of the prunable weights by global (or per-layer)
magnitude from the round's final weights, and resets the survivors to θ_0 (or rewinds them,
and BatchNorm, to their values after t steps of round 1) with the LR schedule and optimizer
state restarted. Rounds ARE the engine's cycles: round r runs as up to three cycles, in this
order (`ImpConfig.phases`):

- copy   — (method.lmc) the same start state as the IMP training, another data seed
           (`run.data_seed`'s other value): the second copy of linear mode connectivity.
           Inside the trial, not a sibling trial: both copies must start from the SAME mask
           and weights, and the mask of round r exists only in this trial.
- reinit — (method.reinit_baseline, rounds >= 2) the same mask, fresh random weights: the
           random-reinit baseline, trained in the same trial so its numbers sit next to
           IMP's in one MLflow run.
- imp    — the IMP training proper; last, so the run's last report is IMP's and its final
           weights are what the next round prunes.

Each phase's end is summarised at step = its round r: `cycle/test_acc`, `cycle/train_acc`
(IMP), `cycle/reinit_test_acc`, `cycle/reinit_train_acc`, `cycle/reinit_threshold` (the
reinit baseline), `cycle/copy_test_acc`, `cycle/density`, `cycle/threshold`,
`cycle/instability` (copies), `cycle/successive_instability` (rounds r-1 -> r, Fig. 8),
angular distances to the previous round and to θ_0; artifacts: `masks/`, `distances/` (all
round pairs so far, three distance kinds, IMP and reinit), `histograms/` and `lmc/` tables.

Earlier optima are kept compactly (each round's values on its own mask, so ≤ 1/p models in
all) in host memory or memory-mapped files (`method.optima_store`), and in every checkpoint,
never on the accelerator; the repellent loss sends only their projections on the current mask
to the device (`trainables.sparse.repel`).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from torch import Tensor, nn

from trainables.config import ExperimentConfig, ImpConfig
from trainables.methods.base import CycleEnd, CycleStart, Evaluator, Method, Position, StepContext
from trainables.methods.dense import decay_groups, init_dense_weights
from trainables.metrics.distances import distance_row, distance_table, shared_vectors
from trainables.metrics.histograms import weight_histogram
from trainables.metrics.interpolation import instability, interpolation_errors
from trainables.models.layers import LayerFactory
from trainables.rng import stable_generator
from trainables.sparse.density import kept_count
from trainables.sparse.imp_prune import PruneResult, imp_prune, one_shot_prune
from trainables.sparse.init import init_weight
from trainables.sparse.masked import MASKED, MASKED_NONAFFINE, MaskedMixin, masked_modules
from trainables.sparse.nm import layer_patterns, nm_topk
from trainables.sparse.nm_pattern import imp_round_keep, parse_pattern
from trainables.sparse.repel import RepellentTerm
from trainables.sparse.supermask import topk_mask

__all__ = ["Imp", "PHASE_INDEX", "SHORTCUT_NAMES", "imp_cycle_table"]

# Residual shortcut convs (resnet.py's `shortcut`, torchvision's `downsample`), unpruned by default.
SHORTCUT_NAMES: tuple[str, ...] = ("shortcut", "downsample")
PHASE_INDEX: dict[str, int] = {"imp": 0, "copy": 1, "reinit": 2}


def imp_cycle_table(c: ImpConfig) -> tuple[tuple[int, str], ...]:
    """(round, phase) of every cycle, cycle 1 first; round 1 (dense) has no reinit."""
    table = tuple((r, p) for r in range(1, c.rounds + 1) for p in c.phases() if not (r == 1 and p == "reinit"))
    assert len(table) == c.cycle_count()
    return table


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _label(r: int) -> str:
    return f"r{r:02d}"


class Imp(Method):
    """IMP rounds on masked layers; the history a metric needs is kept in the method state."""

    config_class = ImpConfig
    method_cfg: ImpConfig

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.table = imp_cycle_table(self.method_cfg)
        self.evaluator: Evaluator | None = None
        self.init_state: dict[str, Tensor] = {}
        self.rewind_steps = 0
        self.term: RepellentTerm | None = None
        self.index: dict[str, Tensor] = {}
        self.last_engine: dict[str, float] = {}
        # --- checkpointed history ---
        self.rewind_state: dict[str, Tensor] | None = None
        self.round_masks: list[dict[str, Tensor]] = []  # mask of round r at index r-1
        self.optima: list[dict[str, Tensor]] = []  # IMP endpoint of round r on its mask
        self.reinit_optima: dict[int, dict[str, Tensor]] = {}
        self.reinit_init: dict[str, Tensor] | None = None
        self.copy_state: dict[str, Tensor] | None = None
        self.prev_state: dict[str, Tensor] | None = None
        self.rows: list[dict[str, Any]] = []
        self.prune_thresholds: list[float] = []
        self.bias_masks: dict[str, Tensor] = {}  # method.prune_biases: "<layer>.bias" -> kept entries
        self.spill_dir: Path | None = None  # method.optima_store=disk

    # --- construction -------------------------------------------------------------------
    def layer_factory(self) -> LayerFactory:
        return MASKED if self.method_cfg.affine_bn else MASKED_NONAFFINE

    def init_model(self, model: nn.Module) -> None:
        init_dense_weights(model, self.method_cfg.weight_init)
        self.init_state = _cpu_state(model)

    def trainable_parameters(self, model: nn.Module) -> list[dict[str, Any]]:
        return decay_groups(model)

    def prunable(self, model: nn.Module) -> dict[str, MaskedMixin]:
        layers = masked_modules(model)
        if not layers:
            raise ValueError("imp found no masked layer: build the model with method.layer_factory()")
        if self.method_cfg.prune_shortcuts:
            return layers
        return {n: m for n, m in layers.items() if not any(s in n.split(".") for s in SHORTCUT_NAMES)}

    def bind_evaluator(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    # --- where a cycle stands -------------------------------------------------------------
    def round_phase(self, cycle: int) -> tuple[int, str]:
        return self.table[cycle - 1]

    def data_order(self, cycle: int, epoch: int, data_seed: int) -> tuple[int, int]:
        """Every cycle replays the same epoch orders (the epoch within the cycle, as open_lth's
        rounds do), so IMP, its reinit and its copy differ only in what they should: the
        copy in its data seed (SGD noise), the reinit in its weights."""
        within = epoch - (cycle - 1) * self.cfg.schedule.epochs
        if self.round_phase(cycle)[1] != "copy":
            return data_seed, within
        return (data_seed + 1 if self.method_cfg.copy_data_seed is None else self.method_cfg.copy_data_seed), within

    def cycle_metric_prefix(self, cycle: int) -> str:
        """reinit_ / copy_: the baseline's and the copy's metrics under their own names."""
        phase = self.round_phase(cycle)[1]
        return "" if phase == "imp" else f"{phase}_"

    def cycle_step(self, cycle: int) -> int:
        """Every phase of round r reports at step r."""
        return self.round_phase(cycle)[0]

    def observe_cycle_metrics(self, cycle: int, metrics: dict[str, float]) -> None:
        self.last_engine = dict(metrics)

    # --- training hooks -------------------------------------------------------------------
    def on_train_start(self, model: nn.Module, pos: Position) -> None:
        self.rewind_steps = self.method_cfg.rewind_step or self.method_cfg.rewind_epoch * pos.steps_per_epoch
        for name, bias in self._biases(model).items():  # restored with the method state, or all kept
            self.bias_masks[name] = self.bias_masks.get(name, torch.ones_like(bias, dtype=torch.bool)).to(bias.device)
        self._apply_masks(model)
        self._prepare_phase(model, self.round_phase(pos.cycle)[0])

    def begin_cycle(self, model: nn.Module, cycle: int) -> CycleStart:
        r, phase = self.round_phase(cycle)
        if r != self.round_phase(cycle - 1)[0]:
            self._prune(model, r)
        masks = {n: layer.mask.clone() for n, layer in self.prunable(model).items()}
        offset = 0
        if phase == "reinit":
            self._reinit(model, r, masks)
        else:
            rewound = r > 1 and self.rewind_steps > 0
            if rewound and self.rewind_state is None:
                raise RuntimeError("IMP rewinding: no weights were saved at the rewind point in round 1")
            self._load(model, self.rewind_state if rewound and self.rewind_state is not None else self.init_state,
                       masks)
            offset = self.rewind_steps if rewound else 0
        self._prepare_phase(model, r)
        return CycleStart(lr="rewind", reset_optimizer=True, lr_offset_steps=offset)

    def loss_term(self, model: nn.Module, ctx: StepContext) -> Tensor | None:
        if self.term is None:
            return None
        return self.term(self._active(model))

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        self._apply_masks(model)
        r, phase = self.round_phase(ctx.cycle)
        if r == 1 and phase == "imp" and self.rewind_steps and self.rewind_state is None:
            into_cycle = ctx.step - (ctx.cycle - 1) * self.cfg.schedule.epochs * ctx.steps_per_epoch + 1
            if into_cycle == self.rewind_steps:
                self.rewind_state = _cpu_state(model)

    def end_of_epoch(self, model: nn.Module, epoch: int) -> dict[str, float]:
        cycle = (epoch - 1) // self.cfg.schedule.epochs + 1
        r, phase = self.round_phase(cycle)
        return {"round": r, "phase": PHASE_INDEX[phase], "density": self._remaining(model)}

    def end_of_cycle(self, model: nn.Module, cycle: int) -> CycleEnd:
        r, phase = self.round_phase(cycle)
        if phase == "copy":  # its engine metrics: cycle/copy_test_acc, ... (cycle_metric_prefix)
            self.copy_state = _cpu_state(model)
            return CycleEnd()
        if phase == "reinit":
            return self._end_reinit(model, r)
        return self._end_imp(model, r)

    # --- outputs --------------------------------------------------------------------------
    def masks(self, model: nn.Module) -> dict[str, Tensor]:
        return {n: m.clone() for n, m in self._ranked(model)[1].items()}

    # --- pieces -----------------------------------------------------------------------------
    def _remaining(self, model: nn.Module) -> float:
        masks = list(self._ranked(model)[1].values())
        return sum(int(torch.count_nonzero(m)) for m in masks) / sum(m.numel() for m in masks)

    def _weights(self, model: nn.Module) -> dict[str, Tensor]:
        return {n: layer.weight.detach() for n, layer in self.prunable(model).items()}

    def _biases(self, model: nn.Module) -> dict[str, Tensor]:
        """With method.prune_biases: the biases of the pruned layers, by "<layer>.bias"."""
        if not self.method_cfg.prune_biases:
            return {}
        return {n.removesuffix("weight") + "bias": layer.bias for n, layer in self.prunable(model).items()  # type: ignore[attr-defined]
                if getattr(layer, "bias", None) is not None}

    def _ranked(self, model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """What magnitude pruning ranks (weights, and biases with prune_biases) and their masks."""
        values = self._weights(model)
        masks = {n: layer.mask for n, layer in self.prunable(model).items()}
        for name, bias in self._biases(model).items():
            values[name], masks[name] = bias.detach(), self.bias_masks[name]
        return values, masks

    @torch.no_grad()
    def _apply_masks(self, model: nn.Module) -> None:
        """θ ← θ ⊙ m for every masked layer (and pruned bias) after anything that may move them."""
        for layer in masked_modules(model).values():
            layer.apply_mask_()
        for name, bias in self._biases(model).items():
            bias.mul_(self.bias_masks[name])

    def _prune(self, model: nn.Module, r: int) -> None:
        """Round r's mask from the model's weights, which are round r-1's IMP optimum."""
        layers = self.prunable(model)
        values, masks = self._ranked(model)
        if parse_pattern(self.cfg.sparsity.pattern) is not None:
            result = self._prune_nm(values, masks, r)
        elif self.method_cfg.one_shot_sparsity is not None:
            result = one_shot_prune(values, masks, self.method_cfg.one_shot_sparsity, self.method_cfg.scope)
        else:
            result = imp_prune(values, masks, self.method_cfg.prune_fraction, self.method_cfg.scope)
        for name, layer in layers.items():
            layer.set_mask(result.masks[name])
        for name in self._biases(model):
            self.bias_masks[name] = result.masks[name].clone()
        self._apply_masks(model)
        del self.prune_thresholds[r - 2:]
        self.prune_thresholds.append(result.threshold)

    def _prune_nm(self, values: dict[str, Tensor], masks: dict[str, Tensor], r: int) -> PruneResult:
        """sparsity.pattern N:M: round r keeps the imp_round_keep(r) largest |θ| of every group
        (exactly N at the last round); a misfit layer (sparsity.misfit=unstructured) keeps the
        same fraction of its weights by layerwise magnitude."""
        shapes = {n: tuple(v.shape) for n, v in values.items()}
        patterns = layer_patterns(shapes, self.cfg.sparsity.pattern, self.cfg.sparsity.misfit)
        nm = parse_pattern(self.cfg.sparsity.pattern)
        assert nm is not None
        keep = imp_round_keep(nm, self.method_cfg.prune_fraction, r, self.method_cfg.rounds)
        out, threshold = {}, 0.0
        for name, w in values.items():
            alive = masks[name].to(torch.bool)
            key = torch.where(alive, w.detach().abs(), torch.full_like(w, -1.0))
            if patterns[name] is not None:
                new = nm_topk(key, keep, nm.m)
            else:
                new = topk_mask(key, kept_count(w.numel(), Fraction(nm.m - keep, nm.m)))
            removed = alive & ~new
            if bool(removed.any()):
                threshold = max(threshold, float(w.detach().abs()[removed].max()))
            out[name] = new
        return PruneResult(out, threshold)

    @torch.no_grad()
    def _load(self, model: nn.Module, state: dict[str, Tensor], masks: dict[str, Tensor]) -> None:
        """Every parameter and buffer from `state` (masks excepted), then the masks applied."""
        current = model.state_dict()
        for key, value in state.items():
            if current[key].dtype != torch.bool:
                current[key].copy_(value)
        for name, layer in self.prunable(model).items():
            layer.set_mask(masks[name])
        self._apply_masks(model)

    @torch.no_grad()
    def _reinit(self, model: nn.Module, r: int, masks: dict[str, Tensor]) -> None:
        """Same mask, fresh conv/linear weights (seeded by seed and round); the rest from θ_0."""
        self._load(model, self.init_state, masks)
        generator = stable_generator("imp-reinit", self.cfg.run.seed, r, top_bits=True)
        for layer in masked_modules(model).values():
            init_weight(layer.weight, self.method_cfg.weight_init, generator=generator)
        self._apply_masks(model)
        self.reinit_init = {n: w.cpu()[m.cpu()] for n, w, m in self._named_active(model)}

    def _named_active(self, model: nn.Module) -> list[tuple[str, Tensor, Tensor]]:
        return [(n, layer.weight.detach().flatten(), layer.mask.flatten()) for n, layer in self.prunable(model).items()]

    def _compact(self, model: nn.Module) -> dict[str, Tensor]:
        """The prunable weights on their mask (the values a full copy would hold, ≤ density·n)."""
        return {n: w.cpu()[m.cpu()].clone() for n, w, m in self._named_active(model)}

    def _keep(self, values: dict[str, Tensor], tag: str) -> dict[str, Tensor]:
        """An optimum as it is kept: in host memory, or (optima_store=disk) in memory-mapped files."""
        if self.method_cfg.optima_store == "memory":
            return values
        if self.spill_dir is None:
            self.spill_dir = Path(tempfile.mkdtemp(prefix="sparsesweep-imp-optima-"))
            weakref.finalize(self, shutil.rmtree, str(self.spill_dir), ignore_errors=True)
        out = {}
        for name, t in values.items():
            path = self.spill_dir / f"{tag}-{name}.bin"
            t.detach().cpu().contiguous().numpy().tofile(path)
            out[name] = torch.from_file(str(path), shared=False, size=t.numel(), dtype=t.dtype)
        return out

    def _full(self, values: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for name, mask in masks.items():
            full = torch.zeros(mask.numel(), dtype=values[name].dtype)
            full[mask.flatten().cpu()] = values[name]
            out[name] = full.view(mask.shape)
        return out

    def _active(self, model: nn.Module) -> Tensor:
        """The active prunable weights as one differentiable vector (index_select: no host sync)."""
        layers = self.prunable(model)
        return torch.cat([layers[n].weight.flatten().index_select(0, idx) for n, idx in self.index.items()])

    def _prepare_phase(self, model: nn.Module, r: int) -> None:
        """Indices of the active weights and the repellent term of round r's mask."""
        layers = self.prunable(model)
        self.index = {n: layer.mask.flatten().nonzero().squeeze(1) for n, layer in layers.items()}
        self.term = None
        if self.method_cfg.repel == "off" or r < 2:
            return
        chosen = range(r - 1) if self.method_cfg.repel == "all" else [r - 2]
        mask_now = {n: layer.mask.detach().cpu() for n, layer in layers.items()}
        optima = []
        for i in chosen:
            full = self._full(self.optima[i], self.round_masks[i])
            optima.append(torch.cat([full[n].flatten()[mask_now[n].flatten()] for n in layers]))
        device = next(iter(layers.values())).weight.device if self.method_cfg.repel_device == "device" else torch.device("cpu")
        self.term = RepellentTerm(optima, self.method_cfg.repel_lambda, device)

    def _threshold(self, model: nn.Module) -> float:
        """|θ| below which pruning this network by p would cut (Fig. 6's pruning threshold)."""
        values, masks = self._ranked(model)
        return imp_prune(values, masks, self.method_cfg.prune_fraction, self.method_cfg.scope).threshold

    def _end_reinit(self, model: nn.Module, r: int) -> CycleEnd:
        values = self._keep(self._compact(model), f"reinit-r{r:02d}")
        self.reinit_optima[r] = values
        masks = self.round_masks_now(model)
        if self.reinit_init is not None:
            self.rows.append(distance_row("reinit", _label(r), "init", torch.cat(list(values.values())),
                                          torch.cat(list(self.reinit_init.values()))))
        for i, earlier in sorted(self.reinit_optima.items()):
            if i < r:
                x, y = shared_vectors(self._full(earlier, self.round_masks[i - 1]), self._full(values, masks),
                                      self.round_masks[i - 1], masks)
                self.rows.append(distance_row("reinit", _label(i), _label(r), x, y))
        hist = weight_histogram(torch.cat(list(values.values())), self.method_cfg.hist_bins, "reinit")
        return CycleEnd(metrics={"reinit_threshold": self._threshold(model)},
                        tables={"histograms": _with_round(hist, r)})

    def round_masks_now(self, model: nn.Module) -> dict[str, Tensor]:
        return {n: layer.mask.detach().cpu().clone() for n, layer in self.prunable(model).items()}

    def _end_imp(self, model: nn.Module, r: int) -> CycleEnd:
        ev = self.evaluator
        masks = self.round_masks_now(model)
        del self.round_masks[r - 1:], self.optima[r - 1:]
        self.round_masks.append(masks)
        values = self._keep(self._compact(model), f"imp-r{r:02d}")
        self.optima.append(values)
        theta = torch.cat(list(values.values()))
        # the threshold that pruned round r is round r-1's `threshold`: logged once, there
        metrics: dict[str, float] = {"density": self._remaining(model), "threshold": self._threshold(model)}
        init_on_mask = torch.cat([self.init_state[n].flatten()[masks[n].flatten()] for n in masks])
        init_row = distance_row("imp", _label(r), "init", theta, init_on_mask)
        self.rows.append(init_row)
        metrics["distance_init"] = float(init_row["angular"])  # type: ignore[arg-type]
        for i in range(1, r):
            x, y = shared_vectors(self._full(self.optima[i - 1], self.round_masks[i - 1]), self._full(values, masks),
                                  self.round_masks[i - 1], masks)
            row = distance_row("imp", _label(i), _label(r), x, y)
            self.rows.append(row)
            if i == r - 1:
                metrics["distance_prev"] = float(row["angular"])  # type: ignore[arg-type]
        if self.term is not None:
            with torch.no_grad():
                metrics["repel_loss"] = float(self.term(self._active(model)))
        tables: dict[str, pa.Table] = {"distances": distance_table(self.rows),
                                       "histograms": _with_round(weight_histogram(theta, self.method_cfg.hist_bins, "imp"), r)}
        curves = []
        current = _cpu_state(model)
        if ev is not None and self.method_cfg.lmc and self.copy_state is not None:
            errors = self._interpolate(model, self.copy_state, current)
            metrics["instability"] = instability([e for _, e in errors])
            curves += [("copy", a, e) for a, e in errors]
        if ev is not None and self.method_cfg.lmc_successive and self.prev_state is not None and r >= 2:
            errors = self._interpolate(model, self.prev_state, current)
            metrics["successive_instability"] = instability([e for _, e in errors])
            curves += [("successive", a, e) for a, e in errors]
        if curves:
            tables["lmc"] = pa.table({"round": pa.array([r] * len(curves), pa.int64()),
                                      "path": pa.array([c[0] for c in curves], pa.string()),
                                      "alpha": pa.array([c[1] for c in curves], pa.float64()),
                                      "error": pa.array([c[2] for c in curves], pa.float64())})
        self.prev_state = current if self.method_cfg.lmc_successive else None
        self.copy_state = None
        return CycleEnd(metrics=metrics, masks=self.masks(model), tables=tables)

    def _interpolate(self, model: nn.Module, a: dict[str, Tensor], b: dict[str, Tensor]) -> list[tuple[float, float]]:
        ev = self.evaluator
        assert ev is not None
        return interpolation_errors(model, a, b, evaluate=ev.evaluate,
                                    recompute_bn=lambda m: ev.recompute_bn(m, self.method_cfg.bn_batches),
                                    points=self.method_cfg.lmc_points)

    # --- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rewind_state": self.rewind_state, "round_masks": self.round_masks, "optima": self.optima,
                "reinit_optima": {str(k): v for k, v in self.reinit_optima.items()},
                "reinit_init": self.reinit_init, "copy_state": self.copy_state, "prev_state": self.prev_state,
                "rows": self.rows, "prune_thresholds": self.prune_thresholds,
                "bias_masks": self.bias_masks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.rewind_state = state["rewind_state"]
        self.round_masks = list(state["round_masks"])
        self.optima = [self._keep(v, f"imp-r{i + 1:02d}") for i, v in enumerate(state["optima"])]
        self.reinit_optima = {int(k): self._keep(v, f"reinit-r{int(k):02d}") for k, v in state["reinit_optima"].items()}
        self.reinit_init = state["reinit_init"]
        self.copy_state = state["copy_state"]
        self.prev_state = state["prev_state"]
        self.rows = [dict(r) for r in state["rows"]]
        self.prune_thresholds = [float(t) for t in state["prune_thresholds"]]
        self.bias_masks = dict(state.get("bias_masks", {}))


def _with_round(table: pa.Table, r: int) -> pa.Table:
    return table.append_column("round", pa.array([r] * table.num_rows, pa.int64()))
