"""Dying neurons of the second-last layer (soft-iep-appendix C.3.2, Table 6, Fig. 16).

A hidden neuron j of the layer feeding the classifier is cut off on its input side when the
producing layer's mask keeps no edge into it (row j of that layer's mask is empty), and on
its output side when the classifier's mask keeps no edge out of it (column j empty). Table 6
counts both and the overlap: the share of output-dead neurons that are also input-dead.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["dying_neurons", "second_last_pair"]


def dying_neurons(producer: Tensor, consumer: Tensor) -> dict[str, float]:
    """Counts for the neurons between `producer` (out, in, ...) and `consumer` (classes, out).

    A conv producer's row j spans every input channel and kernel position of output channel
    j. Returns no_input, no_output, both, and overlap = both / no_output (0 when none die).
    """
    if producer.dim() < 2 or consumer.dim() != 2:
        raise ValueError(f"need a producer mask of >= 2 dims and a 2-D consumer mask, got "
                         f"{tuple(producer.shape)} and {tuple(consumer.shape)}")
    if producer.shape[0] != consumer.shape[1]:
        raise ValueError(f"producer has {producer.shape[0]} outputs but the consumer takes "
                         f"{consumer.shape[1]} inputs")
    no_in = ~producer.bool().flatten(1).any(dim=1)
    no_out = ~consumer.bool().any(dim=0).to(no_in.device)
    both = int(torch.count_nonzero(no_in & no_out))
    n_out = int(torch.count_nonzero(no_out))
    return {"no_input": float(torch.count_nonzero(no_in)), "no_output": float(n_out),
            "both": float(both), "overlap": both / n_out if n_out else 0.0}


def second_last_pair(masks: Mapping[str, Tensor]) -> tuple[str, str] | None:
    """Names of (producer, consumer): the last two masked layers in model order, when the
    first feeds the second directly (its outputs are the classifier's inputs); else None."""
    names = list(masks)
    if len(names) < 2:
        return None
    producer, consumer = names[-2], names[-1]
    p, c = masks[producer], masks[consumer]
    if c.dim() != 2 or p.dim() < 2 or p.shape[0] != c.shape[1]:
        return None
    return producer, consumer
