"""Weight formats of an exported decode step: the user's choice, its cost measured.

    ternary  BitNet b1.58: codes in {-1, 0, 1} x one absmean scale (``edgespike.quant.ternary``)
    int8     symmetric per output channel: codes in [-127, 127] x max|W_row| / 127
    int4     symmetric per output channel: codes in [-7, 7] x max|W_row| / 7
    fp16     the weights rounded to half precision, kept as float linears
    fp32     the weights as they are

Integer formats freeze every linear to int8 ``codes`` + ``scale`` (the ``edgespike::spike_linear``
op, whose meaning is "integer codes times a per-channel scale": additions only when its input is
spikes, multiply-accumulates otherwise). Quantizing a model not trained for the format changes
it: ``edgespike quantize-report`` measures by how much.
"""

from __future__ import annotations

import torch
from torch import nn

from edgespike.errors import EdgespikeError
from edgespike.nn.ternary_linear import TernaryLinear
from edgespike.quant.ternary import _replace_linears

INTEGER_LEVELS = {"int8": 127, "int4": 7}
WEIGHT_BITS = {"ternary": 2, "int8": 8, "int4": 4, "fp16": 16, "fp32": 32}  # a linear's weight, as stored
WEIGHT_FORMATS = tuple(WEIGHT_BITS)


def check_format(weights: str) -> str:
    if weights not in WEIGHT_FORMATS:
        raise EdgespikeError(f"unknown weight format {weights!r}; choose one of {', '.join(WEIGHT_FORMATS)}")
    return weights


def default_format(config) -> str:
    """Ternary for models trained ternary; fp16 for dense ones (post-training ternarization destroys them)."""
    return "ternary" if config.weights == "ternary" else "fp16"


@torch.no_grad()
def quantize_weights(model: nn.Module, weights: str) -> nn.Module:
    """``model``'s linears (TernaryLinear and nn.Linear) in format ``weights``, changed in place."""
    check_format(weights)
    _replace_linears(model, TernaryLinear)
    for module in model.modules():
        if isinstance(module, TernaryLinear):
            quantize_linear(module, weights)
    return model


@torch.no_grad()
def quantize_linear(linear: nn.Module, weights: str) -> nn.Module:
    """One linear in format ``weights``: a TernaryLinear changed in place, an nn.Linear replaced by one."""
    if type(linear) is nn.Linear:
        with torch.device("meta"):  # its own weight is never allocated: it takes the linear's
            replacement = TernaryLinear(linear.in_features, linear.out_features, bias=linear.bias is not None, mode="float")
        replacement.weight, replacement.bias = linear.weight, linear.bias
        linear = replacement
    if weights == "ternary":
        linear.freeze()
        return linear
    linear.set_mode("float")
    if weights in INTEGER_LEVELS:
        levels = INTEGER_LEVELS[weights]
        scale = linear.weight.abs().amax(dim=1).clamp_min(1e-8) / levels
        linear.freeze_to(torch.clamp(torch.round(linear.weight / scale[:, None]), -levels, levels).to(torch.int8), scale)
    elif weights == "fp16":  # held in fp16 (half the memory of a streamed model), cast in forward
        linear.weight = nn.Parameter(linear.weight.detach().half(), requires_grad=False)
    return linear
