"""The per-method config groups: `method.name` picks the dataclass that holds the other keys.

Each class holds its method's keys, their ranges, and its cross-field rules (`validate`).
Which name selects which class is the method card's fact (`trainables.config.cards`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from trainables.config.catalog import DATASETS
from trainables.config.groups import DataConfig, RunConfig, ScheduleConfig
from trainables.config.schema import SEED_MAX, ConfigError, param


class Experiment(Protocol):
    """What a method's cross-field rules read of the whole config (`ExperimentConfig` is one)."""

    @property
    def data(self) -> DataConfig: ...

    @property
    def schedule(self) -> ScheduleConfig: ...

    @property
    def run(self) -> RunConfig: ...

WEIGHT_INITS: tuple[str, ...] = (
    "signed_constant", "scaled_signed_constant", "kaiming_normal", "kaiming_uniform",
)
SCORE_INITS: tuple[str, ...] = ("kaiming_uniform", "kaiming_normal")


@dataclass(frozen=True)
class MethodConfig:
    """Base of the per-method configs; `name` selects the subclass (its method card says which)."""

    name: str = "dense"
    masked: ClassVar[bool] = False

    def cycle_count(self) -> int:
        """Cycles of `schedule.epochs` epochs each (iterative methods override)."""
        return 1

    def validate(self, exp: Experiment) -> None:
        """Cross-field rules of this method (single-field ranges are checked generically)."""


@dataclass(frozen=True)
class DenseConfig(MethodConfig):
    name: str = param("dense", "method")
    weight_init: str = param("kaiming_normal", "weight initialisation", choices=("kaiming_normal", "kaiming_uniform"))


@dataclass(frozen=True)
class CyclesConfig(MethodConfig):
    """Cycles of iterative pruning: k_i = 1 - (1 - m)(1 - p)^(i-1) (soft-iep.txt §4.1)."""

    cycles: int = param(8, "M: number of cycles, each of schedule.epochs epochs", ge=1, le=1000)
    shrinkage: float | None = param(
        None, "p: fraction of the remaining edges pruned per cycle, k_i = 1-(1-p)^i (default 0.2; "
              "leave unset when target_remaining is given)", gt=0, lt=1)
    target_remaining: float | None = param(
        None, "remaining ratio to reach at the last cycle; sets p (e.g. 0.3 in 3 cycles, as on ImageNet)",
        gt=0, lt=1)
    first_prune_rate: float | None = param(None, "m: prune rate of cycle 1 (default: p)", ge=0, lt=1)

    def cycle_count(self) -> int:
        return self.cycles

    def effective_shrinkage(self) -> float:
        """p as given, derived from target_remaining, or 0.2."""
        from trainables.sparse.schedules import shrinkage_for_target

        if self.target_remaining is not None:
            return shrinkage_for_target(self.target_remaining, self.cycles, self.first_prune_rate)
        return 0.2 if self.shrinkage is None else self.shrinkage

    def cycle_prune_rates(self) -> tuple[float, ...]:
        """k_1 .. k_M."""
        from trainables.sparse.schedules import iterative_prune_rates

        return iterative_prune_rates(self.effective_shrinkage(), self.cycles, self.first_prune_rate)

    def validate(self, exp: Experiment) -> None:
        if self.shrinkage is not None and self.target_remaining is not None:
            raise ConfigError("method.shrinkage, method.target_remaining: set one of them, not both "
                              f"(got {self.shrinkage} and {self.target_remaining})")
        try:
            self.cycle_prune_rates()
        except ValueError as e:
            raise ConfigError(f"method.target_remaining: {e}") from None


SUPERMASK_WEIGHT_INITS: tuple[str, ...] = (*WEIGHT_INITS, "pretrained")


@dataclass(frozen=True)
class SupermaskConfig(MethodConfig):
    """What the strong-lottery methods share: frozen weights θ0, scores, coats, exploration tracking."""

    masked: ClassVar[bool] = True
    weight_init: str = param("signed_constant", "frozen weight initialisation (pretrained: from method.pretrained_path)",
                             choices=SUPERMASK_WEIGHT_INITS)
    score_init: str = param("kaiming_uniform", "score initialisation", choices=SCORE_INITS)
    pretrained_path: str = param("", "weights file for weight_init=pretrained: a state dict (.pt/.pth, read "
                                     "weights-only) or .safetensors, with the model's layer names")
    coats: int = param(1, "N: multicoated supermask, W = θ0 ⊙ Σ_j m_kj with k_j spanned linearly from k to 1 "
                          "(soft-iep-appendix C.2.2; 1 = plain)", ge=1, le=16)
    track_visits: bool = param(True, "count per edge the steps it is selected (visit counts, appendix C.3.3)")
    rank_sample: int = param(200, "edges sampled for the score-rank trajectories (Fig. 5b; 0: off)", ge=0)

    def validate(self, exp: Experiment) -> None:
        if self.weight_init == "pretrained" and not self.pretrained_path:
            raise ConfigError("method.pretrained_path: weight_init=pretrained needs a weights file "
                              "(a state dict .pt/.pth or .safetensors)")
        if self.pretrained_path and self.weight_init != "pretrained":
            raise ConfigError(f"method.pretrained_path: only read with method.weight_init=pretrained "
                              f"(got weight_init={self.weight_init})")


