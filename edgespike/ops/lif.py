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

import torch
from torch import Tensor

RESETS = ("subtract", "zero")


def lif_reference(current: Tensor, v0: Tensor, beta: float, threshold: float, reset: str) -> tuple[Tensor, Tensor]:
    """The LIF recurrence in plain torch ops (what every target lowers the op to)."""
    if reset not in RESETS:
        raise ValueError(f"lif: reset must be one of {RESETS}, got {reset!r}")
    if current.shape[1:] != v0.shape:
        raise ValueError(f"lif: v0 must have shape current.shape[1:] = {tuple(current.shape[1:])}, got {tuple(v0.shape)}")
    v = v0
    spikes = []
    for t in range(current.shape[0]):
        v = beta * v + current[t]
        s = (v >= threshold).to(v.dtype)
        v = v - s * threshold if reset == "subtract" else v * (1.0 - s)
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


@torch.no_grad()
def _backward(ctx, grad_spikes, grad_v):
    """Backpropagation through time, by hand (one pass back over T, a few fused ops a step):
    with u[t] = beta * v[t-1] + current[t] and the reset detached,
        dL/du[t] = dL/ds[t] * surrogate(u[t] - thr) + dL/dv[t] * dv[t]/du[t]
        dL/dcurrent[t] = dL/du[t],   dL/dv[t-1] = beta * dL/du[t]
    where dv[t]/du[t] is 1 (subtract) or 1 - s[t] (zero)."""
    current, v0 = ctx.saved_tensors
    beta, threshold, reset, slope = ctx.params
    potentials = []  # u[t], recomputed
    v = v0
    for t in range(current.shape[0]):
        u = beta * v + current[t]
        potentials.append(u)
        s = (u >= threshold).to(u.dtype)
        v = u - s * threshold if reset == "subtract" else u * (1.0 - s)
    grad_current = torch.empty_like(current)
    grad_v = torch.zeros_like(v0) if grad_v is None else grad_v
    for t in range(current.shape[0] - 1, -1, -1):
        u = potentials[t]
        grad_u = grad_v if reset == "subtract" else grad_v * (u < threshold).to(u.dtype)
        if grad_spikes is not None:
            grad_u = grad_u + grad_spikes[t] / (1.0 + slope * (u - threshold).abs()) ** 2
        grad_current[t] = grad_u
        grad_v = beta * grad_u
    return grad_current, grad_v, None, None, None, None


lif.register_autograd(_backward, setup_context=_setup_context)
