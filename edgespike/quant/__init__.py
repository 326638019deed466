"""Ternary weights (BitNet b1.58 absmean), lossless 2-bit packing, activation quantization."""

from edgespike.quant.activations import quantize_activations, round_ste
from edgespike.quant.packing import pack_ternary, unpack_ternary
from edgespike.quant.ternary import absmean_scale, ternarize, ternary_codes

__all__ = [
    "absmean_scale",
    "pack_ternary",
    "quantize_activations",
    "round_ste",
    "ternarize",
    "ternary_codes",
    "unpack_ternary",
]
