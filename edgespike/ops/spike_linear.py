"""``edgespike::spike_linear``: spikes times ternary weight codes, times a scale.

    y[..., o] = scale[o] * sum_i codes[o, i] * spikes[..., i]

With codes in {-1, 0, +1} and spikes in {0, 1} (or {-1, 0, 1}) every product is a
signed add: a neuromorphic core accumulates, it never multiplies. ``scale`` holds one
value per output channel, or a single value for the whole tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check(spikes: Tensor, codes: Tensor, scale: Tensor) -> None:
    if codes.dim() != 2 or spikes.shape[-1] != codes.shape[1]:
        raise ValueError(
            f"spike_linear: codes must be [out, in] with in = spikes.shape[-1] = {spikes.shape[-1]}, got {tuple(codes.shape)}"
        )
    if scale.dim() != 1 or scale.shape[0] not in (1, codes.shape[0]):
        raise ValueError(f"spike_linear: scale must be [1] or [out={codes.shape[0]}], got {tuple(scale.shape)}")


@torch.library.custom_op("edgespike::spike_linear", mutates_args=())
def spike_linear(spikes: Tensor, codes: Tensor, scale: Tensor) -> Tensor:
    """spikes[..., in], codes[out, in] (int8 in {-1, 0, 1}), scale[out] or [1] -> [..., out]."""
    _check(spikes, codes, scale)
    return torch.nn.functional.linear(spikes, codes.to(spikes.dtype)) * scale.to(spikes.dtype)


@spike_linear.register_fake
def _(spikes, codes, scale):
    _check(spikes, codes, scale)
    return spikes.new_empty(tuple(spikes.shape[:-1]) + (codes.shape[0],))
