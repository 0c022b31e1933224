"""Names the engine's reports share with the orchestrator (torch-free: the driver reads them
without importing torch)."""

from __future__ import annotations

import errno

# a report holding it (1.0) says the loss went NaN/inf and the trial stopped at once
DIVERGED_KEY = "diverged"
# errno values that mean "the storage cannot take more": the sweep can resume once it can
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})

# Per-cycle metrics: "cycle/<name>", logged at step = the cycle (for IMP: the round) a reader
# would say; MLflow's UI groups them under one "cycle" section.
CYCLE_PREFIX = "cycle/"
# A report's position (never a metric itself): the number of the cycle that just ended as the
# method counts it (IMP: the round), the step of every cycle/ metric of that report.
CYCLE_STEP_KEY = "cycle_step"
CYCLE_TEST_ACC = CYCLE_PREFIX + "test_acc"
CYCLE_TRAIN_ACC = CYCLE_PREFIX + "train_acc"
CYCLE_DENSITY = CYCLE_PREFIX + "density"
CYCLE_DYING_RATIO = CYCLE_PREFIX + "dying_ratio"
# IMP's random-reinit baseline of a round (same mask, fresh weights), at step = that round
REINIT_PREFIX = "reinit_"
CYCLE_REINIT_TEST_ACC = CYCLE_PREFIX + REINIT_PREFIX + "test_acc"
CYCLE_REINIT_TRAIN_ACC = CYCLE_PREFIX + REINIT_PREFIX + "train_acc"
# sparsesweep's own exploration metric (not a paper's): the fraction of weights never in the
# mask over ALL of a run's cycles; it can only fall from cycle to cycle, capped by cycle 1's d.
DYING_RATIO_ALL_CYCLES = "dying_ratio_all_cycles"


def cycle_key(name: str) -> str:
    """The logged name of per-cycle metric `name` ("test_acc" -> "cycle/test_acc")."""
    return CYCLE_PREFIX + name
