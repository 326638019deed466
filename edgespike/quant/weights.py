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
from edgespike.quant.ternary import _replace_linears, ternarize

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
    from edgespike.nn.ternary_linear import TernaryLinear

    if check_format(weights) == "ternary":
        return ternarize(model)
    _replace_linears(model, TernaryLinear)
    for module in model.modules():
        if not isinstance(module, TernaryLinear):
            continue
        module.set_mode("float")
        if weights in INTEGER_LEVELS:
            levels = INTEGER_LEVELS[weights]
            scale = module.weight.abs().amax(dim=1).clamp_min(1e-8) / levels
            module.freeze_to(torch.clamp(torch.round(module.weight / scale[:, None]), -levels, levels).to(torch.int8), scale)
        elif weights == "fp16":
            module.weight.copy_(module.weight.half().float())
    return model
