"""BitNet b1.58 ternarization: W ~ scale * codes, codes = clamp(round(W / scale), -1, 1).

scale = mean |W| (absmean, Ma et al. 2024, "The Era of 1-bit LLMs"), over the whole
tensor or per output channel (row).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

EPS = 1e-8


def absmean_scale(weight: Tensor, per_channel: bool) -> Tensor:
    """[out] per output channel, else [1]."""
    if per_channel:
        return weight.abs().mean(dim=1).clamp_min(EPS)
    return weight.abs().mean().clamp_min(EPS).reshape(1)


def ternary_codes(weight: Tensor, scale: Tensor) -> Tensor:
    """codes[out, in] in {-1, 0, 1} as int8."""
    return torch.clamp(torch.round(weight / scale[:, None]), -1, 1).to(torch.int8)


def ternarize(model: nn.Module) -> nn.Module:
    """Freeze every TernaryLinear of ``model`` to int8 codes + scale, after replacing plain
    ``nn.Linear`` layers by TernaryLinear. Returns the same model, changed in place."""
    from edgespike.quant.weights import quantize_weights

    return quantize_weights(model, "ternary")


def _replace_linears(module: nn.Module, ternary_cls) -> None:
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            replacement = ternary_cls(child.in_features, child.out_features, bias=child.bias is not None)
            replacement.to(child.weight.device, child.weight.dtype)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            _replace_linears(child, ternary_cls)