@dataclass(frozen=True)
class EdgePopupConfig(SupermaskConfig):
    """Edge-popup (Ramanujan et al. 2020) as described in soft-iep.txt §2-3."""

    name: str = param("edge_popup", "method")
    prune_rate: float = param(0.5, "k: fraction of each layer's weights PRUNED (density = 1 - k)", ge=0, lt=1)
    progressive_stages: int = param(
        1, "raise the prune rate in this many equal stages of training up to prune_rate "
           "(EP with a progressive prune rate, appendix C.1 Table 5; 1: plain EP)", ge=1, le=1000)
    progressive_schedule: str = param("exp", "remaining ratio across the stages: exp (geometric) or lin (linear)",
                                      choices=("exp", "lin"))


@dataclass(frozen=True)
class IterativeEdgePopupConfig(SupermaskConfig, CyclesConfig):
    """Iterative edge-popup, hard and soft (soft-iep.txt §4, Table 3, Algorithm 1).

    Table 3's rows: hard FT = pruning=hard, lr_reset=hold; hard SRw = hard + score_reset=rewind;
    hard SRi = hard + score_reset=reinit; hard LR = hard (inherit, rewind); soft LR = the
    default; soft LR + zero init = zero_init=true; soft SRw + zero init = score_reset=rewind,
    zero_init=true. soft + score_reset=rewind is EP run afresh at each cycle's k_i.
    """

    name: str = param("iep", "method")
    pruning: str = param("soft", "soft: every edge may be selected in every cycle; hard: edges outside the "
                                 "previous cycle's mask are removed for good", choices=("soft", "hard"))
    score_reset: str = param("inherit", "scores at a cycle start: inherit s*_(i-1), rewind to s_0 (SRw) or "
                                        "reinit from the score init (SRi)", choices=("inherit", "rewind", "reinit"))
    lr_reset: str = param("rewind", "LR at a cycle start: rewind (schedule restarts, optimizer state reset) or "
                                    "hold (the last LR is kept, fine-tuning FT)", choices=("rewind", "hold"))
    zero_init: bool = param(False, "zero the scores of edges the previous cycle did not select (s <- m* ⊙ s)")

    def validate(self, exp: Experiment) -> None:
        SupermaskConfig.validate(self, exp)
        CyclesConfig.validate(self, exp)


@dataclass(frozen=True)
class DenseLRRConfig(CyclesConfig):
    """Dense lottery ticket with LR rewinding (Renda et al. 2020; soft-iep-appendix C.2.1).

    Weights are trained; at each cycle boundary the smallest-magnitude weights are pruned to
    k_i, the survivors keep their trained values, and the LR schedule restarts.
    """

    masked: ClassVar[bool] = True
    name: str = param("dense_lrr", "method")
    weight_init: str = param("kaiming_normal", "weight initialisation", choices=("kaiming_normal", "kaiming_uniform"))
    scope: str = param("global", "magnitude ranking over all layers together (global) or per layer (layerwise)",
                       choices=("global", "layerwise"))

    def cycle_count(self) -> int:
        return self.cycles + 1  # one dense cycle first, then one cycle per prune rate k_1..k_M

    def cycle_prune_rates(self) -> tuple[float, ...]:
        return (0.0, *CyclesConfig.cycle_prune_rates(self))


DST_CRITERIA: tuple[str, ...] = ("magnitude", "set", "mest", "sensitivity", "rsensitivity", "snip", "random")
DST_GROWTHS: tuple[str, ...] = ("random", "gradient")
# Every name method.criterion / method.growth takes: the built-ins, then the ones plugins
# register (trainables.plugins); the fields' choices are live views of these.
CRITERION_NAMES: dict[str, str] = dict.fromkeys(DST_CRITERIA, "built-in")  # name -> who registered it
GROWTH_NAMES: dict[str, str] = dict.fromkeys(DST_GROWTHS, "built-in")


