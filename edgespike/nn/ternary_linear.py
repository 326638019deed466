"""TernaryLinear: a linear layer whose weights are BitNet b1.58 ternary.

    y = scale * (x @ codes^T) + bias,   codes = clamp(round(W / scale), -1, 1),  scale = mean|W|

Modes:
- "float":  y = x @ W^T + bias (ordinary training, no quantization);
- "qat":    quantization-aware training; the forward uses scale * codes, the backward passes
            the gradient straight through to the latent float W (STE, Bengio et al. 2013);
- "frozen": W is gone; int8 ``codes`` and ``scale`` buffers remain (ternary, or the wider
            integer grids of ``edgespike.quant.weights``) and the layer runs
            ``edgespike::spike_linear``, so the graph keeps the ternary meaning (fed by spikes, a
            layer is additions only; a backend tells by the op that produced its input).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from edgespike.quant.ternary import absmean_scale, ternary_codes

MODES = ("float", "qat", "frozen")


class TernaryLinear(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        per_channel: bool = False,
        mode: str = "qat",
    ):
        super().__init__()
        if mode not in ("float", "qat"):
            raise ValueError(f"TernaryLinear: mode must be 'float' or 'qat' at construction, got {mode!r}")
        self.in_features, self.out_features = in_features, out_features
        self.per_channel = per_channel
        self.mode = mode
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(in_features))

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, mode={self.mode}"

    def set_mode(self, mode: str) -> None:
        if self.mode == "frozen" or mode not in ("float", "qat"):
            raise ValueError(f"TernaryLinear: cannot switch from {self.mode!r} to {mode!r}")
        self.mode = mode

    def ste_codes(self) -> tuple[Tensor, Tensor]:
        """(codes, scale) with codes carrying the straight-through gradient to the latent weight:
        linear(x, codes) * scale is then the frozen layer's arithmetic exactly, and its gradient
        with respect to W is that of linear(x, W)."""
        scale = absmean_scale(self.weight, self.per_channel).detach()
        codes = ternary_codes(self.weight, scale).to(self.weight.dtype)
        return codes + (self.weight - self.weight.detach()) / scale[:, None], scale

    @torch.no_grad()
    def freeze(self) -> None:
        """Replace the latent float weight by int8 codes [out, in] and scale [out] or [1]."""
        if self.mode == "frozen":
            return
        scale = absmean_scale(self.weight, self.per_channel)
        self.freeze_to(ternary_codes(self.weight, scale), scale.clone())

    @torch.no_grad()
    def freeze_to(self, codes: Tensor, scale: Tensor) -> None:
        """Replace the float weight by integer ``codes`` [out, in] (int8) x ``scale`` [out] or [1]."""
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale.to(self.weight.dtype))
        del self.weight
        self.mode = "frozen"

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "float":
            y = nn.functional.linear(x, self.weight.to(x.dtype))  # an fp16-format weight is held in fp16
        elif self.mode == "qat":
            codes, scale = self.ste_codes()
            y = nn.functional.linear(x, codes) * scale
        else:
            y = torch.ops.edgespike.spike_linear(x, self.codes, self.scale)
        return y if self.bias is None else y + self.bias
