"""Which machine ran each trial: its Ray node id and its machine name in every result.

Tune fills `node_ip` and `hostname` into results. The Ray node id tells apart two nodes on one
host, but a restarted Ray gives the same machine a new one; the machine name is what stays:
the node's name when `ray start --node-name` gave it one, else the host's name. Both are
added the way Tune adds its own fields, by the trainable's `get_auto_filled_metrics`, so the
trial code (`trainables/`) stays unaware of them. The results table shows the machine as
`node` when a sweep used several machines.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

NODE_KEY = "node_id"
MACHINE_KEY = "machine"


@functools.cache
def machine_name(node_id: str) -> str:
    """The node's `--node-name` (Ray's default is its IP: then the host name), stable across
    restarts of Ray on the same machines."""
    import socket

    import ray

    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            name, ip = node.get("NodeName") or "", node.get("NodeManagerAddress") or ""
            return name if name and name != ip else (node.get("NodeManagerHostname") or socket.gethostname())
    return socket.gethostname()


def with_node_id(train_fn: Callable[..., Any]) -> type:
    """Tune's class for a function trainable, reporting `node_id` and `machine` with every result."""
    import ray
    from ray.tune.trainable import wrap_function

    base = wrap_function(train_fn)

    class NodeTagged(base):  # type: ignore[valid-type, misc]
        def get_auto_filled_metrics(self, *args: Any, **kwargs: Any) -> dict:
            filled = super().get_auto_filled_metrics(*args, **kwargs)
            filled[NODE_KEY] = ray.get_runtime_context().get_node_id()
            filled[MACHINE_KEY] = machine_name(filled[NODE_KEY])
            return filled

    # Tune names trials and their directories after the trainable: keep the function's name.
    NodeTagged.__name__ = NodeTagged.__qualname__ = getattr(train_fn, "__name__", "trial")
    return NodeTagged
