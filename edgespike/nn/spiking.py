"""Spiking modules and the layer-major time layout.

Layer-major unrolling (DESIGN.md): a layer runs all T timesteps of a token before the next
layer starts. A sequence of S tokens becomes S*T timesteps, token-major:
``repeat_over_time`` turns [B, S, d] into the current [S*T, B, d] a LIF layer integrates,
and ``mean_over_time`` folds [S*T, B, d] back to [B, S, d] (spike rate, or the mean current
a linear layer made of the spikes). A linear in between sees all S*T*B rows at once, so its
weights are read once per token, not T times.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgespike.config import SpikeConfig
from edgespike.ops import spike_range, spike_weights
from edgespike.quant.activations import quantize_activations


def repeat_over_time(x: Tensor, timesteps: int) -> Tensor:
    """[B, S, d] -> [S*T, B, d], each token's input held for T steps (direct encoding)."""
    batch, seq = x.shape[:2]
    time_major = x.transpose(0, 1).unsqueeze(1)  # [S, 1, B, d]
    return time_major.expand(seq, timesteps, *time_major.shape[2:]).reshape(seq * timesteps, batch, *x.shape[2:])


def mean_over_time(x: Tensor, timesteps: int) -> Tensor:
    """[S*T, B, d] -> [B, S, d], averaging each token's T steps."""
    seq = x.shape[0] // timesteps
    return x.reshape(seq, timesteps, *x.shape[1:]).mean(dim=1).transpose(0, 1)


class LIF(nn.Module):
    """A population of LIF neurons (``edgespike::lif``); forward(current[N, B, d], v0[B, d])
    -> (spikes[N, B, d], v[B, d]) for N timesteps. Spike statistics hooks attach here.

    ``beta``, ``threshold`` and ``graded_spikes_factor`` are tensors (a scalar, or one per
    neuron), named as snntorch names them; ``persistent`` puts them in the state_dict (a model
    whose checkpoint carries them), else they follow the config; ``learn_beta`` makes beta a
    parameter, as snntorch's ``learn_beta=True`` does."""

    def __init__(self, spike: SpikeConfig, persistent: bool = False, learn_beta: bool = False):
        super().__init__()
        self.reset, self.delayed_reset, self.strict = spike.reset, spike.delayed_reset, spike.strict
        self.slope = spike.surrogate_slope
        beta = torch.tensor(float(spike.beta))
        if learn_beta:
            self.beta = nn.Parameter(beta)
        else:
            self.register_buffer("beta", beta, persistent=persistent)
        self.register_buffer("threshold", torch.tensor(float(spike.threshold)), persistent=persistent)
        self.register_buffer("graded_spikes_factor", torch.tensor(1.0), persistent=persistent)

    def extra_repr(self) -> str:
        return f"reset={self.reset}, delayed_reset={self.delayed_reset}, strict={self.strict}"

    def forward(self, current: Tensor, v0: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ops.edgespike.lif(
            current, v0, self.beta, self.threshold, self.graded_spikes_factor,
            self.reset, self.delayed_reset, self.strict, self.slope,
        )


class SpikeEncoder(nn.Module):
    """W8ASpike activation spiking: x[..., d] -> (spikes[T, ..., d], scale[..., 1]) with
    x ~ scale * sum_t w[t] * spikes[t]; ``decode`` applies that sum to a linear's output.

    The per-token absmax quantizer maps x onto the integers the coding can carry in T steps
    (``edgespike.ops.spike_range``); rounding passes gradients straight through."""

    def __init__(self, timesteps: int, coding: str, twos_complement: bool = False):
        super().__init__()
        self.timesteps, self.coding, self.twos_complement = timesteps, coding, twos_complement
        self.low, self.high = spike_range(timesteps, coding, twos_complement)
        self.register_buffer("step_weights", spike_weights(timesteps, coding, twos_complement), persistent=False)

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}, coding={self.coding}, twos_complement={self.twos_complement}"

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        q, scale = quantize_activations(x, self.low, self.high)
        return torch.ops.edgespike.spike_encode(q, self.timesteps, self.coding, self.twos_complement), scale

    def decode(self, y: Tensor, scale: Tensor) -> Tensor:
        """y[T, ..., o] (a linear of the spikes) -> [..., o], weighted by step and rescaled."""
        weights = self.step_weights.to(y.dtype).reshape((-1,) + (1,) * (y.dim() - 1))
        return (weights * y).sum(dim=0) * scale  # a weighted sum, not tensordot: Core ML has no tensordot
