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

# inference of the exported sparse network (trainables.export), measured at a sparse trial's end
INFER_MS_KEY = "infer_ms"  # median forward time of the exported sparse network (ms)
INFER_MS_DENSE_KEY = "infer_ms_dense"  # the same network run dense (same architecture, same input)
INFER_SPEEDUP_KEY = "infer_speedup"  # infer_ms_dense / infer_ms (>= 1 up to timing noise)
INFER_KEYS = (INFER_MS_KEY, INFER_MS_DENSE_KEY, INFER_SPEEDUP_KEY)
# Wall-clock measurements of a report: two identical runs (or a run and its resume) differ in them.
TIMING_KEYS = ("epoch_time_s", *INFER_KEYS)
