"""``edgespike::lif``: leaky integrate-and-fire over T timesteps, its law given as data.

Immediate reset (edgespike's own law, ``delayed_reset=False``):
    u[t] = beta * v[t-1] + current[t];   s[t] = H(u[t] - threshold)
    v[t] = u[t] - s[t] * threshold  (reset="subtract")  |  u[t] * (1 - s[t])  ("zero")  |  u[t]  ("none")

Delayed reset (snntorch's Leaky, ``reset_delay=True``, its default): the reset a spike causes
lands one step later, computed from the previous membrane r[t] = H(v[t-1] - threshold):
    v[t] = clamp(beta) * v[t-1] + current[t] - r[t] * threshold           ("subtract")
    v[t] = clamp(beta) * (1 - r[t]) * v[t-1] + current[t]                 ("zero")
    v[t] = clamp(beta) * v[t-1] + current[t]                               ("none")
    s[t] = H(v[t] - threshold)
(snntorch clamps beta to [0, 1]; so does this op, in both laws.)

H is ``>`` when ``strict`` (snntorch) and ``>=`` otherwise. Spikes are ``graded`` * H: 1 for
binary spikes, snntorch's ``graded_spikes_factor`` otherwise. ``beta``, ``threshold`` and
``graded`` are tensors broadcastable to one timestep (a scalar per layer, or one per neuron).
Returns the spikes of every step and the final membrane v[T-1].

Training uses a fast-sigmoid surrogate for dH/dv, 1 / (1 + k|u - threshold|)^2 (Zenke &
Ganguli 2018, snntorch's ``fast_sigmoid``) with the reset path detached, as snntorch does;
gradients flow to the current and the initial membrane (beta, threshold and graded are
constants to edgespike's training).
"""

from __future__ import annotations

import torch
from torch import Tensor

RESETS = ("subtract", "zero", "none")


def _fired(u: Tensor, threshold: Tensor, strict: bool) -> Tensor:
    return (u > threshold if strict else u >= threshold).to(u.dtype)


def _lif_step(v, s, current_t, beta, threshold, reset, delayed_reset, strict, forced_t=None):
    """One step: (potential the spike is read from, H of it, membrane after the step) from the membrane
    ``v`` and the previous step's H ``s`` (delayed reset; None at the first step: H(v0))."""
    if delayed_reset:
        carried = _fired(v, threshold, strict) if s is None else s  # r[t], the spike of the previous step
        if reset == "subtract":
            v = beta * v + current_t - carried * threshold
        elif reset == "zero":
            v = beta * (v * (1.0 - carried)) + current_t
        else:
            v = beta * v + current_t
        u = v
        s = _fired(u, threshold, strict) if forced_t is None else forced_t
    else:
        u = beta * v + current_t
        s = _fired(u, threshold, strict) if forced_t is None else forced_t
        v = u - s * threshold if reset == "subtract" else u * (1.0 - s) if reset == "zero" else u
    return u, s, v


def _lif_steps(current, v0, beta, threshold, reset, delayed_reset, strict, forced=None):
    """Yield (potential the spike is read from, H of it, membrane after the step) for every t;
    ``forced`` [T, ...] (0 / 1) replaces H by given spikes (``lif_following``)."""
    beta = beta.to(current.dtype).clamp(0.0, 1.0)
    threshold = threshold.to(current.dtype)
    v, s = v0, None
    for t in range(current.shape[0]):
        u, s, v = _lif_step(v, s, current[t], beta, threshold, reset, delayed_reset, strict, None if forced is None else forced[t])
        yield u, s, v


def lif_scan(current, v0, beta, threshold, graded, reset, delayed_reset=False, strict=False) -> tuple[Tensor, Tensor]:
    """``lif_reference`` as one ``torch.scan`` over the steps, the same step op for op: a loop in the
    exported graph instead of T copies of the step (long prefill steps: S tokens x T timesteps)."""
    from torch._higher_order_ops.scan import scan

    check_lif_args(current, v0, reset)
    beta = beta.to(current.dtype).clamp(0.0, 1.0)
    threshold = threshold.to(current.dtype)

    def combine(carry, current_t):
        v, s = carry
        _, s, v = _lif_step(v, s, current_t, beta, threshold, reset, delayed_reset, strict)
        return (v, s), s.clone()

    (v, _), fired = scan(combine, (v0, _fired(v0, threshold, strict)), current)
    return fired * graded.to(current.dtype), v


