"""IMP: a round's cost against one dense training of the same epochs.

    .venv/bin/python -m benchmarks.imp_rounds [--model resnet20] [--batch 32] [--repeats 5]

A round of IMP is a training of `schedule.epochs` epochs on masked weights, plus its boundary:
global magnitude pruning, the rewind of the survivors to θ0, the optimizer reset, and (with the
repellent loss) the projection of the earlier optima onto the new mask. Measured side by side
on one synthetic 32x32 batch (the engine's own step, as benchmarks.training_steps does):
  dense       a dense step (every weight trainable)
  imp         an IMP step in round 2 (80% of the weights left), repellent loss off
  imp_repel   an IMP step in round 3 with J_r over both earlier optima (λ_r = 2)
and the boundary into round 2 / round 3 timed once each (median of `--repeats` fresh states).
The round ratio is (S·t_imp + t_boundary) / (S·t_dense) with S the steps of one round of the
paper's regime for the model (Table 1: ResNet-20 on CIFAR-10, 85 epochs of 391 steps), so the
boundary is amortised over a real round. The analyses a round may add (the reinit baseline,
the LMC copy, interpolations) are trainings or evaluations of their own, not counted here.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from benchmarks.training_steps import CLOCK, Variant, config, interleaved_medians
from trainables.loop import build_state, start_cycle
from trainables.methods.base import Position

IMP = {"method.name": "imp", "method.rounds": 3, "method.reinit_baseline": False, "method.lmc": False,
       "method.lmc_successive": False}
#: Steps of one IMP round in the paper's regime (understanding-imp.txt Table 1; 50k CIFAR images).
ROUND_STEPS = {"resnet20": 85 * 391, "conv4": 75 * 391, "conv8": 75 * 391}


def imp_variant(model: str, batch: int, repel: bool, into_round: int) -> tuple[Variant, float]:
    """An IMP state trained a step per round up to `into_round`, and that last boundary's seconds."""
    import torch

    cfg = config(model, batch, {**IMP, "method.repel": "all" if repel else "off"})
    state = build_state(cfg, torch.device("cpu"), 10**6)
    state.method.on_train_start(state.model, Position(step=0, epoch=0, cycle=1, steps_per_epoch=10**6))
    g = torch.Generator().manual_seed(0)
    v = Variant("imp", state, torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g))
    seconds = 0.0
    for r in range(2, into_round + 1):
        v()
        t0 = CLOCK()
        state.method.end_of_cycle(state.model, r - 1)  # the round's optimum, mask and tables
        start_cycle(state, r)  # prune, rewind to θ0, reset the optimizer, prepare J_r
        seconds = CLOCK() - t0
    return v, seconds


def measure(model: str, batch: int, repeats: int) -> dict[str, Any]:
    """Median step seconds (dense, imp, imp_repel), median boundary seconds, round ratios."""
    from benchmarks.training_steps import build_variant

    boundary = {False: [], True: []}
    steps: dict[str, list[float]] = {"dense": [], "imp": [], "imp_repel": []}
    for _ in range(repeats):  # fresh states: the boundary runs once per state
        imp, b_imp = imp_variant(model, batch, repel=False, into_round=2)
        rep, b_rep = imp_variant(model, batch, repel=True, into_round=3)
        boundary[False].append(b_imp)
        boundary[True].append(b_rep)
        med = interleaved_medians({"dense": build_variant("dense", model, batch), "imp": imp, "imp_repel": rep},
                                  repeats=3)
        for name, t in med.items():
            steps[name].append(t)
    t = {name: statistics.median(v) for name, v in steps.items()}
    s = ROUND_STEPS.get(model, 75 * 391)
    b_imp, b_rep = statistics.median(boundary[False]), statistics.median(boundary[True])
    return {"steps": t, "boundary_s": {"imp": b_imp, "imp_repel": b_rep}, "round_steps": s,
            "round_ratio": (s * t["imp"] + b_imp) / (s * t["dense"]),
            "round_ratio_repel": (s * t["imp_repel"] + b_rep) / (s * t["dense"])}


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    out = measure(args.model, args.batch, args.repeats)
    t, b = out["steps"], out["boundary_s"]
    print(f"{args.model} b{args.batch}: step dense {t['dense'] * 1e3:.1f} ms, IMP {t['imp'] * 1e3:.1f} ms, "
          f"IMP + J_r {t['imp_repel'] * 1e3:.1f} ms; boundary {b['imp'] * 1e3:.0f} ms / {b['imp_repel'] * 1e3:.0f} ms "
          f"(with J_r); round of {out['round_steps']} steps / dense: {out['round_ratio']:.4f}, "
          f"with J_r {out['round_ratio_repel']:.4f} (goal <= 1.02)")


if __name__ == "__main__":
    main()
