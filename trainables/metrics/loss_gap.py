"""Loss gap over time (fantastic-weights-dst.txt §5.2, Fig. 4 left): validation − training loss.

Computed from the per-epoch `test_loss` and `train_loss` every run logs (the engine holds no
separate validation split: its held-out split plays the validation set's part), so it can be
recomputed from MLflow or Tune's results for any finished run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["loss_gap"]


def loss_gap(val_loss: Sequence[float], train_loss: Sequence[float]) -> list[float]:
    """Per-epoch val − train; NaN where an epoch was not evaluated (val is None or NaN)."""
    if len(val_loss) != len(train_loss):
        raise ValueError(f"{len(val_loss)} validation losses for {len(train_loss)} training losses")
    out = []
    for v, t in zip(val_loss, train_loss, strict=True):
        out.append(math.nan if v is None or math.isnan(v) else v - t)
    return out
