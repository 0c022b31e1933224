"""Which Ray node ran each trial: its node id in every result.

Tune fills `node_ip` and `hostname` into results, which do not tell apart two nodes on one
host (or behind one NAT). The Ray node id does. It is added the way Tune adds its own
fields, by the trainable's `get_auto_filled_metrics`, so the trial code (`trainables/`)
stays unaware of it. The results table shows it as `node` when a sweep used several nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NODE_KEY = "node_id"


def with_node_id(train_fn: Callable[..., Any]) -> type:
    """Tune's class for a function trainable, reporting `node_id` with every result."""
    import ray
    from ray.tune.trainable import wrap_function

    base = wrap_function(train_fn)

    class NodeTagged(base):  # type: ignore[valid-type, misc]
        def get_auto_filled_metrics(self, *args: Any, **kwargs: Any) -> dict:
            filled = super().get_auto_filled_metrics(*args, **kwargs)
            filled[NODE_KEY] = ray.get_runtime_context().get_node_id()
            return filled

    # Tune names trials and their directories after the trainable: keep the function's name.
    NodeTagged.__name__ = NodeTagged.__qualname__ = getattr(train_fn, "__name__", "trial")
    return NodeTagged
