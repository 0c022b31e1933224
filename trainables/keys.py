"""Report keys the engine writes and the orchestrator reads: one spelling for both sides.

Torch-free (the driver, the tracker and the results table import it).
"""

from __future__ import annotations

#: Set to 1 in the one last report of a run whose loss became NaN or infinite (no test metric).
DIVERGED_KEY = "diverged"
#: Set on a report sent again after a restore (the tracker drops repeats).
REPLAYED_KEY = "replayed"
#: Where a report is (its x axis): the global epoch and optimizer step, never metrics themselves.
POSITION_KEYS: frozenset[str] = frozenset({"epoch", "step"})
#: Prefix of the metrics reported once per cycle, at its last epoch (`cycle_test_acc`, ...).
CYCLE_PREFIX = "cycle_"
#: Test accuracy after the cycle's last epoch: present in exactly the reports that end a cycle.
CYCLE_END_KEY = f"{CYCLE_PREFIX}test_acc"