@dataclass(frozen=True)
class DSTConfig(MethodConfig):
    """Dynamic sparse training (fantastic-weights-dst.txt §3): a sparse net whose mask is pruned
    and regrown every Δt steps. update_period=0 is static sparse training (same init, no
    updates); density=1 trains every weight, exactly as method.name=dense does.
    """

    masked: ClassVar[bool] = True
    name: str = param("dst", "method")
    density: float = param(0.2, "D: fraction of all conv/linear weights KEPT active (sparsity = 1 - D)",
                           gt=0, le=1)
    distribution: str = param("erk", "per-layer densities: erk (kernel dims included; the same as er on "
                                     "linear layers), er, or uniform", choices=("erk", "er", "uniform"))
    dense_first: bool = param(False, "keep the first conv/linear layer dense (it counts toward D)")
    dense_last: bool = param(False, "keep the last conv/linear layer dense (it counts toward D)")
    weight_init: str = param("kaiming_normal", "weight initialisation before masking",
                             choices=("kaiming_normal", "kaiming_uniform"))
    criterion: str = param("magnitude", "prune criterion: magnitude |θ|, set (equal counts by sign), mest "
                                        "|θ|+λ|∇|, sensitivity |∇|/|θ|, rsensitivity |θ|/|∇|, snip |θ∇|, random",
                           choices=CRITERION_NAMES.keys())
    growth: str = param("random", "growth: random (uniform over inactive weights) or gradient "
                                  "(largest |∂L/∂(m⊙θ)|)", choices=GROWTH_NAMES.keys())
    update_period: int = param(800, "Δt: optimizer steps between topology updates (0: no updates, "
                                     "static sparse training)", ge=0)
    update_end: int = param(0, "T: no update at or after optimizer step T, the horizon of the cosine "
                                "decay of ρ (0: the end of training)", ge=0)
    prune_fraction: float = param(0.5, "ρ: fraction of each layer's ACTIVE weights pruned (and regrown) at "
                                       "an update, before decay", gt=0, le=1)
    prune_schedule: str = param("cosine", "decay of ρ_t: cosine ρ/2·(1+cos(πt/T)), linear (× linear_factor "
                                          "every linear_every steps, appendix J) or constant",
                                choices=("cosine", "linear", "constant"))
    linear_factor: float = param(0.99, "factor of the linear ρ schedule", gt=0, le=1)
    linear_every: int = param(600, "steps between two factors of the linear ρ schedule", ge=1)
    scope: str = param("local", "prune and grow per layer (local) or over all layers together (global, "
                                "appendix I)", choices=("local", "global"))
    mest_lambda: float = param(1.0, "λ of the MEST criterion", ge=0)
    update_batch_size: int = param(0, "0: criteria and growth use the step's batch gradient; N: a separate "
                                      "batch of N examples drawn only for the update (appendix G)", ge=0)
    skip_step_on_update: bool = param(False, "no optimizer step on an update step (as RigL)")
    jaccard_every: int = param(0, "K: besides the first update, record every criterion's prune set every K "
                                   "updates (appendix K; 0: the first update only)", ge=0)

    def validate(self, exp: Experiment) -> None:
        spec = DATASETS[exp.data.dataset]
        if self.update_batch_size > spec.train_size:
            raise ConfigError(f"method.update_batch_size: {self.update_batch_size} is larger than the "
                              f"{spec.train_size} training examples of {exp.data.dataset}")
        if self.update_end and self.update_period and self.update_end <= self.update_period:
            raise ConfigError(f"method.update_end: {self.update_end} leaves no update before it with "
                              f"method.update_period={self.update_period} (0 means the end of training)")


IMP_PHASES: tuple[str, ...] = ("copy", "reinit", "imp")