def check_lif_args(current: Tensor, v0: Tensor, reset: str) -> None:
    if reset not in RESETS:
        raise ValueError(f"lif: reset must be one of {RESETS}, got {reset!r}")
    if current.shape[0] < 1:
        raise ValueError("lif: current needs at least one timestep")
    if current.shape[1:] != v0.shape:
        raise ValueError(f"lif: v0 must have shape current.shape[1:] = {tuple(current.shape[1:])}, got {tuple(v0.shape)}")


def lif_reference(
    current: Tensor,
    v0: Tensor,
    beta: Tensor,
    threshold: Tensor,
    graded: Tensor,
    reset: str,
    delayed_reset: bool = False,
    strict: bool = False,
) -> tuple[Tensor, Tensor]:
    """The LIF recurrence in plain torch ops (what every target lowers the op to)."""
    check_lif_args(current, v0, reset)
    spikes, v = [], v0
    for _, s, v in _lif_steps(current, v0, beta, threshold, reset, delayed_reset, strict):
        spikes.append(s)
    return torch.stack(spikes) * graded.to(current.dtype), v


def lif_following(current, v0, beta, threshold, graded, reset, delayed_reset, strict, spikes):
    """The LIF recurrence driven by given ``spikes`` [T, ...] (another runtime's, 0 or ``graded``)
    instead of its own thresholds: (those spikes, v_T, the potentials [T, ...] they were read
    from). Where H(potential) differs from a given spike, the two runtimes disagreed at that
    neuron; how far the potential lies from the threshold says whether by a rounding tie."""
    check_lif_args(current, v0, reset)
    forced = (spikes != 0).to(current.dtype)
    potentials, v = [], v0
    for u, _, v in _lif_steps(current, v0, beta, threshold, reset, delayed_reset, strict, forced):
        potentials.append(u)
    return forced * graded.to(current.dtype), v, torch.stack(potentials)


@torch.library.custom_op("edgespike::lif", mutates_args=())
def lif(
    current: Tensor,
    v0: Tensor,
    beta: Tensor,
    threshold: Tensor,
    graded: Tensor,
    reset: str,
    delayed_reset: bool = False,
    strict: bool = False,
    slope: float = 5.0,
) -> tuple[Tensor, Tensor]:
    """current[T, ...], v0[...] -> spikes[T, ...] in {0, graded}, v_T[...]."""
    return lif_reference(current, v0, beta, threshold, graded, reset, delayed_reset, strict)


@lif.register_fake
def _(current, v0, beta, threshold, graded, reset, delayed_reset=False, strict=False, slope=5.0):
    return torch.empty_like(current), torch.empty_like(v0)


def _setup_context(ctx, inputs, output):
    current, v0, beta, threshold, graded, reset, delayed_reset, strict, slope = inputs
    ctx.save_for_backward(current, v0, beta, threshold, graded)
    ctx.params = (reset, delayed_reset, strict, slope)


@torch.no_grad()
def _backward(ctx, grad_spikes, grad_v):
    """Backpropagation through time, by hand (one pass back over T), the reset detached.
    With a[t] the potential spike t is read from (u[t] immediate, v[t] delayed):
        dL/da[t] = graded * dL/ds[t] * surrogate(a[t] - thr) + dL/dv[t] * dv[t]/da[t]
    immediate: dL/dcurrent[t] = dL/du[t], dL/dv[t-1] = beta * dL/du[t], dv[t]/du[t] = 1, or 1 - s[t] ("zero");
    delayed:   dL/dcurrent[t] = dL/dv[t], dL/dv[t-1] = beta * (1 - r[t] if "zero" else 1) * dL/dv[t]."""
    current, v0, beta, threshold, graded = ctx.saved_tensors
    reset, delayed_reset, strict, slope = ctx.params
    steps = list(_lif_steps(current, v0, beta, threshold, reset, delayed_reset, strict))
    beta = beta.to(current.dtype).clamp(0.0, 1.0)
    threshold, graded = threshold.to(current.dtype), graded.to(current.dtype)
    grad_current = torch.empty_like(current)
    grad_v = torch.zeros_like(v0) if grad_v is None else grad_v
    for t in range(current.shape[0] - 1, -1, -1):
        u, s, _ = steps[t]
        grad_a = grad_v if delayed_reset or reset != "zero" else grad_v * (1.0 - s)
        if grad_spikes is not None:
            grad_a = grad_a + graded * grad_spikes[t] / (1.0 + slope * (u - threshold).abs()) ** 2
        grad_current[t] = grad_a
        if delayed_reset and reset == "zero":
            previous = steps[t - 1][2] if t else v0
            grad_v = beta * (1.0 - _fired(previous, threshold, strict)) * grad_a
        else:
            grad_v = beta * grad_a
    return grad_current, grad_v, None, None, None, None, None, None, None


lif.register_autograd(_backward, setup_context=_setup_context)
