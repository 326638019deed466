"""``edgespike::spike_encode``: integer activations to spike trains (W8ASpike codings).

Every coding comes with step weights w[t] such that sum_t w[t] * spikes[t] == x exactly
for every x in the coding's range (``spike_range``); values outside are clamped.

- binary:  unsigned count, s[t] = 1 for t < x; range [0, T], w[t] = 1.
- ternary: signed count, s[t] = sign(x) for t < |x|; range [-T, T], w[t] = 1.
- bitwise: one bit per step, most significant first, w[t] = 2^(T-1-t); range [0, 2^T - 1],
  or with ``twos_complement`` the first step weighs -2^(T-1); range [-2^(T-1), 2^(T-1) - 1].

The straight-through gradient of the encoder is the decoder: dx = sum_t w[t] * ds[t].
"""

from __future__ import annotations

import torch
from torch import Tensor

CODINGS = ("binary", "ternary", "bitwise")


def _check(timesteps: int, coding: str, twos_complement: bool) -> None:
    if coding not in CODINGS:
        raise ValueError(f"spike_encode: coding must be one of {CODINGS}, got {coding!r}")
    if timesteps < 1:
        raise ValueError(f"spike_encode: timesteps must be >= 1, got {timesteps}")
    if twos_complement and coding != "bitwise":
        raise ValueError(f"spike_encode: twos_complement applies to bitwise coding only, got coding={coding!r}")


def spike_range(timesteps: int, coding: str, twos_complement: bool = False) -> tuple[int, int]:
    """The integers a coding represents exactly in ``timesteps`` steps, as (low, high)."""
    _check(timesteps, coding, twos_complement)
    if coding == "binary":
        return 0, timesteps
    if coding == "ternary":
        return -timesteps, timesteps
    if twos_complement:
        return -(2 ** (timesteps - 1)), 2 ** (timesteps - 1) - 1
    return 0, 2**timesteps - 1


def spike_weights(timesteps: int, coding: str, twos_complement: bool = False) -> Tensor:
    """Step weights w[T]: sum_t w[t] * spikes[t] gives the encoded integer back."""
    _check(timesteps, coding, twos_complement)
    if coding in ("binary", "ternary"):
        return torch.ones(timesteps)
    weights = 2.0 ** torch.arange(timesteps - 1, -1, -1, dtype=torch.float32)
    if twos_complement:
        weights[0] = -weights[0]
    return weights


def encode_reference(x: Tensor, timesteps: int, coding: str, twos_complement: bool) -> Tensor:
    low, high = spike_range(timesteps, coding, twos_complement)
    x = torch.clamp(torch.round(x), low, high)
    steps = torch.arange(timesteps, dtype=x.dtype, device=x.device).reshape((timesteps,) + (1,) * x.dim())
    if coding == "binary":
        return (steps < x).to(x.dtype)
    if coding == "ternary":
        return torch.sign(x) * (steps < x.abs()).to(x.dtype)
    unsigned = torch.remainder(x, 2.0**timesteps)  # two's complement wraps negatives
    place = 2.0 ** (timesteps - 1 - steps)
    return torch.remainder(torch.floor(unsigned / place), 2.0)


@torch.library.custom_op("edgespike::spike_encode", mutates_args=())
def spike_encode(x: Tensor, timesteps: int, coding: str, twos_complement: bool = False) -> Tensor:
    """x[...] (integer-valued float) -> spikes[T, ...] in {0, 1} ({-1, 0, 1} for ternary)."""
    return encode_reference(x, timesteps, coding, twos_complement)


@spike_encode.register_fake
def _(x, timesteps, coding, twos_complement=False):
    _check(timesteps, coding, twos_complement)
    return x.new_empty((timesteps,) + tuple(x.shape))


def _setup_context(ctx, inputs, output):
    _, timesteps, coding, twos_complement = inputs
    ctx.params = (timesteps, coding, twos_complement)


def _backward(ctx, grad_spikes):
    weights = spike_weights(*ctx.params).to(grad_spikes)
    return torch.tensordot(weights, grad_spikes, dims=1), None, None, None


spike_encode.register_autograd(_backward, setup_context=_setup_context)
