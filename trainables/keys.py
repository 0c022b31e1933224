"""Report keys the engine writes and the orchestrator reads: one spelling for both sides.

Torch-free (the driver, the tracker and the results table import it).
"""

from __future__ import annotations

#: Set to 1 in the one last report of a run whose loss became NaN or infinite (no test metric).
DIVERGED_KEY = "diverged"
#: Set on a report sent again after a restore (the tracker drops repeats).
REPLAYED_KEY = "replayed"

# Per-cycle metrics: "cycle/<name>", logged at step = the cycle (for IMP: the round) a reader
# would say; MLflow's UI groups them under one "cycle" section.
CYCLE_PREFIX = "cycle/"
# A report's position (never a metric itself): the number of the cycle that just ended as the
# method counts it (IMP: the round), the step of every cycle/ metric of that report.
CYCLE_STEP_KEY = "cycle_step"
#: Where a report is (its x axis): the global epoch, the optimizer step and the cycle step,
#: never metrics themselves (MLflow's charts would plot the step against itself).
POSITION_KEYS: frozenset[str] = frozenset({"epoch", "step", CYCLE_STEP_KEY})
CYCLE_TEST_ACC = CYCLE_PREFIX + "test_acc"
CYCLE_TRAIN_ACC = CYCLE_PREFIX + "train_acc"
CYCLE_DENSITY = CYCLE_PREFIX + "density"
CYCLE_DYING_RATIO = CYCLE_PREFIX + "dying_ratio"
#: Test accuracy after the cycle's last epoch: present in exactly the reports that end a cycle.
CYCLE_END_KEY = CYCLE_TEST_ACC
# IMP's random-reinit baseline of a round (same mask, fresh weights), at step = that round
REINIT_PREFIX = "reinit_"
CYCLE_REINIT_TEST_ACC = CYCLE_PREFIX + REINIT_PREFIX + "test_acc"
CYCLE_REINIT_TRAIN_ACC = CYCLE_PREFIX + REINIT_PREFIX + "train_acc"
# sparsesweep's own exploration metric (not a paper's): the fraction of weights never in the
# mask over ALL of a run's cycles; it can only fall from cycle to cycle, capped by cycle 1's d.
DYING_RATIO_ALL_CYCLES = "dying_ratio_all_cycles"

# inference of the exported sparse network (trainables.export), measured at a sparse trial's end
INFER_MS_KEY = "infer_ms"  # median forward time of the exported sparse network (ms)
INFER_MS_DENSE_KEY = "infer_ms_dense"  # the same network run dense (same architecture, same input)
INFER_SPEEDUP_KEY = "infer_speedup"  # infer_ms_dense / infer_ms (>= 1 up to timing noise)
INFER_KEYS = (INFER_MS_KEY, INFER_MS_DENSE_KEY, INFER_SPEEDUP_KEY)
# Wall-clock measurements of a report: two identical runs (or a run and its resume) differ in them.
TIMING_KEYS = ("epoch_time_s", *INFER_KEYS)


def cycle_key(name: str) -> str:
    """The logged name of per-cycle metric `name` ("test_acc" -> "cycle/test_acc")."""
    return CYCLE_PREFIX + name
