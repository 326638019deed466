"""``edgespike::lif``: leaky integrate-and-fire over T timesteps.

    v[t] = beta * v[t-1] + current[t]
    s[t] = H(v[t] - threshold)
    v[t] = v[t] - s[t] * threshold      (reset="subtract")
    v[t] = v[t] * (1 - s[t])            (reset="zero")

Returns the spikes of every step and the final membrane v[T-1]. Training uses a
fast-sigmoid surrogate for dH/dv, 1 / (1 + k|v - threshold|)^2 (Zenke & Ganguli 2018,
snntorch's ``fast_sigmoid``); the reset path is detached, as snntorch does by default.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

RESETS = ("subtract", "zero")


def heaviside(v_minus_thr: Tensor, slope: float) -> Tensor:
    return (v_minus_thr >= 0).to(v_minus_thr.dtype)


class _SurrogateSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v_minus_thr: Tensor, slope: float) -> Tensor:
        ctx.save_for_backward(v_minus_thr)
        ctx.slope = slope
        return heaviside(v_minus_thr, slope)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (v_minus_thr,) = ctx.saved_tensors
        return grad / (1.0 + ctx.slope * v_minus_thr.abs()) ** 2, None


def lif_reference(
    current: Tensor,
    v0: Tensor,
    beta: float,
    threshold: float,
    reset: str,
    spike_fn: Callable[[Tensor, float], Tensor] = heaviside,
    slope: float = 5.0,
) -> tuple[Tensor, Tensor]:
    """The LIF recurrence in plain torch ops; ``spike_fn`` picks the forward or surrogate spike."""
    if reset not in RESETS:
        raise ValueError(f"lif: reset must be one of {RESETS}, got {reset!r}")
    if current.shape[1:] != v0.shape:
        raise ValueError(f"lif: v0 must have shape current.shape[1:] = {tuple(current.shape[1:])}, got {tuple(v0.shape)}")
    v = v0
    spikes = []
    for t in range(current.shape[0]):
        v = beta * v + current[t]
        s = spike_fn(v - threshold, slope)
        reset_by = s.detach()
        v = v - reset_by * threshold if reset == "subtract" else v * (1.0 - reset_by)
        spikes.append(s)
    return torch.stack(spikes), v


@torch.library.custom_op("edgespike::lif", mutates_args=())
def lif(current: Tensor, v0: Tensor, beta: float, threshold: float, reset: str, slope: float = 5.0) -> tuple[Tensor, Tensor]:
    """current[T, ...], v0[...] -> spikes[T, ...] in {0, 1}, v_T[...]."""
    if current.shape[0] < 1:
        raise ValueError("lif: current needs at least one timestep")
    return lif_reference(current, v0, beta, threshold, reset)


@lif.register_fake
def _(current, v0, beta, threshold, reset, slope=5.0):
    return torch.empty_like(current), torch.empty_like(v0)


def _setup_context(ctx, inputs, output):
    current, v0, beta, threshold, reset, slope = inputs
    ctx.save_for_backward(current, v0)
    ctx.params = (beta, threshold, reset, slope)


def _backward(ctx, grad_spikes, grad_v):
    """Backpropagation through time: recompute the recurrence with the surrogate spike."""
    current, v0 = ctx.saved_tensors
    beta, threshold, reset, slope = ctx.params
    with torch.enable_grad():
        current = current.detach().requires_grad_()
        v0 = v0.detach().requires_grad_()
        spikes, v = lif_reference(current, v0, beta, threshold, reset, _SurrogateSpike.apply, slope)
        grads = torch.autograd.grad(
            (spikes, v),
            (current, v0),
            (_zeros_if_none(grad_spikes, spikes), _zeros_if_none(grad_v, v)),
        )
    return grads[0], grads[1], None, None, None, None


def _zeros_if_none(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


lif.register_autograd(_backward, setup_context=_setup_context)