@dataclass(frozen=True)
class ImpConfig(MethodConfig):
    """Lottery tickets by iterative magnitude pruning (understanding-imp.txt §2-4, Table 1).

    Each round trains, prunes `prune_fraction` of the remaining prunable weights by magnitude
    and resets the survivors to θ_0 (or rewinds them to step t); every round may also train
    its reinit baseline (same mask, fresh weights) and a second copy with other SGD noise for
    linear mode connectivity. Round r runs as up to three engine cycles, in the order of
    IMP_PHASES (the IMP training last, so the run's last report is IMP's).
    """

    masked: ClassVar[bool] = True
    name: str = param("imp", "method")
    rounds: int = param(25, "R: IMP rounds (round 1 trains the dense network), each of schedule.epochs epochs",
                        ge=1, le=1000)
    prune_fraction: float = param(0.2, "fraction of the REMAINING prunable weights removed per round "
                                       "(ceil(p·remaining), as open_lth)", gt=0, lt=1)
    scope: str = param("global", "magnitude ranking over all prunable layers together (global) or per layer "
                                 "(layerwise)", choices=("global", "layerwise"))
    one_shot_sparsity: float | None = param(
        None, "one-shot pruning: after the dense round, prune straight to this SPARSITY (fraction removed, "
              "e.g. 0.3 for ResNet-50 in Table 1); needs rounds=2", gt=0, lt=1)
    rewind_epoch: int = param(0, "reset survivors to their values after this many epochs of round 1 "
                                 "(0 with rewind_step=0: to the initialisation)", ge=0)
    rewind_step: int = param(0, "reset survivors to their values after this many optimizer steps of round 1 "
                                "(set rewind_epoch or rewind_step, not both)", ge=0)
    weight_init: str = param("kaiming_normal", "weight initialisation (Table 1: LeNet kaiming_uniform, the "
                                               "others kaiming_normal)", choices=("kaiming_normal", "kaiming_uniform"))
    prune_shortcuts: bool = param(False, "also prune 1x1 shortcut (downsample) convs (BatchNorm is never pruned)")
    prune_biases: bool = param(False, "also rank and prune the biases of the pruned conv/linear layers with their "
                                      "weights (the paper prunes weights only; a bias dies with its neuron)")
    affine_bn: bool = param(True, "affine BatchNorm (appendix A.3: all normalisation affine)")
    reinit_baseline: bool = param(True, "train the random-reinit baseline (same mask, fresh weights) in every "
                                        "pruned round, inside the trial")
    lmc: bool = param(False, "train a second copy of every round from the same state with another data seed "
                             "and measure linear mode connectivity (instability)")
    copy_data_seed: int | None = param(None, "data seed of the second copy (None: the run's data seed + 1)",
                                       ge=0, le=SEED_MAX)
    lmc_points: int = param(20, "evenly spaced points on the linear path (endpoints included)", ge=2, le=1000)
    lmc_successive: bool = param(True, "also interpolate between the IMP optima of successive rounds (Fig. 8)")
    bn_batches: int = param(0, "training batches used to recompute BatchNorm statistics at each point "
                               "(0: one whole epoch)", ge=0)
    repel: str = param("off", "repellent loss J_r over earlier IMP optima: off, all (Θ = every earlier "
                              "optimum) or previous (Θ = the last one only)", choices=("off", "all", "previous"))
    repel_lambda: float = param(2.0, "λ_r of J_r (2 in the paper; < 0 attracts)")
    repel_device: str = param("device", "where J_r is computed: device (the earlier optima projected on the "
                                        "current mask go to the accelerator) or cpu (they stay in host memory)",
                              choices=("device", "cpu"))
    optima_store: str = param("memory", "where the earlier rounds' optima (IMP and reinit, each on its own mask: "
                                        "<= 1/p model sizes in all) live: host memory, or disk (memory-mapped "
                                        "files in a temporary directory, paged in when used); never on the "
                                        "accelerator; checkpoints hold them either way", choices=("memory", "disk"))
    hist_bins: int = param(64, "bins of the surviving-weight histograms", ge=2, le=10000)

    def phases(self) -> tuple[str, ...]:
        """Phases of a pruned round, in training order; round 1 (dense) has no reinit."""
        return tuple(p for p in IMP_PHASES if p == "imp" or (p == "copy" and self.lmc)
                     or (p == "reinit" and self.reinit_baseline))

    def cycle_count(self) -> int:
        per_round = len(self.phases())
        return self.rounds * per_round - (1 if self.reinit_baseline else 0)

    def validate(self, exp: Experiment) -> None:
        if self.one_shot_sparsity is not None and self.rounds != 2:
            raise ConfigError(f"method.rounds: one-shot pruning (method.one_shot_sparsity={self.one_shot_sparsity}) "
                              f"trains a dense round and one pruned round; set method.rounds=2, got {self.rounds}")
        if self.rewind_epoch and self.rewind_step:
            raise ConfigError(f"method.rewind_step: set rewind_epoch or rewind_step, not both (got "
                              f"{self.rewind_epoch} and {self.rewind_step})")
        if self.rewind_epoch >= exp.schedule.epochs and self.rewind_epoch:
            raise ConfigError(f"method.rewind_epoch: {self.rewind_epoch} must be smaller than schedule.epochs "
                              f"({exp.schedule.epochs}), the length of round 1")
        spe = DATASETS[exp.data.dataset].train_size // exp.data.batch_size  # drop_last, as the engine
        if exp.run.max_steps_per_epoch:
            spe = min(spe, exp.run.max_steps_per_epoch)
        if self.rewind_step >= exp.schedule.epochs * spe and self.rewind_step:
            raise ConfigError(f"method.rewind_step: {self.rewind_step} must be smaller than the "
                              f"{exp.schedule.epochs * spe} optimizer steps of round 1 "
                              f"(schedule.epochs={exp.schedule.epochs} x {spe} steps at data.batch_size="
                              f"{exp.data.batch_size})")
        if self.repel != "off" and self.rounds < 2:
            raise ConfigError(f"method.repel: {self.repel} repels earlier rounds' optima and needs "
                              f"method.rounds >= 2, got {self.rounds}")

